"""Matplotlib helpers shared by every figure in gahb: lazy import, Agg backend, atomic PNGs."""

from __future__ import annotations

import os


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
