"""The adaptive basis of a denoiser Jacobian, and its one-call analysis on one image (paper section 3).

At a noisy image y the denoiser acts as f(y) = J(y) y (eq. 6). The eigenvectors e_k of the
symmetric part S = (J + J^T)/2, with eigenvalues lambda_k in descending order, form the adaptive
basis and its shrinkage factors: f(y) ~ sum_k lambda_k <y, e_k> e_k. For trained networks these
are geometry-adaptive harmonic bases (GAHBs, Fig 3): harmonics oscillating along the image's
contours and within its homogeneous regions. :class:`AdaptiveBasis` holds such a basis (or the SVD of J), built by
:func:`eigen_basis` and :func:`svd_basis` from a dense J or by :func:`basis_from_topk` from the
Lanczos top-k of :func:`~gahb.analysis.eigensolvers.topk_eigs`.

:func:`analyze_image` runs the whole analysis for each sigma: y = x + sigma z (one fixed z for all
sigma, so curves over sigma are smooth), then the adaptive basis of J(y) (dense eigendecomposition,
or top-k by Lanczos), its shrinkage factors, the coefficients <x, e_k> and <y, e_k>, the asymmetry
of J, the exact identities of eq. 6, the effective dimensionality tr J (eq. 7), SURE against the
true MSE, and the fixed-basis oracle error in the adaptive basis (eqs. 11-12), with the linear
algebra of :mod:`gahb.analysis.spectral`. This is what ``gahb jacobian`` runs and writes to JSON.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from gahb.analysis import spectral
from gahb.analysis.jacobian import JacobianOperator, jacobian, topk_eigs, trace_exact, trace_hutchinson
from gahb.analysis.spectral import asymmetry, flat_float64, to_float64
from gahb.models.base import as_single_image


# --------------------------------------------------------------------------------------------
# The basis


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
        return self.eigenvectors.T @ flat_float64(img)

    def images(self, which=None) -> np.ndarray:
        """Basis vectors reshaped to images, (k, C, H, W) (or the selected indices)."""
        E = self.eigenvectors if which is None else self.eigenvectors[:, list(which)]
        return E.T.reshape(-1, *self.shape)

    def shrink(self, y, terms: int | None = None) -> np.ndarray:
        """sum_{k < terms} lambda_k <y, e_k> e_k (for SVD: sum s_k <y, v_k> u_k), flat (d,)."""
        n = self.k if terms is None else min(terms, self.k)
        c = self.eigenvectors[:, :n].T @ flat_float64(y)
        out_basis = self.left if self.left is not None else self.eigenvectors
        return out_basis[:, :n] @ (self.eigenvalues[:n] * c)


def eigen_basis(J, shape: tuple | None = None, k: int | None = None) -> AdaptiveBasis:
    """Eigendecomposition of S = (J + J^T)/2 in float64, eigenvalues descending (paper Fig 3)."""
    J = to_float64(J)
    S = 0.5 * (J + J.T)
    w, V = np.linalg.eigh(S)
    order = np.argsort(w)[::-1]
    if k is not None:
        order = order[:k]
    return AdaptiveBasis(w[order], V[:, order], tuple(shape) if shape else (J.shape[0],), "eigh",
                         info={"asymmetry": asymmetry(J)})


def svd_basis(J, shape: tuple | None = None, k: int | None = None) -> AdaptiveBasis:
    """SVD J = U diag(s) V^T (float64); ``eigenvectors`` = V (input side), ``left`` = U."""
    J = to_float64(J)
    U, s, Vt = np.linalg.svd(J)
    n = len(s) if k is None else k
    return AdaptiveBasis(s[:n], Vt[:n].T, tuple(shape) if shape else (J.shape[0],), "svd", left=U[:, :n],
                         info={"asymmetry": asymmetry(J)})


def basis_from_topk(topk, shape: tuple) -> AdaptiveBasis:
    """Wrap a :class:`gahb.analysis.eigensolvers.TopK` result as an (incomplete) adaptive basis."""
    return AdaptiveBasis(np.asarray(topk.eigenvalues), np.asarray(topk.eigenvectors), tuple(shape), "lanczos",
                         info={"residuals": np.asarray(topk.residuals), "matvecs": topk.matvecs,
                               "converged": topk.converged})


# --------------------------------------------------------------------------------------------
# The analysis of one image over several noise levels


METHODS = ("dense", "topk")


@dataclass(frozen=True)
class JacobianAnalysisConfig:
    """Settings of :func:`analyze_image` (dumped beside every result).

    ``method="dense"`` forms J (d JVPs) and eigendecomposes S = (J + J^T)/2 in float64: every
    eigenvalue, exact trace, exact identities. ``method="topk"`` never forms J: the top ``k``
    eigenpairs by Lanczos to residual ``tol * lambda_1``, the trace by Hutchinson with ``probes``
    Rademacher probes (plain and deflated by the top-k), and exactly from the diagonal only if
    ``exact_trace`` (d more JVPs). ``svd`` adds the SVD of J (dense only).
    """

    sigmas: list = field(default_factory=lambda: [0.05, 0.1, 0.2])
    method: str = "dense"
    k: int = 32
    tol: float = 1e-5
    block: int = 2  # see topk_eigs: a pair of vectors per product is faster on CPU
    guard: int = 2  # see topk_eigs: extra Ritz pairs that must converge, against missed eigenvalues
    probes: int = 64
    exact_trace: bool | None = None
    svd: bool = False
    chunk: int = 16
    backend: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        object.__setattr__(self, "sigmas", [float(s) for s in self.sigmas])
        if not self.sigmas or any(not (s > 0 and math.isfinite(s)) for s in self.sigmas):
            raise ValueError(f"sigmas must be positive finite numbers, got {self.sigmas}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.probes < 2:
            raise ValueError(f"probes must be >= 2, got {self.probes}")
        if self.block < 1 or self.guard < 0:
            raise ValueError(f"block must be >= 1 and guard >= 0, got block={self.block}, guard={self.guard}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SigmaAnalysis:
    """Everything measured at one noise level. ``numbers`` is JSON-able; arrays are float64."""

    sigma: float
    x: np.ndarray
    y: np.ndarray
    fy: np.ndarray
    basis: AdaptiveBasis
    coef_x: np.ndarray
    coef_y: np.ndarray
    numbers: dict


@dataclass
class ImageAnalysis:
    config: JacobianAnalysisConfig
    shape: tuple
    results: list

    def summary(self) -> dict:
        return {"config": self.config.to_dict(), "image_shape": list(self.shape),
                "results": [r.numbers for r in self.results]}

    def effective_dimension(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sigmas, tr J, standard error) over the analysed noise levels."""
        s = np.array([r.sigma for r in self.results])
        t = np.array([r.numbers["trace"]["effective_dimension"] for r in self.results])
        e = np.array([r.numbers["trace"]["effective_dimension_stderr"] for r in self.results])
        return s, t, e


