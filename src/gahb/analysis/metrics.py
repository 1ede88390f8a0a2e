"""Image-quality and similarity metrics (PSNR of the paper's Figs 1 and 15, cosine of Fig 2)."""

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


def _gaussian_window(size: int, std: float, dtype: torch.dtype) -> torch.Tensor:
    t = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * std**2))
    return g / g.sum()


def ssim(x: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0, window: int = 11, std: float = 1.5,
         k1: float = 0.01, k2: float = 0.03, reduce: bool = True) -> torch.Tensor:
    """Structural similarity (Wang, Bovik, Sheikh & Simoncelli 2004), per image then averaged.

    The reference definition: local means, variances and covariance under an ``window`` x ``window``
    Gaussian window of std ``std`` (11 and 1.5), the map
    ((2 mu_x mu_r + C1)(2 s_xr + C2)) / ((mu_x^2 + mu_r^2 + C1)(s_x^2 + s_r^2 + C2)) with
    C1 = (k1 L)^2, C2 = (k2 L)^2, L = ``data_range``, averaged over the positions where the window
    lies inside the image ("valid") and over channels. Computed in float64.
    """
    import torch.nn.functional as F

    if x.shape != ref.shape or x.ndim != 4:
        raise ValueError(f"ssim needs two (B, C, H, W) batches of one shape, got {tuple(x.shape)}, {tuple(ref.shape)}")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"images of {x.shape[-2]}x{x.shape[-1]} are smaller than the {window}x{window} SSIM window")
    x, ref = x.double(), ref.double()
    c = x.shape[1]
    g = _gaussian_window(window, std, torch.float64).to(x.device)
    kernel = (g[:, None] * g[None, :]).expand(c, 1, window, window).contiguous()

    def blur(v: torch.Tensor) -> torch.Tensor:
        return F.conv2d(v, kernel, groups=c)

    mu_x, mu_r = blur(x), blur(ref)
    var_x = blur(x * x) - mu_x**2
    var_r = blur(ref * ref) - mu_r**2
    cov = blur(x * ref) - mu_x * mu_r
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    smap = ((2 * mu_x * mu_r + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_r**2 + c1) * (var_x + var_r + c2))
    per_image = smap.flatten(1).mean(1)
    return per_image.mean() if reduce else per_image
