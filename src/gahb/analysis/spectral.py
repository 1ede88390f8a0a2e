"""Geometry-adaptive harmonic bases: eigen-analysis of a denoiser Jacobian (paper section 3; spec 7).

Given the Jacobian J of a denoiser at a noisy image y (dense from
:func:`gahb.analysis.jacobian.jacobian` or top-k from :func:`~gahb.analysis.jacobian.topk_eigs`):

* the adaptive basis: eigenvectors e_k of the symmetric part S = (J + J^T)/2 with eigenvalues
  lambda_k sorted in descending order, the shrinkage factors of paper eq. 6 (or the SVD of J);
* what is exactly true and what is not. For a bias-free network f(y) = J y exactly (eq. 6). The
  paper writes J y = sum_k lambda_k <y, e_k> e_k *assuming* J symmetric; for the real, slightly
  asymmetric J the exact statements are

      f(y) = sum_k lambda_k <y, e_k> e_k + A y,   A = (J - J^T)/2     (eigenbasis of S)
      f(y) = sum_k s_k <y, v_k> u_k                                  (SVD J = U diag(s) V^T)

  and ||A y|| / ||f(y)|| is the gap the symmetric shrinkage picture leaves (:func:`identity_residuals`);
* SURE (eq. 7), the fixed-basis oracle (eq. 11) and its thresholding bound (eq. 12).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch


def _np(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def _flat(a) -> np.ndarray:
    return _np(a).reshape(-1)


@dataclass
class AdaptiveBasis:
    """An (adaptive) orthonormal basis with its shrinkage factors.

    ``eigenvalues`` (k,) descending; ``eigenvectors`` (d, k) orthonormal columns e_k; ``shape``
    the image shape (C, H, W) to reshape columns. For ``method="svd"``, ``eigenvalues`` are the
    singular values s_k, ``eigenvectors`` the right singular vectors v_k and ``left`` the u_k.
    ``complete`` is True when the k vectors span the whole space (k = d).
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    shape: tuple
    method: str = "eigh"
    left: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return self.eigenvalues.shape[0]

    @property
    def d(self) -> int:
        return self.eigenvectors.shape[0]

    @property
    def complete(self) -> bool:
        return self.k == self.d

    def coefficients(self, img) -> np.ndarray:
        """<img, e_k> for every basis vector (k,)."""
        return self.eigenvectors.T @ _flat(img)

    def images(self, which=None) -> np.ndarray:
        """Basis vectors reshaped to images, (k, C, H, W) (or the selected indices)."""
        E = self.eigenvectors if which is None else self.eigenvectors[:, list(which)]
        return E.T.reshape(-1, *self.shape)

    def shrink(self, y, terms: int | None = None) -> np.ndarray:
        """sum_{k < terms} lambda_k <y, e_k> e_k (for SVD: sum s_k <y, v_k> u_k), flat (d,)."""
        n = self.k if terms is None else min(terms, self.k)
        c = self.eigenvectors[:, :n].T @ _flat(y)
        out_basis = self.left if self.left is not None else self.eigenvectors
        return out_basis[:, :n] @ (self.eigenvalues[:n] * c)


def asymmetry(J) -> float:
    """||J - J^T||_F / ||J||_F (0 for a symmetric Jacobian; small for trained denoisers)."""
    J = _np(J)
    return float(np.linalg.norm(J - J.T) / max(np.linalg.norm(J), 1e-300))


def eigen_basis(J, shape: tuple | None = None, k: int | None = None) -> AdaptiveBasis:
    """Eigendecomposition of S = (J + J^T)/2 in float64, eigenvalues descending (paper Fig 3)."""
    J = _np(J)
    S = 0.5 * (J + J.T)
    w, V = np.linalg.eigh(S)
    order = np.argsort(w)[::-1]
    if k is not None:
        order = order[:k]
    return AdaptiveBasis(w[order], V[:, order], tuple(shape) if shape else (J.shape[0],), "eigh",
                         info={"asymmetry": asymmetry(J)})


def svd_basis(J, shape: tuple | None = None, k: int | None = None) -> AdaptiveBasis:
    """SVD J = U diag(s) V^T (float64); ``eigenvectors`` = V (input side), ``left`` = U."""
    J = _np(J)
    U, s, Vt = np.linalg.svd(J)
    n = len(s) if k is None else k
    return AdaptiveBasis(s[:n], Vt[:n].T, tuple(shape) if shape else (J.shape[0],), "svd", left=U[:, :n],
                         info={"asymmetry": asymmetry(J)})


def basis_from_topk(topk, shape: tuple) -> AdaptiveBasis:
    """Wrap a :class:`gahb.analysis.jacobian.TopK` result as an (incomplete) adaptive basis."""
    return AdaptiveBasis(np.asarray(topk.eigenvalues), np.asarray(topk.eigenvectors), tuple(shape), "lanczos",
                         info={"residuals": np.asarray(topk.residuals), "matvecs": topk.matvecs,
                               "converged": topk.converged})


def identity_residuals(J, y, fy, basis: AdaptiveBasis | None = None, svd: AdaptiveBasis | None = None) -> dict:
    """Relative residuals of the identities of paper eq. 6 (each divided by ||f(y)||).

    * ``linear``: ||J y - f(y)|| (exact for bias-free networks);
    * ``sym_plus_antisym``: ||sum_k lambda_k <y,e_k> e_k + A y - f(y)|| with the complete
      eigenbasis of S and A = (J - J^T)/2 (exact);
    * ``sym_only``: ||sum_k lambda_k <y,e_k> e_k - f(y)|| = ||A y|| (the asymmetry gap, not an
      error of the computation);
    * ``svd``: ||sum_k s_k <y,v_k> u_k - f(y)|| (exact).
    """
    J, y, fy = _np(J), _flat(y), _flat(fy)
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
    y, fy = _flat(y), _flat(fy)
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
    y, fy = _flat(y), _flat(fy)
    d = y.size
    return float(np.sum((y - fy) ** 2) / d + 2.0 * sigma**2 * trace / d - sigma**2)


def oracle_error(basis, x, sigma: float, shrinkage=None) -> dict:
    """Fixed-basis oracle denoising error of a clean image ``x`` at noise ``sigma`` (paper eqs. 11-12).

    With coefficients c_k = <x, e_k> in the orthonormal basis (columns of ``basis``, an
    :class:`AdaptiveBasis` or a (d, k) array):

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
    E = basis.eigenvectors if isinstance(basis, AdaptiveBasis) else _np(basis)
    x = _flat(x)
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
        lam = _flat(shrinkage)
        if lam.size != c2.size:
            raise ValueError(f"shrinkage has {lam.size} factors for {c2.size} basis vectors")
        out["given"] = float(np.sum((1 - lam) ** 2 * c2 + lam**2 * s2)) + rest
    for key in ("optimal", "threshold_bound", "given"):
        if key in out:
            out[key + "_per_pixel"] = out[key] / d
    return out


def psnr_from_mse(mse: float) -> float:
    return 10.0 * math.log10(1.0 / max(mse, 1e-30))