def _asymmetry_estimate(op: JacobianOperator, probes: int, seed: int) -> float:
    """sqrt(sum ||(J - J^T) v||^2 / sum ||J v||^2) over Rademacher probes: ||J - J^T||_F / ||J||_F
    in expectation of the numerator and denominator separately (E||M v||^2 = ||M||_F^2)."""
    g = torch.Generator().manual_seed(seed + 1)
    V = torch.randint(0, 2, (probes, op.d), generator=g).double() * 2 - 1
    JV, JtV = op.jvp(V), op.vjp(V)
    return float(((JV - JtV) ** 2).sum().sqrt() / (JV**2).sum().sqrt().clamp_min(1e-300))


def analyze_sigma(denoiser: nn.Module, x: torch.Tensor, sigma: float, cfg: JacobianAnalysisConfig,
                  noise: torch.Tensor | None = None, progress: bool = False) -> SigmaAnalysis:
    """Analyse J at y = x + sigma * noise (noise ~ N(0, I) drawn from ``cfg.seed`` when not given)."""
    x = x.detach().reshape(1, *x.shape[-3:]).double()
    if noise is None:
        g = torch.Generator().manual_seed(cfg.seed)
        noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
    y = x + sigma * noise.reshape(x.shape).double()
    t0 = time.perf_counter()
    op = JacobianOperator(denoiser, y, backend=cfg.backend, chunk=cfg.chunk)
    d, shape = op.d, op.shape
    xf, yf, fy = x.reshape(-1).numpy(), y.reshape(-1).numpy(), op.fy.numpy()
    mse = float(np.mean((fy - xf) ** 2))
    num: dict = {"sigma": sigma, "method": cfg.method, "backend": op.backend, "d": d,
                 "input_psnr": spectral.psnr_from_mse(sigma**2),
                 "output_psnr": spectral.psnr_from_mse(mse), "mse_true": mse}
    # Exact for any J: f(y) - J y, and the antisymmetric part A y = (J y - J^T y) / 2 at y.
    Jy, Jty = op.jvp(y.reshape(1, -1))[0].numpy(), op.vjp(y.reshape(1, -1))[0].numpy()
    nf = max(np.linalg.norm(fy), 1e-300)
    identities = {"linear": float(np.linalg.norm(Jy - fy) / nf),
                  "antisymmetric_part": float(np.linalg.norm(0.5 * (Jy - Jty)) / nf)}
    trace: dict = {}
    if cfg.method == "dense":
        J = jacobian(op, progress=progress)
        basis = eigen_basis(J, shape)
        svd = svd_basis(J, shape) if cfg.svd else None
        num["asymmetry"] = basis.info["asymmetry"]
        num["asymmetry_method"] = "exact"
        identities.update(spectral.identity_residuals(J, yf, fy, basis, svd))
        if svd is not None:
            num["singular_values"] = svd.eigenvalues
        trace["exact"] = float(torch.trace(J))
        del J
    else:
        top = topk_eigs(op, cfg.k, tol=cfg.tol, block=cfg.block, guard=cfg.guard, seed=cfg.seed,
                        progress=progress)
        basis = basis_from_topk(top, shape)
        num["asymmetry"] = _asymmetry_estimate(op, cfg.probes, cfg.seed)
        num["asymmetry_method"] = f"estimated from {cfg.probes} Rademacher probes"
        num["lanczos"] = {"matvecs": top.matvecs, "converged": top.converged, "tol": top.tol,
                          "max_residual": float(top.residuals.max()), "seconds": top.seconds, **top.info}
        identities[f"shrinkage_top{basis.k}"] = float(spectral.truncated_shrinkage_error(basis, yf, fy, [basis.k])[0])
        if cfg.exact_trace:
            trace["exact"] = trace_exact(op, progress=progress).value
        hd = trace_hutchinson(op, cfg.probes, seed=cfg.seed, deflate=basis.eigenvectors,
                              deflate_values=basis.eigenvalues)
        trace["hutchinson_deflated"] = hd.to_dict()
    h = trace_hutchinson(op, cfg.probes, seed=cfg.seed)
    trace["hutchinson"] = h.to_dict()
    if "exact" in trace:
        trace["effective_dimension"], trace["effective_dimension_stderr"] = trace["exact"], 0.0
    else:
        best = min((trace["hutchinson"], trace["hutchinson_deflated"]), key=lambda t: t["stderr"])
        trace["effective_dimension"], trace["effective_dimension_stderr"] = best["value"], best["stderr"]
    num["trace"] = trace
    num["identities"] = identities
    sure = spectral.sure_mse(yf, fy, trace["effective_dimension"], sigma)
    num["sure"] = {"mse_sure": sure, "mse_true": mse, "difference": sure - mse,
                   "psnr_sure": spectral.psnr_from_mse(sure) if sure > 0 else None,
                   "trace_stderr_contribution": 2 * sigma**2 * trace["effective_dimension_stderr"] / d,
                   # SURE is unbiased over noise draws but one draw fluctuates: its term
                   # sigma^2 (||z||^2/d - 1) alone has this standard deviation.
                   "single_draw_sd": sigma**2 * math.sqrt(2.0 / d)}
    coef_x, coef_y = basis.coefficients(xf), basis.coefficients(yf)
    num["eigenvalues"] = basis.eigenvalues
    num["oracle"] = spectral.oracle_error(basis, xf, sigma,
                                          shrinkage=basis.eigenvalues if basis.complete else None)
    num["seconds"] = time.perf_counter() - t0
    op.release()
    return SigmaAnalysis(sigma, xf, yf, fy, basis, coef_x, coef_y, num)


