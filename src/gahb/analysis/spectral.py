"""Linear algebra on a denoiser Jacobian J and its adaptive basis (paper section 3, eqs. 6-7, 11-12).

The basis itself, :class:`~gahb.analysis.adaptive_basis.AdaptiveBasis` (eigenvectors of
S = (J + J^T)/2 or the SVD of J, paper Fig 3), lives in :mod:`gahb.analysis.adaptive_basis`; these
are the measurements made with it, on NumPy float64 arrays:

* the asymmetry ||J - J^T||_F / ||J||_F (:func:`asymmetry`) and what is exactly true and what is
  not. For a bias-free network f(y) = J y exactly (eq. 6). The paper writes
  J y = sum_k lambda_k <y, e_k> e_k *assuming* J symmetric; for the real, slightly asymmetric J
  the exact statements are

      f(y) = sum_k lambda_k <y, e_k> e_k + A y,   A = (J - J^T)/2     (eigenbasis of S)
      f(y) = sum_k s_k <y, v_k> u_k                                  (SVD J = U diag(s) V^T)

  and ||A y|| / ||f(y)|| is the gap the symmetric shrinkage picture leaves (:func:`identity_residuals`,
  :func:`truncated_shrinkage_error`);
* SURE (eq. 7, App. D) from the effective dimensionality tr J (:func:`sure_mse`);
* the fixed-basis oracle (eq. 11) and its thresholding bound (eq. 12) (:func:`oracle_error`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .adaptive_basis import AdaptiveBasis

# The basis and its constructors moved to adaptive_basis.py; they stay importable from here, loaded
# on first access (adaptive_basis imports this module, so importing them eagerly would be circular).
_MOVED = ("AdaptiveBasis", "basis_from_topk", "eigen_basis", "svd_basis")


def __getattr__(name: str):
    if name in _MOVED:
        from . import adaptive_basis

        return getattr(adaptive_basis, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def to_float64(a) -> np.ndarray:
    """A tensor or array-like as a NumPy float64 array (tensors detached and moved to the CPU)."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def flat_float64(a) -> np.ndarray:
    """:func:`to_float64`, flattened to (d,)."""
    return to_float64(a).reshape(-1)


def asymmetry(J) -> float:
    """||J - J^T||_F / ||J||_F (0 for a symmetric Jacobian; small for trained denoisers)."""
    J = to_float64(J)
    return float(np.linalg.norm(J - J.T) / max(np.linalg.norm(J), 1e-300))


def identity_residuals(J, y, fy, basis: AdaptiveBasis | None = None, svd: AdaptiveBasis | None = None) -> dict:
    """Relative residuals of the identities of paper eq. 6 (each divided by ||f(y)||).

    * ``linear``: ||J y - f(y)|| (exact for bias-free networks);
    * ``sym_plus_antisym``: ||sum_k lambda_k <y,e_k> e_k + A y - f(y)|| with the complete
      eigenbasis of S and A = (J - J^T)/2 (exact);
    * ``sym_only``: ||sum_k lambda_k <y,e_k> e_k - f(y)|| = ||A y|| (the asymmetry gap, not an
      error of the computation);
    * ``svd``: ||sum_k s_k <y,v_k> u_k - f(y)|| (exact).
    """
    J, y, fy = to_float64(J), flat_float64(y), flat_float64(fy)
    nf = max(np.linalg.norm(fy), 1e-300)
    out = {"linear": float(np.linalg.norm(J @ y - fy) / nf)}
    Ay = 0.5 * (J @ y - J.T @ y)
    out["antisymmetric_part"] = float(np.linalg.norm(Ay) / nf)
    if basis is not None:
        if not basis.complete:
            raise ValueError("the eigen identity needs the complete basis (k = d)")
        sy = basis.shrink(y)
        out["sym_plus_antisym"] = float(np.linalg.norm(sy + Ay - fy) / nf)
        out["sym_only"] = float(np.linalg.norm(sy - fy) / nf)
    if svd is not None:
        out["svd"] = float(np.linalg.norm(svd.shrink(y) - fy) / nf)
    return out


