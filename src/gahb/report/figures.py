"""Matplotlib helpers shared by every figure in gahb: lazy import, Agg backend, atomic PNGs, image panels."""

from __future__ import annotations

import os

import numpy as np

CMAP = "RdBu_r"  # diverging colormap of signed images (eigenvectors), centred at 0 as in the paper


def pyplot():
    """``matplotlib.pyplot`` with the non-interactive Agg backend, imported on first use."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike | None, dpi: int = 110) -> None:
    """Write ``fig`` as PNG atomically (nothing when ``path`` is None)."""
    if path is None:
        return
    from gahb.utils.io import _atomic

    _atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))


def gray_panel(ax, img, title=None) -> None:
    """Show a (C, H, W) image in [0, 1] on ``ax``: grayscale for one channel, RGB (clipped) for three."""
    img = np.asarray(img)
    ax.imshow(img[0] if img.shape[0] == 1 else np.clip(np.moveaxis(img, 0, -1), 0, 1),
              cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def diverging_panel(ax, vec, title=None) -> None:
    """Show a (C, H, W) signed vector (e.g. an eigenvector) on ``ax``, diverging colormap centred at 0."""
    v = np.asarray(vec)
    v = v[0] if v.shape[0] == 1 else v.mean(0)
    lim = max(float(np.abs(v).max()), 1e-12)
    ax.imshow(v, cmap=CMAP, vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
