"""BF-CNN: the bias-free DnCNN of Mohan, Kadkhodaie et al. (ICLR 2020), paper App. A.1.

21 3x3 convolutions of 64 channels, no subsampling; BF-BN + ReLU after every layer except the
first (ReLU only, the recommended variant) and the last (linear). 702,784 parameters for one
channel; receptive field 43x43.
"""

from __future__ import annotations

import torch
from torch import nn

from .adjoint import sequential_adjoint
from .base import ResidualDenoiser, check_batch
from .bfbn import BFBatchNorm2d


class BFCNN(ResidualDenoiser):
    def __init__(
        self,
        in_channels: int = 1,
        num_layers: int = 21,
        width: int = 64,
        kernel_size: int = 3,
        first_layer_linear: bool = False,
    ):
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"num_layers must be >= 2, got {num_layers}")
        self.in_channels = in_channels
        self.num_layers = num_layers
        self.width = width
        p = kernel_size // 2
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, kernel_size, padding=p, bias=False)]
        if not first_layer_linear:
            layers.append(nn.ReLU(inplace=True))
        for _ in range(num_layers - 2):
            layers += [
                nn.Conv2d(width, width, kernel_size, padding=p, bias=False),
                BFBatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(width, in_channels, kernel_size, padding=p, bias=False))
        self.net = nn.Sequential(*layers)

    def residual(self, y: torch.Tensor) -> torch.Tensor:
        check_batch(y, self.in_channels)
        return self.net(y)

    def residual_adjoint(self, u: torch.Tensor) -> torch.Tensor:
        """R^T u for the residual R of a frozen-activation copy of this BF-CNN (its layers in reverse).

        Only for the linear network of :func:`gahb.analysis.jacobian.linearize` (BF-BN folded, every
        ReLU a :class:`~gahb.models.adjoint.FrozenReLU`), where R = I - J(y) (paper eq. 6); any other
        layer raises :class:`~gahb.models.adjoint.NoAdjoint`. ``u`` is a (B, C, H, W) batch.
        """
        return sequential_adjoint(self.net, u)
