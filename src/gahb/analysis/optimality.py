"""Optimality diagnostics on synthetic data (paper section 4, eq. 13, Figs 4-5).

* :func:`optimal_calpha_slope`: the minimax slope alpha / (alpha + 1) of output against input PSNR
  for geometric C^alpha images (eq. 13; Korostelev & Tsybakov 1993).
* :func:`fit_psnr_slope`: least-squares slope of a denoising curve over a stated window of input
  PSNR (the paper does not state its window; ours is always reported with the slope);
  :func:`slope_interval`: its bootstrap interval over the images the curve averages.
* :func:`principal_angles`, :func:`subspace_alignment`: principal angles between two subspaces of
  R^d (Bjorck & Golub 1973: the singular values of Qa^T Qb are their cosines), to compare the
  top eigenvectors of a Jacobian with the tangent space of a manifold (paper Fig. 5).
"""

from __future__ import annotations

import numpy as np
import torch


def optimal_calpha_slope(alpha: float) -> float:
    """alpha / (alpha + 1): MSE ~ sigma^(2 alpha / (alpha + 1)) for C^alpha images (paper eq. 13)."""
    alpha = float(alpha)
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    return alpha / (alpha + 1.0)


def fit_psnr_slope(input_psnr, output_psnr, window: tuple[float, float] | None = None) -> dict:
    """Least-squares line output = slope * input + intercept over ``window[0] <= input <= window[1]``.

    Returns a JSON-able dict: ``slope``, ``intercept``, ``r2`` (coefficient of determination),
    ``n_points``, ``window`` (as used) and ``max_abs_residual`` (dB). At least two distinct
    input PSNRs must fall in the window.
    """
    x = np.asarray(input_psnr, dtype=np.float64).reshape(-1)
    y = np.asarray(output_psnr, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"input and output PSNR lengths differ: {x.shape[0]} vs {y.shape[0]}")
    if window is None:
        window = (float(x.min()), float(x.max()))
    lo, hi = float(window[0]), float(window[1])
    if not lo <= hi:
        raise ValueError(f"window must be (low, high) with low <= high, got {window}")
    keep = (x >= lo - 1e-9) & (x <= hi + 1e-9)
    xs, ys = x[keep], y[keep]
    if np.unique(xs).size < 2:
        raise ValueError(f"fewer than two input PSNRs in the window [{lo}, {hi}] dB (grid: {x.tolist()})")
    if not np.all(np.isfinite(ys)):
        raise ValueError("output PSNRs in the window are not finite")
    A = np.stack([xs, np.ones_like(xs)], axis=1)
    (slope, intercept), *_ = np.linalg.lstsq(A, ys, rcond=None)
    resid = ys - (slope * xs + intercept)
    ss_tot = float(((ys - ys.mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / ss_tot if ss_tot > 0 else 1.0
    return {"slope": float(slope), "intercept": float(intercept), "r2": float(r2),
            "n_points": int(keep.sum()), "window": [lo, hi],
            "max_abs_residual": float(np.abs(resid).max())}


def slope_interval(input_psnr, image_psnr, window: tuple[float, float], *, seed: int = 0, **kw):
    """The slope of :func:`fit_psnr_slope` on the mean curve, with its bootstrap interval over images.

    ``image_psnr``: (n_images, n_levels) output PSNR of each image at each input PSNR (a denoising
    curve with ``keep_per_image``). Images are resampled whole, so the interval carries the
    image-to-image spread of the curve; returns a :class:`gahb.analysis.uncertainty.Interval`.
    """
    from gahb.analysis.uncertainty import bootstrap_rows, line_slope

    x = np.asarray(input_psnr, dtype=np.float64).reshape(-1)
    rows = torch.as_tensor(np.asarray(image_psnr, dtype=np.float64))
    if rows.ndim != 2 or rows.shape[1] != x.size:
        raise ValueError(f"image_psnr must be (images, {x.size} levels), got {tuple(rows.shape)}")
    lo, hi = float(window[0]), float(window[1])
    keep = (x >= lo - 1e-9) & (x <= hi + 1e-9)
    if np.unique(x[keep]).size < 2:
        raise ValueError(f"fewer than two input PSNRs in the window [{lo}, {hi}] dB (grid: {x.tolist()})")
    xw = torch.as_tensor(x[keep])
    cols = torch.as_tensor(np.flatnonzero(keep))
    return bootstrap_rows(rows[:, cols], lambda t: line_slope(xw, t.mean(-2)), seed=seed, **kw)


def local_slopes(input_psnr, output_psnr) -> list[float]:
    """Finite-difference slopes between consecutive points of a curve (len - 1 values)."""
    x = np.asarray(input_psnr, dtype=np.float64)
    y = np.asarray(output_psnr, dtype=np.float64)
    return (np.diff(y) / np.diff(x)).tolist()


def _columns(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"expected a (d, k) matrix of column vectors, got shape {a.shape}")
    return a


def orthonormal_basis(a, tol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis (d, r) of the column span of ``a`` (SVD; r = numerical rank)."""
    a = _columns(a)
    u, s, _ = np.linalg.svd(a, full_matrices=False)
    if s.size == 0 or s[0] == 0:
        raise ValueError("the subspace is empty (all columns are zero)")
    r = int((s > tol * s[0]).sum())
    return u[:, :r]


def principal_angles(a, b) -> np.ndarray:
    """Principal angles (radians, ascending) between the column spans of ``a`` (d, p) and ``b`` (d, q).

    min(p, q) angles, from the singular values of Qa^T Qb (Bjorck & Golub 1973). Columns need
    not be orthonormal: each span is orthonormalised first (rank-deficient columns are dropped).
    """
    qa, qb = orthonormal_basis(a), orthonormal_basis(b)
    if qa.shape[0] != qb.shape[0]:
        raise ValueError(f"subspaces live in different dimensions: {qa.shape[0]} vs {qb.shape[0]}")
    cos = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return np.arccos(np.clip(cos, 0.0, 1.0))


def subspace_alignment(a, b) -> dict:
    """Principal angles between span(a) and span(b) and summaries (JSON-able).

    ``cos2``: squared cosines (descending); ``mean_cos2`` = ||P_a P_b||_F^2 / min(p, q), 1 for
    equal subspaces and about min(p,q)/d on average for random ones; ``angles_deg``.
    """
    ang = principal_angles(a, b)
    cos2 = np.cos(ang) ** 2
    return {"angles_deg": np.degrees(ang).tolist(), "cos2": cos2.tolist(), "mean_cos2": float(cos2.mean()),
            "min_cos2": float(cos2.min()), "dims": [int(orthonormal_basis(a).shape[1]),
                                                    int(orthonormal_basis(b).shape[1])]}


def random_subspace_mean_cos2(d: int, p: int, q: int) -> float:
    """Expected mean cos^2 of principal angles for a uniformly random p-subspace against a q-subspace.

    E||P_a P_b||_F^2 = p q / d, divided by min(p, q): the chance level to compare against.
    """
    if not (1 <= p <= d and 1 <= q <= d):
        raise ValueError("need 1 <= p, q <= d")
    return p * q / d / min(p, q)


__all__ = ["fit_psnr_slope", "local_slopes", "optimal_calpha_slope", "orthonormal_basis", "principal_angles",
           "random_subspace_mean_cos2", "slope_interval", "subspace_alignment"]
