"""Matrix-free top-k eigensolvers and trace estimators for a linear operator on R^d (paper section 3, eq. 7).

Nothing here knows about networks. The solvers take a linear operator J through batched
products on rows -- an object with ``d`` and ``jvp``/``vjp``/``sym`` (:class:`RowOperator`, e.g.
:class:`gahb.analysis.jacobian.JacobianOperator`), a dense matrix, or a callable mapping (B, d)
rows to rows -- and never form J:

* :func:`topk_eigs`: the largest eigenpairs of the symmetric part S = (J + J^T)/2, whose
  eigenvectors are the adaptive basis and whose eigenvalues are the shrinkage factors of paper
  eq. 6 (Fig 3), by block Lanczos or ARPACK;
* :func:`trace_exact` and :func:`trace_hutchinson`: tr J, the effective dimensionality of the
  denoiser that enters SURE (paper eq. 7, App. D).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import torch


class RowOperator(Protocol):
    """A linear map J on R^d applied to batches of row vectors (B, d), returned on the CPU.

    ``jvp`` gives the rows J v_b, ``vjp`` the rows J^T u_b and ``sym`` the rows S v_b with
    S = (J + J^T)/2. :func:`trace_exact` also reads ``chunk`` (basis vectors per product) and
    the ``dtype``/``device`` its basis vectors are built in.
    """

    d: int
    chunk: int
    dtype: torch.dtype
    device: torch.device

    def jvp(self, V: torch.Tensor) -> torch.Tensor: ...

    def vjp(self, U: torch.Tensor) -> torch.Tensor: ...

    def sym(self, V: torch.Tensor) -> torch.Tensor: ...


def _is_row_operator(op) -> bool:
    return hasattr(op, "sym") and hasattr(op, "d")


def _progress(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not progress, leave=False)


# --------------------------------------------------------------------------------------------
# Top-k eigenpairs of S = (J + J^T)/2


@dataclass
class TopK:
    """Top-k eigenpairs of the symmetric part S of the Jacobian, from :func:`topk_eigs`.

    ``eigenvalues`` (k,) descending, ``eigenvectors`` (d, k) orthonormal columns (float64),
    ``residuals`` (k,) explicit ||S e - lambda e|| of each pair, ``matvecs`` vectors pushed through
    S, ``converged`` whether every residual met ``tol * |lambda_1|``.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    residuals: np.ndarray
    matvecs: int
    converged: bool
    seconds: float
    method: str
    tol: float
    info: dict = field(default_factory=dict)


def _sym_matmat(op) -> Callable[[torch.Tensor], torch.Tensor]:
    """(B, d) float64 CPU tensor -> (B, d) rows S v, for a :class:`RowOperator`, a matrix or a callable.

    The Lanczos bookkeeping runs in torch, not NumPy: interleaving NumPy's BLAS thread pool with
    torch's OpenMP pool makes both spin for the same cores and slowed each product ~2-3x on CPU.
    """
    if _is_row_operator(op):
        return op.sym
    if isinstance(op, (np.ndarray, torch.Tensor)):
        M = torch.as_tensor(np.asarray(op, dtype=np.float64))
        M = 0.5 * (M + M.T)
        return lambda X: X @ M  # M symmetric: rows of (M X^T)^T
    if callable(op):
        return lambda X: torch.as_tensor(np.asarray(op(X.numpy()), dtype=np.float64))
    raise TypeError("op must be a JacobianOperator (or another object with sym and d), a square matrix "
                    "or a callable on (B, d) arrays")


