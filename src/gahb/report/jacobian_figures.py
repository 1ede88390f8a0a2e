"""Figures of the adaptive-basis analysis (paper sections 3 and 4: Figs 3-5, 17, 19-21).

matplotlib is imported lazily with the Agg backend, so importing this module is cheap and works
headless. Every function returns the figure and, given ``path``, also saves it (PNG) atomically.
Eigenvectors are shown with a diverging colormap centred at 0 (symmetric limits per panel),
as in the paper.
"""

from __future__ import annotations

import math
import os

import numpy as np

from .figures import diverging_panel, gray_panel, pyplot, save_figure


def montage_indices(k: int, every: int | None = None, start: int | None = None, count: int = 21) -> list[int]:
    """Paper Fig 3 layout: every m-th eigenvector from ``start`` (5, 17, ..., 245 for m = 12, 21 panels).

    Defaults: the paper's (start 5, every 12) when ``k`` allows it, else evenly spread over 0..k-1.
    """
    if every is None and start is None and k > 5 + 12 * (count - 1):
        every, start = 12, 5
    start = 0 if start is None else start
    if every is None:
        every = max(1, (k - start) // count) if k - start > count else 1
    idx = list(range(start, k, every))[:count]
    if not idx:
        raise ValueError(f"no eigenvector index in range({start}, {k}, {every})")
    return idx


def eigenvector_montage(basis, indices=None, *, every=None, start=None, count=21, ncols=7, images=None,
                        title=None, path=None):
    """Eigenvectors e_k (diverging colormap, centred at 0) each titled with k and lambda_k.

    ``images``: optional list of (label, image) shown first in grayscale (clean, noisy, denoised).
    """
    plt = pyplot()
    idx = list(indices) if indices is not None else montage_indices(basis.k, every, start, count)
    panels = len(idx) + (len(images) if images else 0)
    ncols = min(ncols, panels)
    nrows = math.ceil(panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.4 * ncols, 1.55 * nrows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat:
        ax.axis("off")
    pos = 0
    for label, img in images or []:
        flat[pos].axis("on")
        gray_panel(flat[pos], img, label)
        pos += 1
    vecs = basis.images(idx)
    sym = "s" if basis.method == "svd" else "\u03bb"
    for i, v in zip(idx, vecs):
        flat[pos].axis("on")
        diverging_panel(flat[pos], v, f"k={i}  {sym}={basis.eigenvalues[i]:.3f}")
        pos += 1
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def spectrum_figure(analyses, labels=None, path=None, title="Jacobian spectrum"):
    """lambda_k against k, one line per noise level (``analyses``: SigmaAnalysis list)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for i, r in enumerate(analyses):
        lab = labels[i] if labels else f"\u03c3={r.sigma:g}"
        ax.plot(np.arange(r.basis.k), r.basis.eigenvalues, lw=1.2, label=lab)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("k")
    ax.set_ylabel("\u03bb_k (shrinkage factor)")
    if max(r.basis.k for r in analyses) > 50:
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(left=0)  # symlog would otherwise pad to negative k
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def coefficients_figure(analysis, path=None, title=None):
    """|<x, e_k>| (clean) and |<y, e_k>| (noisy) against k, log scale: sparsity in the adaptive basis."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    k = np.arange(analysis.basis.k)
    ax.semilogy(k, np.abs(analysis.coef_y) + 1e-12, ".", ms=2, alpha=0.6, label="|<y, e_k>| noisy")
    ax.semilogy(k, np.abs(analysis.coef_x) + 1e-12, ".", ms=2, label="|<x, e_k>| clean")
    ax.axhline(analysis.sigma, color="k", ls="--", lw=0.8, label="\u03c3")
    ax.set_xlabel("k")
    ax.set_ylabel("coefficient magnitude")
    ax.set_title(title or f"coefficients in the adaptive basis, \u03c3={analysis.sigma:g}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def effective_dimension_figure(image_analyses, labels=None, path=None):
    """Left: tr J (effective dimensionality) vs sigma. Right: SURE vs true MSE (per pixel) vs sigma.

    ``image_analyses``: one or several :class:`~gahb.analysis.adaptive_basis.ImageAnalysis`.
    """
    plt = pyplot()
    if not isinstance(image_analyses, (list, tuple)):
        image_analyses = [image_analyses]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8.6, 3.4))
    for i, ia in enumerate(image_analyses):
        lab = labels[i] if labels else None
        s, t, e = ia.effective_dimension()
        line = a1.errorbar(s, t, yerr=2 * e, marker="o", ms=3, capsize=2, label=lab)
        color = line[0].get_color()
        sure = [r.numbers["sure"]["mse_sure"] for r in ia.results]
        true = [r.numbers["mse_true"] for r in ia.results]
        a2.plot(s, true, "o-", color=color, ms=3, label=f"true MSE{' ' + lab if lab else ''}")
        a2.plot(s, sure, "x--", color=color, ms=4, label=f"SURE{' ' + lab if lab else ''}")
    from matplotlib.ticker import NullFormatter

    for ax in (a1, a2):
        ax.set_xscale("log")
        ax.set_yscale("log")
        sig = sorted({r.sigma for ia in image_analyses for r in ia.results})
        ax.set_xticks(sig)
        ax.set_xticklabels([f"{v:g}" for v in sig])
        ax.xaxis.set_minor_formatter(NullFormatter())  # only the analysed sigmas are labelled
    a1.set_xlabel("\u03c3")
    a1.set_ylabel("tr J (effective dimension)")
    a1.set_title("effective dimensionality (\u00b12 s.e.)", fontsize=10)
    a2.set_xlabel("\u03c3")
    a2.set_ylabel("MSE per pixel")
    a2.set_title("SURE (eq. 7) vs true MSE", fontsize=10)
    if labels:
        a1.legend(fontsize=8)
    a2.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def comparison_figure(image_analyses, labels, sigma=None, *, count=10, every=None, start=None, path=None):
    """Side by side: one row per model (e.g. trained on small N vs large N) at one noise level.

    Each row: clean, noisy, denoised, then ``count`` eigenvectors; a last row overlays the spectra
    and the coefficient decays.
    """
    plt = pyplot()
    rows = []
    for ia in image_analyses:
        pick = ia.results[0] if sigma is None else min(ia.results, key=lambda r: abs(r.sigma - sigma))
        rows.append(pick)
    k = min(r.basis.k for r in rows)
    idx = montage_indices(k, every, start, count)
    ncols = 3 + len(idx)
    fig = plt.figure(figsize=(1.3 * ncols, 1.5 * len(rows) + 3.2), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.5 * len(rows), 3.2])
    axes = top.subplots(len(rows), ncols, squeeze=False)
    for i, (lab, r) in enumerate(zip(labels, rows)):
        shp = r.basis.shape
        for j, (name, img) in enumerate([("clean", r.x), (f"noisy \u03c3={r.sigma:g}", r.y), ("denoised", r.fy)]):
            gray_panel(axes[i, j], img.reshape(shp), name if i == 0 else None)
        axes[i, 0].set_ylabel(lab, fontsize=8)
        for j, (kk, v) in enumerate(zip(idx, r.basis.images(idx))):
            diverging_panel(axes[i, 3 + j], v, f"k={kk} \u03bb={r.basis.eigenvalues[kk]:.2f}")
    a1, a2 = bottom.subplots(1, 2)
    for lab, r in zip(labels, rows):
        a1.plot(np.arange(r.basis.k), r.basis.eigenvalues, label=lab)
        a2.semilogy(np.arange(r.basis.k), np.abs(r.coef_x) + 1e-12, ".", ms=2, label=lab)
    if k > 50:
        a1.set_xscale("symlog", linthresh=10)
        a1.set_xlim(left=0)
    a1.set_xlabel("k")
    a1.set_ylabel("\u03bb_k")
    a1.legend(fontsize=8)
    a2.set_xlabel("k")
    a2.set_ylabel("|<x, e_k>|")
    a2.legend(fontsize=8)
    save_figure(fig, path)
    return fig


