"""Matrix-free Jacobian analysis: Lanczos top-k, exact and Hutchinson traces."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import make_tiny
from gahb.analysis.adaptive_basis import eigen_basis
from gahb.analysis.eigensolvers import topk_eigs, trace_exact, trace_hutchinson
from gahb.analysis.jacobian import JacobianOperator, jacobian


@pytest.fixture(scope="module")
def net_op():
    model = make_tiny("unet", seed=5)
    g = torch.Generator().manual_seed(6)
    y = torch.rand((1, 1, 12, 12), generator=g) + 0.2 * torch.randn((1, 1, 12, 12), generator=g)
    op = JacobianOperator(model, y, chunk=16)
    J = jacobian(op)
    return op, J


@pytest.mark.parametrize("method,block", [("lanczos", 1), ("lanczos", 4), ("arpack", 1)])
def test_topk_matches_dense(net_op, method, block):
    op, J = net_op
    k = 10
    dense = eigen_basis(J, op.shape)
    res = topk_eigs(op, k, tol=1e-6, method=method, block=block, seed=1)
    assert res.converged
    assert res.matvecs < op.d  # cheaper than forming J (d products)
    lam = dense.eigenvalues[:k]
    assert np.allclose(res.eigenvalues, lam, rtol=1e-5, atol=1e-5 * abs(lam[0]))
    E = res.eigenvectors
    assert np.allclose(E.T @ E, np.eye(k), atol=1e-8)
    # Eigenvectors: well-separated ones match up to sign; all lie in the dense top-k subspace.
    gaps = np.minimum(np.abs(np.diff(dense.eigenvalues[:k + 1]))[:k],
                      np.r_[np.inf, np.abs(np.diff(dense.eigenvalues[:k]))])
    Ed = dense.eigenvectors[:, :k]
    for i in np.where(gaps > 1e-2 * abs(lam[0]))[0]:
        assert abs(E[:, i] @ Ed[:, i]) > 1 - 1e-4
    # Explicit residuals are honest: recompute them with the dense symmetric part.
    S = 0.5 * (J + J.T).numpy()
    assert np.allclose(np.linalg.norm(S @ E - E * res.eigenvalues, axis=0), res.residuals,
                       atol=1e-5 * abs(lam[0]))


def test_topk_on_a_known_matrix_exactly():
    d, k = 200, 12
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    lam = np.sort(np.r_[1.25 - 0.02 * np.arange(30), rng.uniform(-0.1, 0.5, d - 30)])[::-1]
    M = (Q * lam) @ Q.T
    for max_basis, block in [(None, 1), (20, 1), (40, 4)]:  # the small bases force thick restarts
        res = topk_eigs(M, k, tol=1e-10, max_basis=max_basis, block=block)
        assert res.converged
        assert (res.info["restarts"] > 0) == (max_basis is not None)
        assert np.allclose(res.eigenvalues, lam[:k], atol=1e-12)
        assert np.allclose(np.abs(np.sum(res.eigenvectors * Q[:, :k], axis=0)), 1.0, atol=1e-8)


def test_guard_keeps_lanczos_from_skipping_an_eigenvalue():
    # A smoothly decaying spectrum with gaps ~1% at k = 32, like a trained denoiser's. With a loose
    # residual tolerance, single-vector Lanczos can stop once its 32nd Ritz value has converged to
    # lambda_33 while lambda_32 has not yet entered the Krylov space (a seed in this range does so
    # with guard=0); requiring two more Ritz pairs to converge makes it wait for lambda_32.
    d, k = 400, 32
    lam = 1.15 * np.exp(-np.arange(d) / 80)
    M = np.diag(lam)
    for seed in range(30):
        res = topk_eigs(M, k, tol=1e-3, block=1, seed=seed)
        assert res.info["guard"] == 2 and res.residuals.shape == (k,) and res.eigenvectors.shape == (d, k)
        assert np.max(np.abs(res.eigenvalues - lam[:k]) / lam[:k]) < 1e-4, seed
    # k + guard is capped at d - 1; a negative guard is an error.
    assert topk_eigs(M[:40, :40], 38, tol=1e-8).eigenvalues.shape == (38,)
    with pytest.raises(ValueError, match="guard"):
        topk_eigs(M, k, guard=-1)


def test_trace_exact_equals_dense_trace(net_op):
    op, J = net_op
    t = trace_exact(op)
    assert t.stderr == 0.0
    assert t.value == pytest.approx(float(torch.trace(J)), rel=1e-5)


def test_hutchinson_within_its_stated_error(net_op):
    op, J = net_op
    exact = float(torch.trace(J))
    probes = 64
    est = trace_hutchinson(op, probes=probes, seed=11)
    assert est.probes == probes and est.stderr > 0
    # Stated error: 4 standard errors (about 1 in 16,000 for a Gaussian limit).
    assert abs(est.value - exact) < 4 * est.stderr
    # The reported standard error agrees with theory: Var = 2 (||S||_F^2 - sum_i S_ii^2).
    S = 0.5 * (J + J.T)
    sd_theory = math.sqrt(2 * (float((S**2).sum()) - float((torch.diagonal(S) ** 2).sum())) / probes)
    assert 0.6 < est.stderr / sd_theory < 1.5
    # Deflating the top eigenvectors keeps the estimator unbiased and shrinks its error.
    top = topk_eigs(op, 16, tol=1e-6)
    est_d = trace_hutchinson(op, probes=probes, seed=11, deflate=top.eigenvectors, deflate_values=top.eigenvalues)
    assert abs(est_d.value - exact) < 4 * est_d.stderr
    P = torch.eye(op.d, dtype=torch.float64) - torch.as_tensor(top.eigenvectors @ top.eigenvectors.T)
    SP = P @ S @ P
    sd_d = math.sqrt(2 * (float((SP**2).sum()) - float((torch.diagonal(SP) ** 2).sum())) / probes)
    assert 0.6 < est_d.stderr / sd_d < 1.5
    assert sd_d < sd_theory


def test_hutchinson_error_is_detectable(net_op):
    # Guard that the 4-standard-error criterion can fail: a biased value is caught.
    op, J = net_op
    est = trace_hutchinson(op, probes=64, seed=11)
    biased = float(torch.trace(J)) + 10 * est.stderr
    assert abs(est.value - biased) > 4 * est.stderr


def test_operator_adjoint_consistency(net_op):
    op, J = net_op
    g = torch.Generator().manual_seed(0)
    V = torch.randn((3, op.d), generator=g, dtype=torch.float64)
    U = torch.randn((3, op.d), generator=g, dtype=torch.float64)
    assert torch.allclose(op.jvp(V), V @ J.T, atol=1e-5)
    assert torch.allclose(op.vjp(U), U @ J, atol=1e-5)
    assert torch.allclose(op.sym(V), V @ (0.5 * (J + J.T)), atol=1e-5)
    lo = op.linear_operator("J")
    v = V[0].numpy()
    assert np.allclose(lo.matvec(v), J.numpy() @ v, atol=1e-5)
    assert np.allclose(lo.rmatvec(v), J.numpy().T @ v, atol=1e-5)


@pytest.mark.parametrize("arch,pad_mode,shape", [
    ("unet", "reflect", (1, 14, 14)), ("unet", "replicate", (1, 12, 20)), ("unet", "zeros", (1, 14, 18)),
    ("unet", "reflect", (1, 16, 16)), ("bfcnn", None, (1, 13, 11)),
])
def test_explicit_adjoint_equals_reverse_mode(arch, pad_mode, shape):
    """The hand-built transpose network (J^T u in one forward-cost pass) equals autograd's VJP."""
    net = make_tiny(arch, seed=3).double()
    if pad_mode:
        net.pad_mode = pad_mode
    y = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    op = JacobianOperator(net, y)
    assert op._adjoint is not None
    U = torch.randn(4, op.d, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    explicit = op.vjp(U)
    op._adjoint = None  # fall back to reverse-mode AD through the frozen network
    reference = op.vjp(U)
    assert torch.allclose(explicit, reference, rtol=0, atol=1e-12 * float(reference.abs().max()))
    # and it is the transpose of the forward pass: <J v, u> = <v, J^T u>
    V = torch.randn(4, op.d, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    assert torch.allclose((op.jvp(V) * U).sum(1), (V * explicit).sum(1), rtol=1e-10, atol=1e-12)
