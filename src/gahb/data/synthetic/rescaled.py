"""One image and its positive rescalings (paper Fig. 19): a ray {s x : s > 0}, onto whose
direction x / ||x|| the optimal denoiser projects."""

from __future__ import annotations

import torch

from gahb.models.base import as_single_image

from .seeding import _block_rngs, _check_n, _uniform


def _as_image(image) -> torch.Tensor:
    x = as_single_image(image, "base image").to(torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError("base image contains non-finite values")
    return x


def rescaled_image_dataset(image, n: int, seed: int = 0, scale_range: tuple[float, float] = (0.0, 1.0),
                           return_scales: bool = False):
    """n copies s * x of one image with s ~ U(lo, hi] (default (0, 1], the official ``rescale``).

    The set {s x : s > 0} is a ray, so the optimal denoiser projects onto x / ||x||.
    s = hi - (hi - lo) u with u ~ U[0, 1), so s > lo >= 0 strictly: every image is a *positive*
    multiple of x. Returns (n, C, H, W) float32 (and the scales (n,) float64 if asked).
    """
    n = _check_n(n)
    lo, hi = (float(v) for v in scale_range)
    if not 0 <= lo < hi:
        raise ValueError(f"scale_range must satisfy 0 <= lo < hi, got {scale_range!r}")
    x = _as_image(image)
    s = torch.empty(n, dtype=torch.float64)
    for a, b, rng in _block_rngs(seed, n, salt=3):
        s[a:b] = hi - (hi - lo) * torch.from_numpy(_uniform(rng, b - a))
    out = (s.to(torch.float32)[:, None, None, None] * x[None]).contiguous()
    return (out, s) if return_scales else out
