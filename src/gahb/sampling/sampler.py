"""Stochastic coarse-to-fine gradient ascent with a blind denoiser (paper App. A.2, Algorithm 1).

Kadkhodaie & Simoncelli's sampler climbs the log-density implicit in a blind denoiser f. The
residual s = f(x) - x is proportional to sigma^2 times the score of the noisy density (Miyasawa /
Tweedie), and its size estimates the effective noise of the iterate, so the denoiser sets its own
schedule:

    s_t       = f(x_{t-1}) - x_{t-1}
    sigma_t^2 = ||s_t||^2 / d
    gamma_t^2 = ((1 - beta h_t)^2 - (1 - h_t)^2) sigma_t^2
    x_t       = x_{t-1} + h_t s_t + gamma_t z_t,        z_t ~ N(0, I)

until sigma_t < sigma_final; the result is one last denoising step of the final iterate.

For a linear inverse problem with measurements m = M x (M M^T = I), the same prior fills in
what was not measured (Kadkhodaie & Simoncelli 2021, their Algorithm 2): the step direction is

    d_t = (I - M^T M) s_t + M^T (m - M x_{t-1}),

which follows the prior in the unmeasured subspace and pulls the measured part onto m, and
sigma_t^2 = ||d_t||^2 / d. As in the official code, x_0 = M^T m + (I - M^T M) mean + sigma_0 z_0
and z_t are full-dimensional, so the network sees spatially uniform noise as in training (the pull
term removes it from the measured part). ``config.inverse_noise = "unmeasured"`` instead confines
all noise to the unmeasured subspace (the iterate then satisfies M x = m exactly throughout, and
sigma_t^2 = ||d_t||^2 / (d - m)); see :class:`~gahb.sampling.config.SamplerConfig`. With
``config.reproject`` (default) the final denoised image gets its measured part replaced by m.

Reproducibility. Every sample owns a random stream (a CPU ``torch.Generator`` seeded with its
seed) from which it draws, in this order, its initial noise z_0 and then z_1, z_2, ... one per
step, as float32 standard normals. Hence

* sample k with seed s starts from the same x_0 and receives the same z_t whether it is drawn
  alone, inside any batch, on any device or in either precision;
* two denoisers sampled with the same seeds see the same initial image and the same injected
  noise at each step: differences in their samples come from the denoisers alone (the paired
  comparison of the paper's Fig 2; spec 5.2, 6.2).

Samples that stop are removed from the batch (no further evaluations), so the number of denoiser
evaluations is counted per sample.

Differences from the official loop (spec 5.2): it applies the update once more with the sigma_t
that fell below the threshold and then denoises the result; gahb returns the denoised image of the
iterate whose sigma_t first fell below the threshold (one evaluation fewer, same noise level up to
a factor 1 - beta h_t).
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import torch
from torch import nn

from gahb.models.base import require_eval_mode

from .config import SamplerConfig, get_config
from .operators import MeasurementOperator
from .results import CONVERGED, DIVERGED, MAX_STEPS, SampleResult, SamplingError

__all__ = ["CONVERGED", "DIVERGED", "MAX_STEPS", "NoiseStreams", "SampleResult", "SamplingError",
           "TrajectoryRecorder", "sample"]


class NoiseStreams:
    """One random stream per sample: a CPU generator seeded with the sample's seed.

    ``draw(rows)`` returns one float32 standard-normal image per requested row, each from that
    row's own generator, so what a sample receives depends only on its seed and on how many draws
    it made before, never on the other samples.
    """

    def __init__(self, seeds: Sequence[int], shape: tuple[int, ...]):
        self.shape = tuple(shape)
        self.generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]

    def draw(self, rows: Sequence[int]) -> torch.Tensor:
        out = torch.empty((len(rows), *self.shape), dtype=torch.float32)
        for j, r in enumerate(rows):
            torch.randn(self.shape, generator=self.generators[r], dtype=torch.float32, out=out[j])
        return out


class TrajectoryRecorder:
    """A ``callback`` for :func:`sample` that keeps every ``every``-th step of chosen samples on the CPU.

    After sampling, ``recorder[i]`` is a dict with ``steps`` (T,), ``sigma`` (T,), ``x`` and
    ``denoised`` (T, C, H, W) for sample i: the iterate and its one-shot denoising, as shown in
    the paper's Fig 8. The first and last evaluations of each sample are always kept.
    """

    def __init__(self, every: int = 1, indices: Sequence[int] | None = None, keep_x: bool = True):
        self.every = max(1, int(every))
        self.indices = None if indices is None else set(int(i) for i in indices)
        self.keep_x = keep_x
        self._store: dict[int, dict[str, list]] = {}

    def __call__(self, info: dict) -> None:
        last = info["finished"]
        for j, i in enumerate(info["index"].tolist()):
            if self.indices is not None and i not in self.indices:
                continue
            if not (info["step"] == 1 or info["step"] % self.every == 0 or bool(last[j])):
                continue
            rec = self._store.setdefault(i, {"steps": [], "sigma": [], "x": [], "denoised": []})
            rec["steps"].append(info["step"])
            rec["sigma"].append(float(info["sigma"][j]))
            rec["denoised"].append(info["denoised"][j].detach().cpu().clone())
            if self.keep_x:
                rec["x"].append(info["x"][j].detach().cpu().clone())

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rec = self._store[i]
        out = {"steps": torch.tensor(rec["steps"]), "sigma": torch.tensor(rec["sigma"], dtype=torch.float64),
               "denoised": torch.stack(rec["denoised"])}
        if self.keep_x:
            out["x"] = torch.stack(rec["x"])
        return out

    def __contains__(self, i: int) -> bool:
        return i in self._store

    def __len__(self) -> int:
        return len(self._store)


def _resolve_seeds(seeds: int | Sequence[int], n: int | None) -> list[int]:
    if isinstance(seeds, int):
        if n is None:
            raise ValueError("with a single integer seed, give the number of samples in the shape (N, C, H, W)")
        return list(range(seeds, seeds + n))
    seeds = [int(s) for s in seeds]
    if n is not None and len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for {n} samples")
    if not seeds:
        raise ValueError("no seeds given: nothing to sample")
    return seeds


def _default_device(denoiser: nn.Module) -> torch.device:
    for t in list(denoiser.parameters()) + list(denoiser.buffers()):
        return t.device
    return torch.device("cpu")


def sample(
    denoiser: Callable[[torch.Tensor], torch.Tensor],
    shape_or_x_init: Sequence[int] | torch.Tensor,
    seeds: int | Sequence[int],
    config: SamplerConfig | str | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = True,
    operator: MeasurementOperator | None = None,
    measurement: torch.Tensor | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    raise_on_failure: bool = False,
) -> SampleResult:
    """Draw samples from the prior implicit in a blind denoiser (Algorithm 1 of the paper).

    Args:
        denoiser: a blind denoiser (gahb contract: (B, C, H, W) noisy batch on the [0, 1] scale ->
            clean estimate), in eval mode. It must treat batch rows independently.
        shape_or_x_init: (C, H, W) or (N, C, H, W) image shape, or an (N, C, H, W) tensor of
            initial images (used as x_0 as given; each stream still consumes its z_0 draw, so
            the z_t that follow are unchanged).
        seeds: one integer per sample, or a single integer s meaning s, s+1, ..., s+N-1.
        config: a :class:`SamplerConfig` or a preset name (default ``"paper"``).
        callback: called after every denoiser evaluation with a dict holding, for the samples
            still active: ``x`` (the iterates x_{t-1} that were denoised), ``denoised`` (f(x_{t-1})),
            ``sigma`` (sigma_t), ``index`` (their positions in the output), ``step`` (t, counting
            evaluations from 1), ``h`` (h_t), ``noise`` (the standard normals z_t drawn for this
            step, before scaling and projection; None when beta = 1) and ``finished`` (bool mask
            of the samples that stop at this evaluation; their ``denoised`` is their output).
        progress: show a tqdm bar over steps.
        operator: a :class:`~gahb.sampling.operators.MeasurementOperator` to solve the linear
            inverse problem ``operator(x) = measurement`` with the denoiser's prior.
        measurement: (N, m) measurements, one row per sample (required with ``operator``).
        batch_size: at most this many samples advance together (default: all). Results do not
            depend on it beyond the denoiser's own batch-size rounding.
        device: where to run; default the denoiser's device.
        raise_on_failure: raise :class:`SamplingError` (carrying the full result) if any sample
            diverges or hits ``max_steps``; otherwise a warning is issued and the failures are
            flagged in ``result.status``.

    Returns:
        A :class:`SampleResult`.
    """
    cfg = get_config(config) if not isinstance(config, SamplerConfig) else config
    require_eval_mode(denoiser, "sampling")
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    if device is None:
        device = _default_device(denoiser) if isinstance(denoiser, nn.Module) else torch.device("cpu")
    device = torch.device(device)

    x_init = None
    if isinstance(shape_or_x_init, torch.Tensor):
        if shape_or_x_init.ndim != 4:
            raise ValueError(f"initial images must be (N, C, H, W), got shape {tuple(shape_or_x_init.shape)}")
        x_init = shape_or_x_init
        n, image_shape = x_init.shape[0], tuple(x_init.shape[1:])
    else:
        shape = tuple(int(s) for s in shape_or_x_init)
        if len(shape) == 4:
            n, image_shape = shape[0], shape[1:]
        elif len(shape) == 3:
            n, image_shape = None, shape
        else:
            raise ValueError(f"shape must be (C, H, W) or (N, C, H, W), got {shape}")
    seeds = _resolve_seeds(seeds, n)
    n = len(seeds)

    if (operator is None) != (measurement is None):
        raise ValueError("give both operator and measurement for an inverse problem, or neither")
    if operator is not None:
        if tuple(operator.image_shape) != tuple(image_shape):
            raise ValueError(f"operator acts on images {operator.image_shape}, but samples are {image_shape}")
        if measurement.ndim == 1:
            measurement = measurement.unsqueeze(0)
        if measurement.shape[0] == 1 and n > 1:
            measurement = measurement.expand(n, -1)
        if tuple(measurement.shape) != (n, operator.num_measurements):
            raise ValueError(f"measurement must be ({n}, {operator.num_measurements}), got {tuple(measurement.shape)}")
        measurement = measurement.to(device=device, dtype=dtype)

    streams = NoiseStreams(seeds, image_shape)
    out = torch.empty((n, *image_shape), dtype=dtype, device=device)
    last = torch.empty_like(out)
    steps = torch.zeros(n, dtype=torch.long)
    sigma_out = torch.full((n,), float("nan"), dtype=torch.float64)
    status = [""] * n

    chunk = n if batch_size is None else max(1, int(batch_size))
    with torch.inference_mode():
        for lo in range(0, n, chunk):
            rows = torch.arange(lo, min(n, lo + chunk))
            _run_chunk(denoiser, cfg, rows, streams, image_shape, dtype, device, x_init, operator,
                       measurement, callback, progress, out, last, steps, sigma_out, status)

    # Tensors made under inference_mode cannot enter autograd later (e.g. a Jacobian at a sample).
    result = SampleResult(samples=out.clone(), last_iterate=last.clone(), steps=steps.clone(),
                          evaluations=steps + 1, sigma=sigma_out.clone(), status=status, seeds=seeds,
                          config=cfg, operator=operator)
    if result.failed:
        if raise_on_failure:
            raise SamplingError(result.failure_message(), result)
        warnings.warn(result.failure_message(), RuntimeWarning, stacklevel=2)
    return result


def _run_chunk(denoiser, cfg: SamplerConfig, rows: torch.Tensor, streams: NoiseStreams, image_shape, dtype,
               device, x_init, operator, measurement, callback, progress, out, last, steps, sigma_out,
               status) -> None:
    """Advance the samples ``rows`` until each has converged, diverged or run out of steps."""
    from tqdm.auto import tqdm

    d = math.prod(image_shape)
    full_noise = operator is not None and cfg.inverse_noise == "full"
    dof = d - (operator.num_measurements if operator is not None and not full_noise else 0)
    view = (-1,) + (1,) * len(image_shape)

    z0 = streams.draw(rows.tolist()).to(device=device, dtype=dtype)
    if x_init is not None:
        x = x_init[rows].to(device=device, dtype=dtype)
    else:
        x = z0 * cfg.sigma_0 + cfg.init_mean
        if full_noise:
            x = operator.complement(torch.full_like(x, cfg.init_mean)) + operator.adjoint(measurement[rows]) \
                + z0 * cfg.sigma_0
        elif operator is not None:
            x = operator.complement(x) + operator.adjoint(measurement[rows])
    active = rows.clone()
    meas = measurement[rows] if operator is not None else None

    bar = tqdm(total=cfg.max_steps, disable=not progress, desc="sampling", leave=False, unit="step")
    try:
        for t in range(1, cfg.max_steps + 1):
            denoised = denoiser(x)
            if denoised.shape != x.shape:
                raise ValueError(f"denoiser returned shape {tuple(denoised.shape)} for input {tuple(x.shape)}")
            denoised = denoised.to(dtype)
            direction = denoised - x
            if operator is not None:
                direction = operator.complement(direction) + operator.adjoint(meas - operator.forward(x))
            sigma = (direction.pow(2).flatten(1).sum(1) / dof).sqrt()

            h, g = cfg.step_size(t), cfg.noise_scale(t)
            noise = streams.draw(active.tolist()) if g > 0 else None

            sig64 = sigma.double().cpu()
            bad = ~torch.isfinite(sig64) | (sig64 > cfg.divergence_bound)
            done = sig64 < cfg.sigma_final
            finished = bad | done | torch.full_like(done, t == cfg.max_steps)
            if callback is not None:
                callback({"x": x, "denoised": denoised, "sigma": sigma, "index": active, "step": t, "h": h,
                          "noise": noise, "finished": finished})

            if finished.any():
                fin = finished.nonzero().squeeze(1)
                idx = active[fin]
                final = denoised[fin.to(device)]
                if operator is not None and cfg.reproject:
                    final = operator.complement(final) + operator.adjoint(meas[fin.to(device)])
                out[idx.to(device)] = final
                last[idx.to(device)] = x[fin.to(device)]
                sigma_out[idx] = sig64[fin]
                for j, i in zip(fin.tolist(), idx.tolist()):
                    status[i] = DIVERGED if bad[j] else CONVERGED if done[j] else MAX_STEPS
                keep = (~finished).nonzero().squeeze(1)
                if keep.numel() == 0:
                    break
                kd = keep.to(device)
                x, direction, sigma, active = x[kd], direction[kd], sigma[kd], active[keep]
                if meas is not None:
                    meas = meas[kd]
                if noise is not None:
                    noise = noise[keep]
                sig64 = sig64[keep]

            # x_t = x_{t-1} + h_t d_t + gamma_t z_t, as separate exactly rounded operations so that
            # each row's arithmetic is identical whatever else is in the batch.
            x = x + direction * h
            if noise is not None:
                z = noise.to(device=device, dtype=dtype)
                if operator is not None and not full_noise:
                    z = operator.complement(z)
                x = x + z * (sigma * g).view(view)
            steps[active] += 1
            bar.update(1)
            bar.set_postfix(active=int(active.numel()), sigma=f"{float(sig64.max()):.3g}")
    finally:
        bar.close()