def topk_eigs(op, k: int = 32, *, tol: float = 1e-5, method: str = "lanczos", block: int = 2,
              guard: int = 2, max_basis: int | None = None, max_matvecs: int | None = None,
              v0: np.ndarray | None = None, seed: int = 0, d: int | None = None,
              progress: bool = False) -> TopK:
    """Largest-k eigenpairs of S = (J + J^T)/2 by block Lanczos or ARPACK, without forming J.

    They are the top of the adaptive basis and its shrinkage factors (paper eq. 6, Fig 3).

    ``method="lanczos"`` (default): block Lanczos (``block`` vectors per step; 1 = classical) with
    full reorthogonalisation in float64 and thick restarts when the basis reaches ``max_basis``.
    The default block of 2 needs ~5% more products than 1 but a pair of vectors costs ~10% less
    per vector than one on a 2-core CPU; it was faster in every ``benchmarks/bench_jacobian.py``
    run there. A GPU, where a pass barely costs more for more vectors, should get a larger block.
    Every product S v is kept, so Ritz pairs come from an explicit Rayleigh-Ritz projection and
    their residuals ||S e - theta e|| are exact (no extra products, no reliance on the
    three-term recurrence staying accurate in float32). It stops when every one of the top
    ``k + guard`` residuals is at most ``tol * |theta_1|``; for a symmetric matrix each Ritz value
    is then within that residual of an eigenvalue (and typically within residual^2 / gap).

    Why ``guard``: no residual can show an eigenvalue the Krylov space has not picked up yet. In a
    dense spectrum, Lanczos can stop with its k-th Ritz value converged to lambda_{k+1} while
    lambda_k is still missing (the answer is then off by a whole gap). With k = 32 this happened in
    3 of 20 random starts on the Jacobian of a Fashion-MNIST UNet at 40x40 (errors ~9e-3); also
    requiring the next 2 Ritz values to converge removed every miss for 2-10% more products.
    It lowers the odds; no Krylov method can rule a miss out. (``method="lanczos"`` only.)

    ``method="arpack"``: ``scipy.sparse.linalg.eigsh`` (implicitly restarted Lanczos) on the same
    operator with ``tol`` passed through, for comparison.

    ``op`` is a :class:`RowOperator` (a :class:`~gahb.analysis.jacobian.JacobianOperator`), a dense
    (d, d) matrix (symmetrised here), or a callable mapping (B, d) float64 rows to the rows S v
    (then pass ``d``).
    """
    if _is_row_operator(op):
        d = op.d
    elif isinstance(op, (np.ndarray, torch.Tensor)):
        d = op.shape[0]
    elif d is None:
        raise ValueError("pass d when op is a callable")
    if not 1 <= k < d:
        raise ValueError(f"k must be in [1, d-1] = [1, {d - 1}], got {k}")
    if guard < 0:
        raise ValueError(f"guard must be >= 0, got {guard}")
    guard = min(guard, d - 1 - k)
    matmat = _sym_matmat(op)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    if method == "arpack":
        from scipy.sparse.linalg import LinearOperator, eigsh

        count = [0]

        def mv(x):
            count[0] += 1
            return matmat(torch.from_numpy(np.asarray(x, dtype=np.float64).reshape(1, d)))[0].numpy()

        lo = LinearOperator((d, d), matvec=mv, dtype=np.float64)
        start = v0 if v0 is not None else rng.standard_normal(d)
        ncv = min(d, max(2 * k + 1, 3 * k))
        w, V = eigsh(lo, k=k, which="LA", tol=tol, v0=start, ncv=ncv)
        order = np.argsort(w)[::-1]
        w, V = w[order], V[:, order]
        R = matmat(torch.from_numpy(np.ascontiguousarray(V.T))).numpy().T - V * w
        res = np.linalg.norm(R, axis=0)
        count[0] += k  # the explicit residual check above
        return TopK(w, V, res, count[0], bool(np.all(res <= 10 * tol * abs(w[0]) + 1e-12)),
                    time.perf_counter() - t0, "arpack", tol, {"ncv": ncv})
    if method != "lanczos":
        raise ValueError(f"method must be 'lanczos' or 'arpack', got {method!r}")
    return _block_lanczos(matmat, d, k, guard, tol, block, max_basis, max_matvecs, v0, rng, t0, progress)


def _orthonormalize(X: torch.Tensor, V: torch.Tensor | None, rng: np.random.Generator) -> torch.Tensor:
    """Rows of X made orthonormal and orthogonal to the rows of V (two Gram-Schmidt passes)."""
    for _ in range(2):
        if V is not None and V.shape[0]:
            X = X - (X @ V.T) @ V
        Q, R = torch.linalg.qr(X.T)
        X = Q.T
    # A rank-deficient block (invariant subspace found): refill those directions at random.
    diag = torch.diagonal(R).abs()
    small = diag < 1e-10 * max(1.0, float(diag.max()))
    if bool(small.any()):
        Z = torch.from_numpy(rng.standard_normal((int(small.sum()), X.shape[1])))
        if V is not None and V.shape[0]:
            Z = Z - (Z @ V.T) @ V
        keep = X[~small]
        Z = Z - (Z @ keep.T) @ keep
        Z = torch.linalg.qr(Z.T)[0].T
        X = torch.cat([keep, Z])
    return X.contiguous()


