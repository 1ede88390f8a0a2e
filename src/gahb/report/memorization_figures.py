"""Figures of the memorization-to-generalization transition (paper section 2, Figs 1 and 2; Fig 15).

The numbers come from :mod:`gahb.analysis.memorization`; these functions only draw them, with
matplotlib imported lazily (Agg backend, :func:`gahb.report.figures.pyplot`). Each returns the
figure and, given ``path``, also saves it (PNG) atomically.

* :func:`denoising_curves_figure`: train and test output PSNR against input PSNR, one panel per N (Fig 1);
* :func:`similarity_histograms_figure`: the two cosine-similarity histograms per N (Fig 2);
* :func:`psnr_gap_figure`: the train - test PSNR gap against N, one line per image size (Fig 15).
"""

from __future__ import annotations

import math

import numpy as np

from gahb.analysis.memorization import DEFAULT_BINS, SimilaritySummary
from gahb.analysis.nearest import as_tensor

from .figures import pyplot, save_figure

PAIRED_COLOR = "tab:blue"
NEAREST_COLOR = "tab:orange"


def _panel_grid(count: int, ncols: int | None, panel: tuple[float, float]):
    plt = pyplot()
    ncols = ncols or min(count, 4)
    nrows = math.ceil(count / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, axes.flat


def _sorted_keys(per_n: dict) -> list:
    """Integer N in increasing order first, then any other labels alphabetically."""
    ints = sorted(k for k in per_n if isinstance(k, (int, np.integer)))
    return ints + sorted((k for k in per_n if not isinstance(k, (int, np.integer))), key=str)


def _n_label(n) -> str:
    try:
        n = int(n)
    except (TypeError, ValueError):
        return str(n)
    if n >= 1000 and n == 10 ** round(math.log10(n)):
        return f"N = $10^{{{round(math.log10(n))}}}$"
    return f"N = {n}"


def similarity_histograms_figure(per_n: dict, bins: int = DEFAULT_BINS, path=None, ncols: int | None = None,
                                 title: str | None = None):
    """Paper Fig 2 layout: one panel per N, x from 0 to 1, blue = paired, orange = nearest train.

    ``per_n`` maps N to a dict with keys ``"paired"`` and/or ``"nearest_train"`` holding either raw
    similarity values or :class:`SimilaritySummary` objects (their stored counts are drawn;
    ``bins`` then does not apply), and optionally ``"note"``, a line added to the panel's title
    (e.g. how many samples failed and were left out). Values are clipped to [0, 1]. Returns the figure.
    """
    if not per_n:
        raise ValueError("per_n is empty")
    keys = _sorted_keys(per_n)
    fig, axes = _panel_grid(len(keys), ncols, (3.2, 2.6))
    series = (("paired", PAIRED_COLOR, "Samples from two denoisers"),
              ("nearest_train", NEAREST_COLOR, "Sample and closest train image"))
    for ax, n in zip(axes, keys):
        for key, color, label in series:
            v = per_n[n].get(key) if isinstance(per_n[n], dict) else getattr(per_n[n], key, None)
            if v is None:
                continue
            if isinstance(v, SimilaritySummary):
                counts, edges = np.asarray(v.counts), np.asarray(v.bin_edges)
            else:
                arr = np.clip(as_tensor(v).detach().double().flatten().cpu().numpy(), 0.0, 1.0)
                counts, edges = np.histogram(arr, bins=bins, range=(0.0, 1.0))
            ax.stairs(counts, edges, fill=True, alpha=0.55, color=color, label=label)
        ax.set_xlim(0.0, 1.0)
        note = per_n[n].get("note") if isinstance(per_n[n], dict) else None
        ax.set_title(_n_label(n) + (f"\n{note}" if note else ""), fontsize=9)
        ax.set_xlabel("cosine similarity", fontsize=8)
        ax.tick_params(labelsize=7)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, -0.04))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def denoising_curves_figure(per_n: dict, path=None, ncols: int | None = None, title: str | None = None):
    """Paper Fig 1 layout: one panel per N with the train and test PSNR curves and the identity line.

    ``per_n`` maps N to ``{"train": curve, "test": curve}`` (either may be missing), curves as
    returned by :func:`gahb.analysis.memorization.denoising_curve`. Returns the figure.
    """
    if not per_n:
        raise ValueError("per_n is empty")
    keys = _sorted_keys(per_n)
    fig, axes = _panel_grid(len(keys), ncols, (3.0, 2.8))
    for ax, n in zip(axes, keys):
        lo, hi = math.inf, -math.inf
        for key, style in (("train", dict(color="tab:blue", marker="o")),
                           ("test", dict(color="tab:orange", marker="s"))):
            curve = per_n[n].get(key)
            if curve is None:
                continue
            ax.plot(curve["input_psnr"], curve["output_psnr"], ms=3, lw=1.2, label=key, **style)
            lo, hi = min(lo, min(curve["input_psnr"])), max(hi, max(curve["input_psnr"]))
        if math.isfinite(lo):
            ax.plot([lo, hi], [lo, hi], color="0.5", ls="--", lw=1, label="identity")
        ax.set_title(_n_label(n), fontsize=9)
        ax.set_xlabel("input PSNR (dB)", fontsize=8)
        ax.set_ylabel("output PSNR (dB)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def psnr_gap_figure(per_resolution: dict, path=None, title: str | None = None):
    """Paper Fig 15 layout: PSNR gap (dB) against N on log-log axes, one line per image size.

    ``per_resolution`` maps a label (e.g. 80 for 80x80) to ``{N: gap}``. The gap axis is
    logarithmic as in the paper; when a gap is at or below 1e-3 dB (the paper's lower axis limit),
    or negative (an estimate at its noise floor), it becomes symmetric-log, linear within +-1e-2 dB,
    so every value is drawn where it is rather than clipped.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    values = [float(v) for gaps in per_resolution.values() for v in gaps.values()]
    for label, gaps in per_resolution.items():
        ns = sorted(gaps)
        ax.plot(ns, [float(gaps[n]) for n in ns], marker="o", ms=4,
                label=f"{label}x{label}" if isinstance(label, (int, np.integer)) else str(label))
    ax.set_xscale("log")
    if values and min(values) > 1e-3:
        ax.set_yscale("log")
    else:
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.axhline(0.0, color="0.5", lw=0.8)
    ax.set_xlabel("N (training images)")
    ax.set_ylabel("train - test PSNR (dB)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fig
