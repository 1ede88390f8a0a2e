"""Exact inference rewrites for bias-free networks.

In eval mode a BF-BN layer is the fixed diagonal map ``x_c -> x_c * gamma_c / running_sd_c``, so
it can be folded into the output channels of the convolution right before it. The folded
network computes the same function (to float rounding) with fewer passes over memory; it stays
bias-free, so homogeneity and f(y) = J(y) y still hold.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .bfbn import BFBatchNorm2d


@torch.no_grad()
def fold_batchnorm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return an eval-mode copy of ``model`` with every ``Conv2d -> BFBatchNorm2d`` pair fused.

    The BF-BN modules are replaced by ``nn.Identity``. Only direct ``Conv2d`` predecessors inside
    an ``nn.Sequential`` are fused (the layout of both gahb architectures); any other BF-BN is
    left in place, still correct in eval mode.
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq.named_children())
        for (_, prev), (name, cur) in zip(children, children[1:]):
            if isinstance(cur, BFBatchNorm2d) and isinstance(prev, nn.Conv2d) and prev.bias is None:
                prev.weight.mul_(cur.scale().to(prev.weight).view(-1, 1, 1, 1))
                setattr(seq, name, nn.Identity())
    return model


def optimize_for_inference(
    model: nn.Module, channels_last: bool = True, fold: bool = True, compile: bool = False
) -> nn.Module:
    """Eval-mode, folded, channels_last (and optionally ``torch.compile``d) copy for fast inference.

    Inputs need not be channels_last: convolutions convert on the fly, and outputs are returned in
    whatever layout PyTorch produces (values are identical either way).
    """
    model = fold_batchnorm(model) if fold else copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)
    return model
