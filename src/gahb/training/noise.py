"""Blind noise sampling and the denoising loss (paper eq. 4, App. A.1)."""

from __future__ import annotations

import torch

from .config import LOSS_WEIGHTS, NOISE_LAWS


def sample_sigmas(
    n: int,
    law: str = "quadratic",
    sigma_max: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """One noise level per image, shape (n,).

    ``"quadratic"``: sigma = sigma_max * u^2 with u ~ U(0, 1), the official code's
    ``quadratic_noise``. Its density is 1 / (2 sqrt(sigma)) on [0, 1], which favours small noise;
    the median is sigma_max / 4.
    ``"uniform"``: sigma = sigma_max * u.
    """
    if law not in NOISE_LAWS:
        raise ValueError(f"unknown noise law {law!r}; choose one of {NOISE_LAWS}")
    u = torch.rand(n, generator=generator, device=device)
    return sigma_max * (u * u if law == "quadratic" else u)


def draw_noise(
    shape: tuple[int, ...] | torch.Size,
    law: str = "quadratic",
    sigma_max: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``(sigmas, z)``: per-image levels (B,) and Gaussian noise ``z = sigma * N(0, I)`` of ``shape``.

    The levels are drawn before the noise, from the same generator, so a batch's noise is a fixed
    function of the generator state (what makes resumed runs reproduce uninterrupted ones).
    """
    sigmas = sample_sigmas(shape[0], law, sigma_max, generator, device)
    z = torch.randn(tuple(shape), generator=generator, device=device)
    return sigmas, z * sigmas.view(-1, *([1] * (len(shape) - 1)))


def denoising_loss(residual: torch.Tensor, noise: torch.Tensor, batch_size: int | None = None,
                   weights: torch.Tensor | None = None) -> torch.Tensor:
    """Paper eq. 4: sum over pixels of ||r(y) - z||^2 = ||f(y) - x||^2, averaged over the batch.

    This is the official ``MSELoss(reduction='sum') / batch``. ``batch_size`` defaults to the
    size of ``residual``; data-parallel ranks pass the *global* batch so their sums add up to the
    global loss. ``weights`` (B,), if given, multiply each image's squared error (see
    :func:`loss_weights`). Computed in float32 even under bf16 autocast.
    """
    b = residual.shape[0] if batch_size is None else batch_size
    err = (residual.float() - noise.float()).pow(2)
    if weights is None:
        return err.sum() / b
    return (err.flatten(1).sum(1) * weights.float()).sum() / b


def loss_weights(sigmas: torch.Tensor, kind: str = "none", floor: float = 0.01,
                 eps_sigma: float = 0.1) -> torch.Tensor | None:
    """Per-image loss weights for the training noise levels ``sigmas`` (B,).

    ``"none"``: None (the paper's unweighted loss). ``"eps"``: 1 / (sigma^2 + floor^2). Since
    ||r(y) - sigma n||^2 / sigma^2 = ||r(y)/sigma - n||^2, this is DDPM's noise-prediction loss:
    every noise level then contributes an error relative to its own noise energy (a PSNR gain)
    instead of an absolute one that grows with sigma^2. ``"eps-small"``: 1 + (eps_sigma /
    max(sigma, floor))^2, the paper's loss above ``eps_sigma`` and eps_sigma^2 times the
    noise-prediction loss below it: the small noise levels, whose absolute errors the unweighted
    loss barely sees, count as much as the large ones, and the large ones keep their weight.
    """
    if kind == "none":
        return None
    if kind == "eps":
        return 1.0 / (sigmas.float().pow(2) + float(floor) ** 2)
    if kind == "eps-small":
        return 1.0 + (float(eps_sigma) / sigmas.float().clamp_min(float(floor))).pow(2)
    raise ValueError(f"unknown loss weight {kind!r}; choose one of {LOSS_WEIGHTS}")