def write_all(image_analysis, out_dir, *, every=None, start=None, count=21, prefix="") -> list[str]:
    """Every figure of one image analysis into ``out_dir``; returns the file names written."""
    plt = pyplot()
    os.makedirs(out_dir, exist_ok=True)
    names = []
    for r in image_analysis.results:
        shp = r.basis.shape
        tag = f"sigma{r.sigma:g}"
        imgs = [("clean", r.x.reshape(shp)), (f"noisy \u03c3={r.sigma:g}", r.y.reshape(shp)),
                ("denoised", r.fy.reshape(shp))]
        for name, fig in [
            (f"{prefix}eigenvectors_{tag}.png",
             eigenvector_montage(r.basis, every=every, start=start, count=count, images=imgs,
                                 title=f"adaptive basis at \u03c3={r.sigma:g} ({r.basis.method})",
                                 path=os.path.join(out_dir, f"{prefix}eigenvectors_{tag}.png"))),
            (f"{prefix}coefficients_{tag}.png",
             coefficients_figure(r, path=os.path.join(out_dir, f"{prefix}coefficients_{tag}.png"))),
        ]:
            names.append(name)
            plt.close(fig)
    fig = spectrum_figure(image_analysis.results, path=os.path.join(out_dir, f"{prefix}spectrum.png"))
    plt.close(fig)
    fig = effective_dimension_figure(image_analysis, path=os.path.join(out_dir, f"{prefix}effective_dimension.png"))
    plt.close(fig)
    return names + [f"{prefix}spectrum.png", f"{prefix}effective_dimension.png"]
