"""Image-quality and similarity metrics (paper section 6; spec 6.1-6.2)."""

from __future__ import annotations

import math

import torch


def mse_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all non-batch dimensions, shape (B,)."""
    return (x - y).pow(2).flatten(1).mean(1)


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0, reduce: bool = True) -> torch.Tensor:
    """PSNR = 10 log10(range^2 / MSE), per image then averaged over the batch (as the official code).

    Returns a scalar tensor when ``reduce`` else one value per image.
    """
    mse = mse_per_image(x.float(), ref.float()).clamp_min(1e-20)
    p = 10.0 * torch.log10(data_range**2 / mse)
    return p.mean() if reduce else p


def input_psnr(sigma: float | torch.Tensor) -> float | torch.Tensor:
    """PSNR of a noisy image at noise std ``sigma`` (range 1): 10 log10(1 / sigma^2)."""
    if isinstance(sigma, torch.Tensor):
        return -20.0 * torch.log10(sigma)
    return -20.0 * math.log10(sigma)


def sigma_from_psnr(p: float) -> float:
    """Inverse of :func:`input_psnr`."""
    return 10.0 ** (-p / 20.0)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor, center: bool = False) -> torch.Tensor:
    """Normalised inner product of flattened images, per pair (B,).

    The paper's "normalized inner product" removes no mean (``center=False``); deduplication
    uses the mean-removed variant (``center=True``).
    """
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    if center:
        a = a - a.mean(1, keepdim=True)
        b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)
