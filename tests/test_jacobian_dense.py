"""Dense Jacobian and the exact identities of paper eq. 6."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import make_tiny
from gahb.analysis.empirical import EmpiricalDenoiser
from gahb.analysis.adaptive_basis import eigen_basis, svd_basis
from gahb.analysis.eigensolvers import trace_exact
from gahb.analysis.jacobian import JacobianOperator, jacobian, jacobian_loop
from gahb.analysis.spectral import (
    asymmetry, identity_residuals, oracle_error, sure_mse, truncated_shrinkage_error,
)


class MatrixDenoiser(nn.Module):
    """f(y) = W y for a known matrix W: the Jacobian is W everywhere."""

    def __init__(self, W: torch.Tensor, shape: tuple):
        super().__init__()
        self.register_buffer("W", W)
        self.shape = shape

    def forward(self, y):
        return (y.reshape(y.shape[0], -1) @ self.W.T).reshape(y.shape)


def _noisy(shape=(1, 1, 12, 12), seed=1, sigma=0.2):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    return x, x + sigma * torch.randn(shape, generator=g)


@pytest.mark.parametrize("arch", ["unet", "bfcnn"])
def test_dense_matches_per_pixel_loop(arch, device):
    model = make_tiny(arch).to(device)
    _, y = _noisy((1, 1, 8, 8))
    y = y.to(device)
    ref = jacobian_loop(model, y).double()
    assert ref.abs().max() > 0.5  # a non-trivial Jacobian (BF-BN gains are O(1))
    scale = ref.abs().max()
    for backend, mode in [("linearized", "columns"), ("linearized", "rows"), ("autograd", "rows"),
                          ("autograd", "columns")]:
        J = jacobian(model, y, backend=backend, mode=mode, chunk=7)  # chunk not dividing d
        assert J.shape == (64, 64) and J.dtype == torch.float64
        assert (J - ref).abs().max() < 1e-5 * scale, (backend, mode)


@pytest.mark.parametrize("arch", ["unet", "bfcnn"])
def test_eq6_identities(arch, device):
    model = make_tiny(arch, seed=3).to(device)
    _, y = _noisy(seed=4)
    op = JacobianOperator(model, y.to(device))
    J = jacobian(op)
    fy = op.fy.cpu().numpy()
    basis, svd = eigen_basis(J, op.shape), svd_basis(J, op.shape)
    res = identity_residuals(J, y, fy, basis, svd)
    # Exact statements: f(y) = J y; = S-shrinkage + A y; = SVD shrinkage.
    assert res["linear"] < 1e-5
    assert res["sym_plus_antisym"] < 1e-5
    assert res["svd"] < 1e-5
    # The symmetric shrinkage alone misses exactly A y: a reported gap, non-zero for this random net.
    assert res["sym_only"] == pytest.approx(res["antisymmetric_part"], rel=1e-6)
    assert res["sym_only"] > 1e-3
    # Truncated shrinkage with every term is the full S-shrinkage.
    err = truncated_shrinkage_error(basis, y, fy, [basis.k])
    assert err[0] == pytest.approx(res["sym_only"], rel=1e-6)
    # Eigenvalues descending, eigenvectors orthonormal, trace = sum of eigenvalues.
    assert np.all(np.diff(basis.eigenvalues) <= 1e-12)
    E = basis.eigenvectors
    assert np.allclose(E.T @ E, np.eye(E.shape[1]), atol=1e-10)
    assert basis.eigenvalues.sum() == pytest.approx(float(torch.trace(J)), rel=1e-10)


def test_linear_denoiser_known_matrix():
    d, shape = 64, (1, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    lam = torch.linspace(1.2, -0.3, d, dtype=torch.float64)
    S = Q @ torch.diag(lam) @ Q.T
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    A = 0.05 * (A - A.T)
    model = MatrixDenoiser(S + A, shape).eval()
    y = torch.rand(shape, generator=g, dtype=torch.float64)
    op = JacobianOperator(model, y)
    assert op.backend == "autograd"
    J = jacobian(op)
    assert torch.allclose(J, S + A, atol=1e-12)
    assert asymmetry(J) == pytest.approx(float(torch.linalg.norm(2 * A) / torch.linalg.norm(S + A)), rel=1e-10)
    basis = eigen_basis(J, shape)
    assert np.allclose(basis.eigenvalues, lam.numpy(), atol=1e-12)
    # Eigenvectors recovered up to sign (distinct eigenvalues).
    overlap = np.abs(np.sum(basis.eigenvectors * Q.numpy(), axis=0))
    assert np.allclose(overlap, 1.0, atol=1e-9)
    assert trace_exact(op).value == pytest.approx(float(lam.sum()), abs=1e-10)


def test_empirical_denoiser_rank_and_covariance():
    n_train, shape, sigma = 5, (1, 1, 8, 8), 0.5
    g = torch.Generator().manual_seed(2)
    # Nearby training images so that the posterior weights are spread (not one-hot).
    train = 0.4 + 0.2 * torch.rand((n_train, *shape[1:]), generator=g, dtype=torch.float64)
    model = EmpiricalDenoiser(train, sigma=sigma).eval()
    y = train[1:2] + sigma * torch.randn(shape, generator=g, dtype=torch.float64)
    J = jacobian(model, y)
    s = torch.linalg.svdvals(J)
    # rank <= N - 1, and not trivially: the first N-1 singular values are all significant.
    assert s[n_train - 1] < 1e-10 * s[0]
    assert s[n_train - 2] > 1e-3 * s[0]
    # Known answer: J = Cov_w[x] / sigma^2 (symmetric PSD).
    X = train.reshape(n_train, -1)
    logits = -((y.reshape(1, -1) - X) ** 2).sum(1) / (2 * sigma**2)
    w = torch.softmax(logits, 0)
    mu = w @ X
    cov = (X - mu).T @ (w[:, None] * (X - mu))
    assert torch.allclose(J, cov / sigma**2, atol=1e-10)
    assert asymmetry(J) < 1e-10


def test_sure_is_unbiased_for_a_linear_denoiser():
    # For f(y) = W y the expected MSE is ||(W - I) x||^2 / d + sigma^2 ||W||_F^2 / d in closed form.
    d, sigma, draws = 36, 0.3, 4000
    rng = np.random.default_rng(0)
    W = rng.normal(size=(d, d)) / np.sqrt(d) + 0.5 * np.eye(d)
    x = rng.random(d)
    expected = (np.sum(((W - np.eye(d)) @ x) ** 2) + sigma**2 * np.sum(W**2)) / d
    Y = x + sigma * rng.normal(size=(draws, d))
    est = np.array([sure_mse(yy, W @ yy, np.trace(W), sigma) for yy in Y])
    true = np.mean((Y @ W.T - x) ** 2, axis=1)
    se = est.std(ddof=1) / np.sqrt(draws)
    assert abs(est.mean() - expected) < 4 * se
    assert abs(true.mean() - expected) < 4 * true.std(ddof=1) / np.sqrt(draws)
    # A wrong sign on the divergence term would be far off.
    wrong = np.mean([sure_mse(yy, W @ yy, -np.trace(W), sigma) for yy in Y[:200]])
    assert abs(wrong - expected) > 20 * se


def test_oracle_error_eq11_12():
    rng = np.random.default_rng(1)
    d, sigma = 50, 0.2
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    c = rng.normal(size=d) * np.exp(-np.arange(d) / 8)
    x = Q @ c
    out = oracle_error(Q, x, sigma)
    lam_opt = c**2 / (c**2 + sigma**2)
    assert out["optimal"] == pytest.approx(np.sum(sigma**2 * c**2 / (c**2 + sigma**2)), rel=1e-10)
    assert oracle_error(Q, x, sigma, lam_opt)["given"] == pytest.approx(out["optimal"], rel=1e-10)
    # The optimum is a minimum: any other shrinkage does worse.
    for _ in range(5):
        lam = np.clip(lam_opt + 0.1 * rng.normal(size=d), 0, 1.3)
        assert oracle_error(Q, x, sigma, lam)["given"] > out["optimal"]
    # Eq. 12: threshold bound within a factor 2, and equal to M sigma^2 + ||x - x_M||^2.
    assert out["optimal"] <= out["threshold_bound"] <= 2 * out["optimal"]
    big = c**2 > sigma**2
    assert out["M"] == big.sum()
    assert out["threshold_bound"] == pytest.approx(big.sum() * sigma**2 + np.sum(c[~big] ** 2), rel=1e-10)
    # Incomplete basis: the complement's energy is added in full.
    part = oracle_error(Q[:, :10], x, sigma)
    assert part["residual_energy"] == pytest.approx(np.sum(c[10:] ** 2), rel=1e-8)
    assert part["optimal"] == pytest.approx(np.sum((sigma**2 * c**2 / (c**2 + sigma**2))[:10]) + np.sum(c[10:] ** 2),
                                            rel=1e-8)


def test_bad_inputs():
    model = make_tiny("unet")
    model.train()
    with pytest.raises(ValueError, match="train mode"):
        JacobianOperator(model, torch.rand(1, 1, 8, 8))
    model.eval()
    with pytest.raises(ValueError, match="one image"):
        JacobianOperator(model, torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="not a gahb"):
        JacobianOperator(MatrixDenoiser(torch.eye(4), (1, 1, 2, 2)).eval(), torch.rand(1, 1, 2, 2),
                         backend="linearized")