def truncated_shrinkage_error(basis: AdaptiveBasis, y, fy, terms=None) -> np.ndarray:
    """||sum_{k<K} lambda_k <y,e_k> e_k - f(y)|| / ||f(y)|| for each K in ``terms``.

    How much of the denoised image the top-K shrinkage explains (works with a top-k basis).
    """
    y, fy = flat_float64(y), flat_float64(fy)
    terms = np.arange(1, basis.k + 1) if terms is None else np.asarray(terms)
    c = basis.eigenvectors.T @ y
    out_basis = basis.left if basis.left is not None else basis.eigenvectors
    partial = np.cumsum((out_basis * (basis.eigenvalues * c)).T, axis=0)  # (k, d)
    nf = max(np.linalg.norm(fy), 1e-300)
    return np.linalg.norm(partial[terms - 1] - fy, axis=1) / nf


def sure_mse(y, fy, trace: float, sigma: float) -> float:
    """Stein's unbiased risk estimate of the per-pixel MSE (paper eq. 7, App. D.3).

    MSE ~ ||y - f(y)||^2 / d + 2 sigma^2 tr(J) / d - sigma^2, unbiased over the noise when
    y = x + sigma z with z ~ N(0, I) (for one draw it is a noisy estimate of the true MSE).
    """
    y, fy = flat_float64(y), flat_float64(fy)
    d = y.size
    return float(np.sum((y - fy) ** 2) / d + 2.0 * sigma**2 * trace / d - sigma**2)


def oracle_error(basis, x, sigma: float, shrinkage=None) -> dict:
    """Fixed-basis oracle denoising error of a clean image ``x`` at noise ``sigma`` (paper eqs. 11-12).

    With coefficients c_k = <x, e_k> in the orthonormal basis (columns of ``basis``: an
    :class:`~gahb.analysis.adaptive_basis.AdaptiveBasis`, anything else with ``eigenvectors``, or a
    (d, k) array):

    * ``optimal`` = sum_k sigma^2 c_k^2 / (c_k^2 + sigma^2), the error of the best shrinkage
      lambda_k = c_k^2 / (c_k^2 + sigma^2) (eq. 11 minimised);
    * ``threshold_bound`` = sum_k min(c_k^2, sigma^2) = M sigma^2 + ||x - x_M||^2 (eq. 12), within a
      factor 2 of ``optimal``; ``M`` the number of c_k^2 > sigma^2;
    * ``given`` = sum_k (1 - lambda_k)^2 c_k^2 + lambda_k^2 sigma^2 for ``shrinkage`` lambda_k (e.g.
      the Jacobian's own eigenvalues), when given.

    If the basis is incomplete (k < d) the complement is treated as shrunk to zero: every total
    then includes ``residual_energy`` = ||x - QQ^T x||^2. All totals are also reported per pixel
    (suffix ``_per_pixel``, comparable with an MSE).
    """
    E = basis.eigenvectors if hasattr(basis, "eigenvectors") else to_float64(basis)
    x = flat_float64(x)
    d = x.size
    c2 = (E.T @ x) ** 2
    s2 = float(sigma) ** 2
    rest = float(max(np.sum(x**2) - np.sum(c2), 0.0)) if E.shape[1] < d else 0.0
    out = {
        "optimal": float(np.sum(s2 * c2 / (c2 + s2))) + rest,
        "threshold_bound": float(np.sum(np.minimum(c2, s2))) + rest,
        "M": int(np.sum(c2 > s2)),
        "residual_energy": rest,
    }
    if shrinkage is not None:
        lam = flat_float64(shrinkage)
        if lam.size != c2.size:
            raise ValueError(f"shrinkage has {lam.size} factors for {c2.size} basis vectors")
        out["given"] = float(np.sum((1 - lam) ** 2 * c2 + lam**2 * s2)) + rest
    for key in ("optimal", "threshold_bound", "given"):
        if key in out:
            out[key + "_per_pixel"] = out[key] / d
    return out


def psnr_from_mse(mse: float) -> float:
    """PSNR (dB) of a per-pixel MSE for images with peak value 1 (floored at MSE 1e-30)."""
    return 10.0 * math.log10(1.0 / max(mse, 1e-30))
