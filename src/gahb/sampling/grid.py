"""Tiling a batch of images into one picture (for sample grids and restoration panels)."""

from __future__ import annotations

import math

import torch


def make_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2, pad_value: float = 1.0,
              nan_value: float = 0.0) -> torch.Tensor:
    """Tile (N, C, H, W) images row by row into one (C, H', W') image.

    ``nrow`` images per row (default: a near-square grid). Non-finite pixels (a diverged sample)
    are shown as ``nan_value`` so that the grid can still be written.
    """
    if images.ndim != 4:
        raise ValueError(f"make_grid expects (N, C, H, W), got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    if n == 0:
        raise ValueError("make_grid got no images")
    nrow = max(1, min(n, nrow or math.ceil(math.sqrt(n))))
    rows = math.ceil(n / nrow)
    images = torch.nan_to_num(images.detach().float().cpu(), nan=nan_value, posinf=nan_value, neginf=nan_value)
    grid = torch.full((c, rows * h + (rows + 1) * pad, nrow * w + (nrow + 1) * pad), float(pad_value))
    for k in range(n):
        r, q = divmod(k, nrow)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, top:top + h, left:left + w] = images[k]
    return grid
