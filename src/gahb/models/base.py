"""The one denoiser contract used everywhere in gahb.

A *blind denoiser* is an ``nn.Module`` whose ``forward(y)`` maps a noisy batch ``y`` of shape
(B, C, H, W), pixel scale [0, 1], to its clean estimate ``f(y)`` of the same shape. It is never
told the noise level (paper section 2). Samplers, Jacobian analysis, metrics and
studies accept any module honouring this, including closed-form references such as the
empirical (memorising) denoiser.

Trained networks predict the residual ``r(y) = y - f(y)`` (an estimate of the noise), which is
what the training loss regresses onto the noise; :class:`ResidualDenoiser` exposes both.
"""

from __future__ import annotations

import torch
from torch import nn


def check_batch(y: torch.Tensor, channels: int | None = None, name: str = "input") -> None:
    """Raise a clear ``ValueError`` unless ``y`` is a (B, C, H, W) batch with ``channels`` channels."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if y.ndim != 4:
        raise ValueError(
            f"{name} must have shape (batch, channels, height, width); got shape {tuple(y.shape)}"
        )
    if channels is not None and y.shape[1] != channels:
        raise ValueError(
            f"{name} has {y.shape[1]} channel(s) but the denoiser expects {channels}; "
            "convert the images (e.g. to grayscale) or build the model with matching channels"
        )


class ResidualDenoiser(nn.Module):
    """Base class of the bias-free networks: ``forward(y) = y - residual(y)``."""

    in_channels: int = 1

    def residual(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        check_batch(y, self.in_channels)
        return y - self.residual(y)


def require_eval_mode(denoiser, what: str = "sampling") -> None:
    """Raise unless every batch-norm layer of ``denoiser`` is in eval mode.

    In train mode a batch norm divides by statistics of the batch: the denoiser would mix the
    images of a batch and not be the function that was trained for sampling, Jacobians or
    benchmarks (always use eval mode).
    """
    from torch.nn.modules.batchnorm import _BatchNorm

    from .bfbn import BFBatchNorm2d

    if isinstance(denoiser, nn.Module):
        bad = [n for n, m in denoiser.named_modules() if m.training and isinstance(m, (BFBatchNorm2d, _BatchNorm))]
        if bad:
            raise ValueError(f"the denoiser has batch-norm layers in training mode ({bad[0]!r}, ...); "
                             f"call model.eval() before {what}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (the paper's Table 1 counts BF-BN gains too)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def as_single_image(x, name: str = "image") -> torch.Tensor:
    """One image as a (C, H, W) tensor, from (H, W), (C, H, W) or (1, C, H, W) tensors or arrays.

    The dtype is kept; anything else raises a ``ValueError`` naming ``name``.
    """
    if not isinstance(x, torch.Tensor):
        import numpy as np

        x = torch.as_tensor(np.asarray(x))
    if x.ndim == 2:
        x = x[None]
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3:
        raise ValueError(f"{name} must be (H, W), (C, H, W) or (1, C, H, W); got shape {tuple(x.shape)}")
    return x
