"""Transposes of the layers of a frozen-activation network: the pieces of J(y)^T (paper eq. 6).

At a fixed input y a bias-free ReLU network in eval mode is the linear map J(y): BF-BN folds into
the convolutions and each ReLU becomes multiplication by the 0/1 gate it takes on y
(:class:`FrozenReLU`, built by :func:`gahb.analysis.jacobian.linearize`). Every remaining layer is
linear, so J(y)^T is the network run backwards with each layer replaced by its adjoint. Each
architecture assembles its own transpose from :func:`leaf_adjoint` and
:func:`sequential_adjoint` next to its forward pass (``UNet.residual_adjoint``,
``BFCNN.residual_adjoint``), as a linear operator carries ``A`` and ``A_adjoint`` together.

A layer without an explicit adjoint here raises :class:`NoAdjoint`; callers then fall back to
reverse-mode automatic differentiation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FrozenReLU(nn.Module):
    """Multiplication by a fixed 0/1 gate: a ReLU frozen at the activation pattern of one input."""

    def __init__(self, gate: torch.Tensor):
        super().__init__()
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate


class NoAdjoint(Exception):
    """The network has a layer without an explicit adjoint here: use reverse-mode AD instead."""


def leaf_adjoint(m: nn.Module, u: torch.Tensor) -> torch.Tensor:
    """u -> A^T u for one linear leaf A of a frozen-activation network (raises :class:`NoAdjoint`)."""
    if isinstance(m, FrozenReLU):
        return u * m.gate
    if isinstance(m, nn.Identity):
        return u
    if isinstance(m, nn.Conv2d):
        if (m.stride != (1, 1) or m.dilation != (1, 1) or m.groups != 1 or m.padding_mode != "zeros"
                or m.bias is not None or isinstance(m.padding, str)):
            raise NoAdjoint(f"no explicit adjoint for {m}")
        # A stride-1 zero-padded convolution's adjoint is the convolution with the kernel flipped
        # and its channel axes swapped (padding k-1-p); as a forward conv it takes the fast path
        # that a conv backward (or conv_transpose2d) does not on CPU.
        wt = getattr(m, "_adjoint_weight", None)
        if wt is None or wt.dtype != m.weight.dtype:
            wt = m.weight.detach().transpose(0, 1).flip(-1, -2).contiguous()
            if m.weight.is_contiguous(memory_format=torch.channels_last) and not m.weight.is_contiguous():
                wt = wt.contiguous(memory_format=torch.channels_last)
            m._adjoint_weight = wt
        kh, kw = m.kernel_size
        return F.conv2d(u, wt, padding=(kh - 1 - m.padding[0], kw - 1 - m.padding[1]))
    if isinstance(m, nn.AvgPool2d):
        k, st = m.kernel_size, m.stride
        if not (k == st == 2 or k == st == (2, 2)) or m.padding not in (0, (0, 0)) or m.ceil_mode:
            raise NoAdjoint(f"no explicit adjoint for {m}")
        return F.interpolate(u, scale_factor=2, mode="nearest") * 0.25
    if isinstance(m, nn.ConvTranspose2d):
        if (m.kernel_size != m.stride or m.padding != (0, 0) or m.output_padding != (0, 0) or m.groups != 1
                or m.dilation != (1, 1) or m.bias is not None):
            raise NoAdjoint(f"no explicit adjoint for {m}")
        # Non-overlapping transposed conv (kernel = stride): its adjoint is the strided conv.
        return F.conv2d(u, m.weight, stride=m.stride)
    raise NoAdjoint(f"no explicit adjoint for {type(m).__name__}")


def sequential_adjoint(seq: nn.Module, u: torch.Tensor) -> torch.Tensor:
    """u -> A^T u for an ``nn.Sequential`` (nested ones included) of linear leaves: the leaves' adjoints in reverse."""
    mods = list(seq.children()) if isinstance(seq, nn.Sequential) else [seq]
    for m in reversed(mods):
        u = sequential_adjoint(m, u) if isinstance(m, nn.Sequential) else leaf_adjoint(m, u)
    return u