def _block_lanczos(matmat, d, k_out, guard, tol, b, max_basis, max_matvecs, v0, rng, t0, progress) -> TopK:
    """Block Lanczos with full reorthogonalisation and thick restarts (Golub & Underwood 1977; Wu & Simon 2000)."""
    if b < 1:
        raise ValueError(f"block must be >= 1, got {b}")
    k = k_out + guard  # Ritz pairs that must converge; the top k_out are returned
    if max_basis is None:
        max_basis = min(d, max(6 * k + 10 * b, 120))
    max_basis = min(d, max(max_basis, k + 2 * b))
    if max_matvecs is None:
        max_matvecs = max(20 * max_basis, 4 * d)
    f64 = torch.float64
    start = rng.standard_normal((b, d))
    if v0 is not None:
        start[0] = np.asarray(v0, dtype=np.float64).reshape(-1)
    X = _orthonormalize(torch.from_numpy(start), None, rng)
    cap = max_basis + b
    Vbuf = torch.zeros((cap, d), dtype=f64)  # orthonormal basis rows V[:m]
    Wbuf = torch.zeros((cap, d), dtype=f64)  # W[:m] = rows of S V
    H = torch.zeros((cap, cap), dtype=f64)   # H[:m, :m] = V S V^T
    m = 0
    matvecs, restarts, checks = 0, 0, 0
    t_products = 0.0
    theta = s = None
    res, scale = torch.tensor([float("inf")]), 1.0
    converged = False
    next_check = k
    bar = _progress(max_matvecs, "Lanczos", progress)
    while True:
        tp = time.perf_counter()
        SX = matmat(X).to(f64)
        t_products += time.perf_counter() - tp
        nb = X.shape[0]
        matvecs += nb
        bar.update(nb)
        V = Vbuf[:m]
        top = V @ SX.T
        H[:m, m:m + nb] = top
        H[m:m + nb, :m] = top.T
        blk = X @ SX.T
        H[m:m + nb, m:m + nb] = 0.5 * (blk + blk.T)
        Vbuf[m:m + nb], Wbuf[m:m + nb] = X, SX
        m += nb
        V, W = Vbuf[:m], Wbuf[:m]
        full = m + b > max_basis or matvecs >= max_matvecs or m >= d
        if m >= k and (m >= next_check or full):
            checks += 1
            theta, s = torch.linalg.eigh(H[:m, :m])
            theta, s = theta.flip(0), s.flip(1)  # descending
            Sk = s[:, :k]
            R = Sk.T @ W - theta[:k, None] * (Sk.T @ V)
            res = torch.linalg.norm(R, dim=1)
            scale = max(abs(float(theta[0])), 1e-300)
            worst = float(res.max()) / scale
            bar.set_postfix(res=f"{worst:.1e}")
            if worst <= tol:
                converged = True
                break
            if matvecs >= max_matvecs or m >= d:
                break
            # Checks are cheap but not free (an m x m eigh): space them ~5% of the basis apart
            # until the residuals are within a decade of the target, then check every block.
            next_check = m + (b if worst < 10 * tol else max(b, 4, int(0.05 * m)))
            if m + b > max_basis:
                # Thick restart: keep the best Ritz vectors; the new block (orthogonal to the
                # whole old basis) continues the Krylov expansion.
                keep = max(k + b, min(m - 2 * b, (max_basis + k) // 2))
                nextX = _orthonormalize(SX - (SX @ V.T) @ V, V, rng)
                newV, newW = s[:, :keep].T @ V, s[:, :keep].T @ W
                Vbuf[:keep], Wbuf[:keep] = newV, newW
                H.zero_()
                H[torch.arange(keep), torch.arange(keep)] = theta[:keep]
                m = keep
                restarts += 1
                X = nextX
                continue
        X = _orthonormalize(SX, V, rng)
        if m + X.shape[0] > d:
            X = X[: d - m]
    bar.close()
    if theta is None:  # pragma: no cover - guarded by the loop condition
        raise RuntimeError("Lanczos stopped before k Ritz values were available")
    V = Vbuf[:m]
    E0 = V.T @ s[:, :k_out]
    # Re-orthonormalise against float drift (changes nothing measurable when converged).
    E = torch.linalg.qr(E0)[0]
    E = E * torch.sign((E * E0).sum(0))
    res = res.numpy()
    if not converged:
        warnings.warn(
            f"Lanczos did not reach tol={tol:g} within {matvecs} products (max residual "
            f"{res.max() / scale:.2e} relative); the float32 network may limit accuracy near 1e-6",
            RuntimeWarning, stacklevel=3)
    return TopK(theta[:k_out].numpy().copy(), E.numpy(), res[:k_out], matvecs, converged, time.perf_counter() - t0,
                "lanczos", tol, {"block": b, "guard": guard, "max_basis": max_basis, "restarts": restarts,
                                 "checks": checks, "product_seconds": t_products})


# --------------------------------------------------------------------------------------------
# tr J, the effective dimensionality of paper eq. 7


@dataclass
class TraceEstimate:
    """tr J, the effective dimensionality (paper eq. 7): ``value`` with ``stderr`` (0 when exact)."""

    value: float
    stderr: float
    probes: int
    method: str
    seconds: float
    samples: np.ndarray | None = None

    def to_dict(self) -> dict:
        return {"value": self.value, "stderr": self.stderr, "probes": self.probes, "method": self.method,
                "seconds": self.seconds}


def trace_exact(op: RowOperator, progress: bool = False) -> TraceEstimate:
    """Exact trace from the diagonal: tr J = sum_i (J e_i)_i from d basis-vector JVPs in chunks, never J."""
    t0 = time.perf_counter()
    d, step = op.d, op.chunk
    total = 0.0
    with _progress(d, "trace (exact)", progress) as bar:
        for lo in range(0, d, step):
            hi = min(d, lo + step)
            idx = torch.arange(hi - lo)
            E = torch.zeros((hi - lo, d), dtype=op.dtype, device=op.device)
            E[idx, lo + idx] = 1.0
            cols = op.jvp(E)
            total += float(cols[idx, lo + idx].double().sum())
            bar.update(hi - lo)
    return TraceEstimate(total, 0.0, d, "exact", time.perf_counter() - t0)


def trace_hutchinson(op: RowOperator, probes: int = 64, seed: int = 0,
                     deflate: np.ndarray | None = None, deflate_values: np.ndarray | None = None) -> TraceEstimate:
    """Hutchinson's stochastic trace estimator (Hutchinson 1990), optionally deflated (Meyer et al. 2021).

    tr J ~ mean_p v_p^T J v_p over Rademacher probes v_p (one JVP each).

    Unbiased; the reported standard error is the sample standard deviation over sqrt(probes).
    For Rademacher probes Var(v^T J v) = 2 (||S||_F^2 - sum_i S_ii^2) with S = (J + J^T)/2.

    ``deflate`` (d, k) orthonormal columns Q, e.g. Lanczos eigenvectors (with their Ritz values
    ``deflate_values``, else k extra products give Q^T S Q), splits tr J = tr(Q^T S Q) +
    tr(P J P) with P = I - QQ^T and estimates only the second part: far less variance when Q spans
    the large eigenvalues (the idea of Hutch++, Meyer et al. 2021).
    """
    if probes < 2:
        raise ValueError(f"probes must be >= 2 to report a standard error, got {probes}")
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    Vp = (torch.randint(0, 2, (probes, op.d), generator=g).double() * 2.0 - 1.0)
    exact_part = 0.0
    if deflate is not None:
        Q = torch.as_tensor(np.asarray(deflate, dtype=np.float64))
        if deflate_values is not None:
            exact_part = float(np.sum(deflate_values))
        else:
            exact_part = float((op.sym(Q.T) * Q.T).sum())
        Vp = Vp - (Vp @ Q) @ Q.T
    JV = op.jvp(Vp)
    samples = (JV * Vp).sum(1).numpy() + exact_part
    value = float(samples.mean())
    stderr = float(samples.std(ddof=1) / math.sqrt(probes))
    return TraceEstimate(value, stderr, probes, "hutchinson" + ("-deflated" if deflate is not None else ""),
                         time.perf_counter() - t0, samples)
