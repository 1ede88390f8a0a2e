"""Helpers shared by the synthetic-data studies (calpha, manifold, shuffled); not a study itself."""

from __future__ import annotations

import os

import numpy as np
import torch


def run_summary(run_dir: str | os.PathLike) -> dict:
    """The last evaluation of a run (step, images seen, losses, PSNRs, the EMA network's, wall time), JSON-able."""
    from gahb.training.loop import read_metrics

    recs = read_metrics(run_dir)
    if not recs:
        return {}
    last = recs[-1]
    keep = {k: last[k] for k in ("step", "epoch", "images_seen", "train_loss", "test_loss", "test_psnr",
                                 "train_psnr", "ema", "lr", "images_per_s", "wall_time") if k in last}
    return _finite(keep)


def _finite(obj):
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def jacobian_analysis(denoiser, x: torch.Tensor, sigma: float, *, k: int = 32, dense_max: int = 4096,
                      seed: int = 0, noise: torch.Tensor | None = None, block: int = 1, progress: bool = False):
    """Eigen-analysis of the denoiser Jacobian at y = x + sigma z (paper section 3, eqs. 6-7).

    Dense J and a full eigendecomposition of its symmetric part when d <= ``dense_max``, else the
    top ``k`` eigenpairs by Lanczos. ``noise`` (z, shaped like x) defaults to a draw seeded by
    ``seed``. ``block``: Lanczos block size (a block of b vectors resolves eigenvalues of
    multiplicity up to b; single-vector Lanczos sees one direction per eigenspace). Returns a :class:`gahb.analysis.adaptive_basis.SigmaAnalysis`.
    """
    from gahb.analysis.adaptive_basis import JacobianAnalysisConfig, analyze_sigma

    d = int(np.prod(x.shape[-3:]))
    method = "dense" if d <= dense_max else "topk"
    jcfg = JacobianAnalysisConfig(sigmas=[float(sigma)], method=method, k=min(int(k), d - 1), seed=int(seed),
                                  block=int(block))
    if noise is not None:
        noise = noise.detach().double()
    return analyze_sigma(denoiser, x, float(sigma), jcfg, noise=noise, progress=progress)