def spectrum_statistics(r: SigmaAnalysis) -> dict:
    """What compares the Jacobians of different networks and images at one sigma (JSON-able):
    ``asymmetry`` ||J - J^T||_F / ||J||_F, the extreme eigenvalues of (J + J^T)/2, how many are
    negative or above 1, tr J (eq. 7), the residual of f(y) = J y (eq. 6), input and output PSNR."""
    lam = r.basis.eigenvalues
    return {"sigma": r.sigma, "asymmetry": r.numbers["asymmetry"],
            "lambda_max": float(lam[0]), "lambda_min": float(lam[-1]),
            "negative_eigenvalues": int((lam < 0).sum()), "eigenvalues_above_1": int((lam > 1).sum()),
            "eigenvalues_top8": [float(v) for v in lam[:8]],
            "trace": r.numbers["trace"]["effective_dimension"],
            "identity_linear": r.numbers["identities"]["linear"],
            "input_psnr": r.numbers["input_psnr"], "output_psnr": r.numbers["output_psnr"]}


def analyze_image(denoiser: nn.Module, x: torch.Tensor, cfg: JacobianAnalysisConfig | None = None,
                  progress: bool = False) -> ImageAnalysis:
    """:func:`analyze_sigma` for every ``cfg.sigmas`` with one shared noise draw (seeded by ``cfg.seed``)."""
    from tqdm.auto import tqdm

    cfg = cfg or JacobianAnalysisConfig()
    x = as_single_image(x, "x (one clean image)")
    g = torch.Generator().manual_seed(cfg.seed)
    noise = torch.randn((1, *x.shape), generator=g, dtype=torch.float64)
    results = [analyze_sigma(denoiser, x, s, cfg, noise, progress)
               for s in tqdm(cfg.sigmas, desc="sigma", disable=not progress, leave=False)]
    return ImageAnalysis(cfg, tuple(x.shape), results)


