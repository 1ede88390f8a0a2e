"""Linear inverse problems solved with a denoiser's prior, beside the simple linear baselines.

Kadkhodaie & Simoncelli (2021) restore an image from measurements m = M x by sampling the
denoiser's prior under the constraint (:func:`gahb.sampling.sample` with an ``operator``). To say
what the prior adds, the same measurements are also filled in without one:

* **mean fill**: M^T m + (I - M^T M) c 1, the measured part kept and the rest a constant image,
  c = <M 1, m> / ||M 1||^2 being the constant that best explains the measurements (the mean of the
  kept pixels for pixel masks);
* **pseudo-inverse**: M^+ m = M^T m, the minimum-norm image consistent with m (rows of M are
  orthonormal); unmeasured pixels are 0;
* **pixel replication** (super-resolution): each block's mean repeated over the block, which is
  what M^T m is for block averaging (so it equals the pseudo-inverse and the mean fill there), and
  **bicubic** interpolation of the block means, the usual stronger baseline (not consistent with m).

:func:`restore_images` runs the prior and the baselines on a batch of images for one task and
reports PSNR per method (mean and standard error over images; failed samples excluded and counted).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from gahb.analysis.metrics import psnr

from .config import SamplerConfig, get_config
from .operators import MeasurementOperator, SuperResolution, make_operator
from .sampler import sample


def best_constant(op: MeasurementOperator, m: torch.Tensor) -> torch.Tensor:
    """Per row of ``m``, the c minimising ||M (c 1) - m||: c = <M 1, m> / ||M 1||^2 (shape (B,))."""
    ones = torch.ones((1, *op.image_shape), dtype=m.dtype, device=m.device)
    m1 = op.forward(ones)[0]
    return (m @ m1) / (m1 @ m1).clamp_min(1e-30)


def baselines(op: MeasurementOperator, m: torch.Tensor) -> dict[str, torch.Tensor]:
    """The linear reconstructions of measurements ``m`` (B, num_measurements) named above."""
    c = best_constant(op, m).view(-1, 1, 1, 1)
    out = {"mean fill": op.adjoint(m) + op.complement(c * torch.ones((m.shape[0], *op.image_shape),
                                                                       dtype=m.dtype, device=m.device)),
           "pseudo-inverse": op.pseudo_inverse(m)}
    if isinstance(op, SuperResolution):
        low = op.low_resolution(m)
        out["pixel replication"] = low.repeat_interleave(op.factor, 2).repeat_interleave(op.factor, 3)
        out["bicubic"] = F.interpolate(low, scale_factor=op.factor, mode="bicubic", align_corners=False)
    return out


def _stats(values: torch.Tensor) -> dict:
    v = values.double()
    se = float(v.std(unbiased=True) / math.sqrt(v.numel())) if v.numel() > 1 else 0.0
    return {"mean": float(v.mean()), "se": se, "n": int(v.numel())}


def restore_images(denoiser, images: torch.Tensor, task: str, *, config: SamplerConfig | str | None = "paper",
                   seeds=None, op_seed: int = 0, fraction: float | None = None, factor: int | None = None,
                   device: str | torch.device | None = None, progress: bool = True, batch_size: int | None = None,
                   **operator_kw) -> dict:
    """Restore ``images`` (N, C, H, W) on [0, 1] from ``task`` measurements with the prior and the baselines.

    One operator (drawn from ``op_seed``) measures every image; image i is restored with sampler
    seed ``seeds[i]`` (default i). PSNR (data range 1) of every method against the clean image,
    unclamped; samples that did not converge are left out of the prior's PSNR and counted.
    Returns ``{"task", "operator", "psnr": {method: {"mean", "se", "n"}}, "gain_over_baselines":
    {baseline: paired PSNR(prior) - PSNR(baseline) {"mean", "se", "n"}}, "per_image": {method: [...]},
    "restored", "baselines", "status", "evaluations", "num_failed", "seconds"}`` (tensors on the CPU).
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    cfg = get_config(config) if not isinstance(config, SamplerConfig) else config
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    x = images.detach().to("cpu", dtype)
    n, shape = x.shape[0], tuple(x.shape[1:])
    seeds = list(range(n)) if seeds is None else [int(s) for s in seeds]
    op = make_operator(task, shape, fraction=fraction, factor=factor, seed=op_seed, **operator_kw)
    m = op(x)
    t0 = time.perf_counter()
    res = sample(denoiser, shape, seeds, cfg, operator=op, measurement=m, progress=progress, device=device,
                 batch_size=batch_size)
    seconds = time.perf_counter() - t0
    restored = res.samples.detach().cpu().to(dtype)
    ok = res.converged
    per_image = {"prior": psnr(restored, x, reduce=False)}
    fills = baselines(op, m)
    per_image.update({k: psnr(v, x, reduce=False) for k, v in fills.items()})
    table = {k: _stats(v[ok] if k == "prior" else v) for k, v in per_image.items()}
    # Paired: the prior's gain over each baseline on the same (converged) images, free of the
    # image-to-image spread that both share.
    gain = {k: _stats((per_image["prior"] - v)[ok]) for k, v in per_image.items() if k != "prior"}
    if not ok.any():
        table["prior"] = {"mean": None, "se": None, "n": 0}
        gain = {k: {"mean": None, "se": None, "n": 0} for k in gain}
    return {"task": task, "operator": op.to_dict(), "fraction_measured": op.num_measurements / op.dim,
            "psnr": table, "gain_over_baselines": gain, "per_image": {k: [float(a) for a in v] for k, v in per_image.items()},
            "restored": restored, "baselines": {k: v.cpu() for k, v in fills.items()}, "status": res.status,
            "evaluations": [int(e) for e in res.evaluations], "num_failed": len(res.failed),
            "max_measurement_error": float((op(restored) - m).abs().max()), "seconds": seconds,
            "evaluations_mean": float(np.mean([int(e) for e in res.evaluations]))}
