"""Bias-free batch normalisation (paper App. A.1).

Unlike ``nn.BatchNorm2d`` this layer neither subtracts a mean nor adds a shift: it only divides
each channel by a standard deviation and multiplies by a learned gain. In eval mode it is the
fixed diagonal linear map ``x_c * gamma_c / running_sd_c``, so a network made of bias-free
convolutions, ReLUs and this layer stays homogeneous of order one: f(a*y) = a*f(y) for a > 0.
"""

from __future__ import annotations

import torch
from torch import nn

# The official code draws gamma ~ N(0, (2/9/64)^2) and clips it to +-0.025: the value 2/9/64 is
# used directly as the standard deviation (no square root). We keep that initialisation.
GAMMA_INIT_STD = 2.0 / 9.0 / 64.0
GAMMA_CLIP = 0.025
EPS = 1e-5


class BFBatchNorm2d(nn.Module):
    """Bias-free batch norm: ``y_c = gamma_c * x_c / s_c``.

    Train mode: ``s_c = sqrt(Var_{B,H,W}(x_c) + eps)`` with the biased variance of the batch
    (the mean is used to compute the variance but is not subtracted from the output), and the
    buffer ``running_sd`` tracks ``0.9 * running_sd + 0.1 * s_c``.
    Eval mode: ``s_c = running_sd_c``, a fixed per-channel scale that can be folded into the
    preceding convolution (:func:`gahb.models.fold.fold_batchnorm`).
    """

    def __init__(self, num_channels: int, momentum: float = 0.1, eps: float = EPS):
        super().__init__()
        self.num_channels = num_channels
        self.momentum = momentum
        self.eps = eps
        gamma = torch.randn(1, num_channels, 1, 1) * GAMMA_INIT_STD
        self.gammas = nn.Parameter(gamma.clamp_(-GAMMA_CLIP, GAMMA_CLIP))
        self.register_buffer("running_sd", torch.ones(1, num_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            sd = torch.sqrt(x.var(dim=(0, 2, 3), keepdim=True, unbiased=False) + self.eps)
            with torch.no_grad():
                self.running_sd.mul_(1.0 - self.momentum).add_(self.momentum * sd.detach())
        else:
            sd = self.running_sd
        return x * (self.gammas / sd)

    def scale(self) -> torch.Tensor:
        """The eval-mode per-channel factor ``gamma / running_sd``, shape (C,)."""
        return (self.gammas / self.running_sd).reshape(-1)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, momentum={self.momentum}, eps={self.eps}"
