"""Why a sample diverges: the radial gain of a bias-free denoiser on clean images.

A bias-free network is homogeneous, f(a y) = a f(y) (paper section 3), so it has no preferred
image scale. Its *radial gain* at an image y,

    g(y) = <y, f(y)> / ||y||^2,                    g(a y) = g(y) for every a > 0,

is how much one denoising step keeps of y along itself. An optimal denoiser leaves clean images
alone, g(x) = 1, and shrinks noisy ones, g(x + sigma z) ~ ||x||^2 / ||x + sigma z||^2 < 1. When a
network returns clean images amplified, g(x) > 1, the sampler's update
x <- x + h (f(x) - x) multiplies any iterate that has come close to such an image by
1 + h (g - 1) > 1 per step, and since its effective noise sigma_t = ||f(x) - x|| / sqrt(d) grows
with ||x|| (homogeneity) it never falls below sigma_final: the sample brightens without bound
until sigma_t passes the divergence bound (saturated blobs). A network trained briefly with the
unweighted loss of eq. 4 can have g(x) > 1 on its training images: errors at small sigma cost
almost nothing in that loss (docs/divergence.md).
"""

from __future__ import annotations

import torch
from torch import nn

from gahb.models.base import require_eval_mode


def _gain(denoiser: nn.Module, images: torch.Tensor, sigma: float, seed: int, batch: int, along: str) -> torch.Tensor:
    """<f(y), v> / ||v||^2 per image, y = x + sigma z (z from ``seed``), with v = y (``along="input"``)
    or v = x (``along="image"``); float64 (N,)."""
    require_eval_mode(denoiser, "measuring its gain")
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    g = torch.Generator().manual_seed(int(seed))
    dev = next((p.device for p in denoiser.parameters()), torch.device("cpu")) if isinstance(denoiser, nn.Module) \
        else torch.device("cpu")
    out = []
    with torch.no_grad():
        for lo in range(0, images.shape[0], batch):
            x = images[lo:lo + batch].float()
            y = x + sigma * torch.randn(x.shape, generator=g) if sigma > 0 else x
            f = denoiser(y.to(dev)).float().cpu()
            v = y if along == "input" else x
            out.append((f * v).flatten(1).sum(1).double() / (v * v).flatten(1).sum(1).double().clamp_min(1e-30))
    return torch.cat(out)


def radial_gain(denoiser: nn.Module, images: torch.Tensor, sigma: float = 0.0, seed: int = 0,
                batch: int = 256) -> torch.Tensor:
    """g(y) = <y, f(y)> / ||y||^2 per image at y = x + sigma z (z from ``seed``), float64 (N,).

    At ``sigma = 0`` this is the gain on the clean images themselves: above 1 means the network
    amplifies them, which makes samples that approach them diverge (module docstring).
    """
    return _gain(denoiser, images, sigma, seed, batch, along="input")


def image_gain(denoiser: nn.Module, images: torch.Tensor, sigma: float, seed: int = 0, batch: int = 256) -> torch.Tensor:
    """c(x, sigma) = <f(x + sigma z), x> / ||x||^2 per image (z from ``seed``), float64 (N,).

    How much of the clean image's own component the denoiser returns from a noisy observation of
    it: an optimal denoiser of one training image returns that image, c = 1 at every sigma. The
    sampler's iterate carries such a component from its first step, and each step multiplies it by
    about c(sigma_t): a network with c > 1 at the large noise levels where sampling starts brings
    the iterate onto the image at several times its scale, where the residual is still above
    sigma_final, and a radial gain g > 1 then grows it without bound. By homogeneity
    c(a x, a sigma) = c(x, sigma): sigma is relative to the image as given.
    """
    return _gain(denoiser, images, sigma, seed, batch, along="image")


def saturation(images: torch.Tensor, tol: float = 1e-3) -> dict:
    """Fractions of pixels at or below 0 and at or above 1 (within ``tol``), over a batch of images."""
    x = images.detach().float()
    return {"at_0": float((x <= tol).float().mean()), "at_1": float((x >= 1 - tol).float().mean())}
