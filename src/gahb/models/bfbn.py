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


class _BatchScale(torch.autograd.Function):
    """y = x * gamma / sd(x) over the batch, with sd = sqrt(biased variance + eps) per channel: the
    training-mode BF-BN in two passes for the statistics (mean, then centred squares: ``Tensor.var``
    over the batch and spatial axes is several times slower on CPU) and its gradient in closed form:

        dL/dgamma_c = sum g x / sd_c,
        dL/dx = g gamma / sd - gamma (sum_c g x) (x - mean_c) / (M sd_c^3),   M = N H W.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, gamma: torch.Tensor, eps: float):
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        xc = x - mean
        sd = (xc.pow(2).mean(dim=(0, 2, 3), keepdim=True) + eps).sqrt()
        ctx.save_for_backward(x, xc, sd, gamma)
        return x * (gamma / sd), sd

    @staticmethod
    def backward(ctx, gy: torch.Tensor, _gsd):
        x, xc, sd, gamma = ctx.saved_tensors
        m = x.numel() // x.shape[1]
        a = (gy * x).sum(dim=(0, 2, 3), keepdim=True)
        dx = gy * (gamma / sd) - (gamma * a / (m * sd.pow(3))) * xc
        return dx, a / sd, None


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
            y, sd = _BatchScale.apply(x, self.gammas, self.eps)
            with torch.no_grad():
                self.running_sd.mul_(1.0 - self.momentum).add_(self.momentum * sd.detach())
            return y
        return x * (self.gammas / self.running_sd)

    def scale(self) -> torch.Tensor:
        """The eval-mode per-channel factor ``gamma / running_sd``, shape (C,)."""
        return (self.gammas / self.running_sd).reshape(-1)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, momentum={self.momentum}, eps={self.eps}"