def effective_dimension_curve(denoiser: nn.Module, x: torch.Tensor, sigmas, *, exact: bool = False,
                              probes: int = 64, seed: int = 0, chunk: int = 16, backend: str = "auto") -> list[dict]:
    """tr J(y) against sigma without any eigendecomposition, with SURE (eq. 7) and the true MSE.

    ``exact`` sums the diagonal (d JVPs per sigma), otherwise Hutchinson with ``probes`` Rademacher
    probes (reported with its standard error). One noise draw z (seeded) is shared by all sigma.
    Returns one dict per sigma: sigma, trace, trace_stderr, mse_true, mse_sure, output_psnr.
    """
    x = torch.as_tensor(x).detach().double()
    x = x.reshape(1, *x.shape[-3:])
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out = []
    for s in sigmas:
        y = x + float(s) * z
        op = JacobianOperator(denoiser, y, backend=backend, chunk=chunk)
        t = trace_exact(op) if exact else trace_hutchinson(op, probes, seed=seed)
        yf, fy = y.reshape(-1).numpy(), op.fy.numpy()
        mse = float(np.mean((fy - x.reshape(-1).numpy()) ** 2))
        out.append({"sigma": float(s), "trace": t.value, "trace_stderr": t.stderr, "trace_method": t.method,
                    "mse_true": mse, "mse_sure": spectral.sure_mse(yf, fy, t.value, float(s)),
                    "output_psnr": spectral.psnr_from_mse(mse)})
        op.release()
    return out


def save_arrays(analysis: ImageAnalysis, path, max_vectors: int | None = None) -> None:
    """Eigenvalues, coefficients and (the first ``max_vectors``) eigenvectors per sigma, as one npz."""
    from gahb.utils.io import _atomic

    arrays = {}
    for r in analysis.results:
        tag = f"sigma{r.sigma:g}"
        n = r.basis.k if max_vectors is None else min(max_vectors, r.basis.k)
        arrays[f"{tag}/eigenvalues"] = r.basis.eigenvalues
        arrays[f"{tag}/eigenvectors"] = r.basis.eigenvectors[:, :n].T.reshape(n, *r.basis.shape).astype(np.float32)
        arrays[f"{tag}/coef_x"] = r.coef_x
        arrays[f"{tag}/coef_y"] = r.coef_y
        arrays[f"{tag}/noisy"] = r.y.reshape(r.basis.shape)
        arrays[f"{tag}/denoised"] = r.fy.reshape(r.basis.shape)
    arrays["clean"] = analysis.results[0].x.reshape(analysis.results[0].basis.shape)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    _atomic(path, write)
