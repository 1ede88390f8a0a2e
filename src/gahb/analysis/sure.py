"""SURE against the true MSE over many images and noise draws, with tr J against sigma (paper eq. 7).

For y = x + sigma z, z ~ N(0, I), Stein's unbiased risk estimate of the per-pixel MSE of a
denoiser f is

    SURE(y) = ||y - f(y)||^2 / d + 2 sigma^2 tr J(y) / d - sigma^2,        E_z[SURE] = E_z[MSE]

(eq. 7, App. D.3): it needs no clean image, and its trace term is the effective dimensionality.
One draw of one image is a noisy estimate, so a check of eq. 7 must average: :func:`sure_check`
measures SURE and the true MSE for ``draws`` noise draws of each image at each sigma, and judges
their mean difference against its standard error over the (image, draw) pairs, which includes
the noise of a Hutchinson trace where one is used. The same pass gives tr J against sigma.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from gahb.analysis.eigensolvers import trace_exact, trace_hutchinson
from gahb.analysis.jacobian import JacobianOperator
from gahb.utils.noise import gaussian, image_draw_seed


def _noise(shape, seed: int, image: int, draw: int) -> torch.Tensor:
    return gaussian(shape, image_draw_seed(seed, image, draw), dtype=torch.float64)


def _mean_se(a: np.ndarray) -> tuple[float, float]:
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else 0.0


def sure_check(denoiser: nn.Module, images, sigmas, *, draws: int = 4, probes: int = 32, exact: bool = False,
               seed: int = 0, chunk: int = 16, z_tolerance: float = 3.0, progress: bool = True) -> dict:
    """SURE (eq. 7) against the true per-pixel MSE, over ``images`` x ``draws`` noise draws per sigma.

    Args:
        denoiser: a blind denoiser in eval mode.
        images: (N, C, H, W) clean images on [0, 1] (or a list of (C, H, W)).
        sigmas: noise levels (pixel scale).
        draws: noise draws per image and sigma; draw r of image i is the same z at every sigma.
        probes: Rademacher probes of each Hutchinson trace (unless ``exact``: d JVPs each).
        z_tolerance: the check passes at a sigma when |mean(SURE - MSE)| <= z_tolerance standard errors.

    Returns ``{"sigmas": [...], "per_sigma": [{"sigma", "n", "sure", "mse", "difference",
    "difference_se", "relative_difference", "z", "passed", "trace", "trace_se", "trace_sd_over_images",
    "output_psnr"}], "pairs": {sigma: {"sure": [...], "mse": [...], "trace": [...]}}, "settings", "seconds",
    "passed"}`` with every per-(image, draw) value kept.
    """
    from tqdm.auto import tqdm

    xs = [torch.as_tensor(x).detach().double().reshape(1, *x.shape[-3:]) for x in images]
    if not xs:
        raise ValueError("sure_check needs at least one image")
    if draws < 1 or (probes < 2 and not exact):
        raise ValueError(f"need draws >= 1 and probes >= 2, got draws={draws}, probes={probes}")
    sigmas = [float(s) for s in sigmas]
    if any(not s > 0 for s in sigmas):
        raise ValueError(f"sigmas must be positive, got {sigmas}")
    t0 = time.perf_counter()
    pairs: dict[str, dict[str, list]] = {f"{s:g}": {"sure": [], "mse": [], "trace": [], "trace_se": []} for s in sigmas}
    bar = tqdm(total=len(sigmas) * len(xs) * draws, desc="SURE", unit="draw", disable=not progress, leave=False)
    for s in sigmas:
        rec = pairs[f"{s:g}"]
        for i, x in enumerate(xs):
            d = x.numel()
            for r in range(draws):
                y = x + s * _noise(x.shape, seed, i, r)
                op = JacobianOperator(denoiser, y, chunk=chunk)
                t = trace_exact(op) if exact else trace_hutchinson(op, probes, seed=seed + 7919 * r + i)
                fy = op.fy.numpy()
                resid = float(np.sum((y.reshape(-1).numpy() - fy) ** 2))
                rec["sure"].append(resid / d + 2 * s**2 * t.value / d - s**2)
                rec["mse"].append(float(np.mean((fy - x.reshape(-1).numpy()) ** 2)))
                rec["trace"].append(t.value)
                rec["trace_se"].append(t.stderr)
                op.release()
                bar.update(1)
    bar.close()

    rows = []
    for s in sigmas:
        rec = pairs[f"{s:g}"]
        sure, mse, tr = (np.asarray(rec[k]) for k in ("sure", "mse", "trace"))
        diff, diff_se = _mean_se(sure - mse)
        m_sure, m_mse = float(sure.mean()), float(mse.mean())
        per_image = tr.reshape(len(xs), draws).mean(1)
        z = diff / diff_se if diff_se > 0 else (0.0 if diff == 0 else math.inf)
        rows.append({"sigma": s, "n": int(sure.size), "sure": m_sure, "mse": m_mse, "difference": diff,
                     "difference_se": diff_se, "relative_difference": diff / m_mse if m_mse > 0 else None,
                     "z": z, "passed": bool(abs(z) <= z_tolerance),
                     "trace": float(tr.mean()), "trace_se": _mean_se(tr)[1],
                     "trace_sd_over_images": float(per_image.std(ddof=1)) if len(xs) > 1 else 0.0,
                     "output_psnr": float(np.mean(-10 * np.log10(np.maximum(mse, 1e-20))))})
    return {"sigmas": sigmas, "per_sigma": rows, "pairs": pairs, "passed": all(r["passed"] for r in rows),
            "settings": {"images": len(xs), "draws": draws, "probes": None if exact else probes,
                         "trace": "exact" if exact else f"Hutchinson, {probes} Rademacher probes",
                         "z_tolerance": z_tolerance, "seed": seed},
            "seconds": time.perf_counter() - t0}
