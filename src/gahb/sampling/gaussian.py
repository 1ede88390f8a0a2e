"""An exact blind denoiser for a low-rank Gaussian prior: a closed-form check of the sampler.

For x ~ N(mu, U diag(lam) U^T) with U (d x k) orthonormal and k < d, a noisy y = x + sigma z has
no signal outside span(U), so the noise level is identifiable from y alone:

    sigma_hat^2 = ||(I - U U^T)(y - mu)||^2 / (d - k),

and the posterior mean at that noise level is

    f(y) = mu + U diag(lam / (lam + sigma_hat^2)) U^T (y - mu).

This is a blind denoiser honouring the gahb contract (exact as d - k grows). A sampler driven by
it must return samples with mean mu and covariance U diag(lam) U^T, up to sampling error and the
final shrinkage lam / (lam + sigma_final^2) of the last denoising step.
"""

from __future__ import annotations

import torch
from torch import nn

from gahb.models.base import check_batch


class LowRankGaussianDenoiser(nn.Module):
    """Blind MMSE denoiser of N(mean, basis diag(variances) basis^T), computed in float64.

    Args:
        mean: (C, H, W) prior mean.
        basis: (k, C, H, W) orthonormal directions (orthonormalised here if needed).
        variances: (k,) positive prior variances along ``basis``.

    Every output row depends only on its input row, through element-wise products and
    row sums (no BLAS call whose blocking could depend on the batch size), so a batch gives
    bit-for-bit the same rows as the images denoised one at a time. The sampler's batch
    invariance is tested exactly with it.
    """

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor, variances: torch.Tensor):
        super().__init__()
        if basis.ndim != 4 or mean.shape != basis.shape[1:]:
            raise ValueError("basis must be (k, C, H, W) and mean (C, H, W)")
        k, d = basis.shape[0], basis[0].numel()
        if not 0 < k < d:
            raise ValueError(f"need 0 < k < d, got k={k}, d={d}")
        if variances.shape != (k,) or (variances <= 0).any():
            raise ValueError("variances must be k positive numbers")
        q, _ = torch.linalg.qr(basis.reshape(k, d).double().T)
        self.in_channels = mean.shape[0]
        self.register_buffer("mean", mean.double().reshape(1, d))
        self.register_buffer("basis", q.T.contiguous())  # (k, d), orthonormal rows
        self.register_buffer("variances", variances.double())

    @classmethod
    def random(cls, shape: tuple[int, int, int], rank: int, variances: tuple[float, float] = (0.02, 0.1),
               mean: float = 0.5, seed: int = 0) -> "LowRankGaussianDenoiser":
        """A random ``rank``-dimensional Gaussian with a constant mean and variances spread log-uniformly."""
        g = torch.Generator().manual_seed(seed)
        basis = torch.randn((rank, *shape), generator=g, dtype=torch.float64)
        lo, hi = variances
        lam = torch.logspace(torch.log10(torch.tensor(lo)).item(), torch.log10(torch.tensor(hi)).item(),
                             rank, dtype=torch.float64)
        return cls(torch.full(shape, float(mean), dtype=torch.float64), basis, lam)

    @property
    def covariance(self) -> torch.Tensor:
        """(d, d) prior covariance."""
        return self.basis.T @ (self.variances[:, None] * self.basis)

    def coefficients(self, y: torch.Tensor) -> torch.Tensor:
        """Coordinates of y - mean along the basis, (B, k)."""
        yc = y.reshape(y.shape[0], 1, -1).double() - self.mean
        return (yc * self.basis).sum(-1)

    def _combine(self, c: torch.Tensor) -> torch.Tensor:
        """sum_j c[:, j] basis_j, accumulated in a fixed order with element-wise operations."""
        acc = c[:, :1] * self.basis[0]
        for j in range(1, self.basis.shape[0]):
            acc = acc + c[:, j:j + 1] * self.basis[j]
        return acc

    def estimate_sigma(self, y: torch.Tensor) -> torch.Tensor:
        """sqrt(||(I - U U^T)(y - mu)||^2 / (d - k)), (B,)."""
        yc = y.reshape(y.shape[0], -1).double() - self.mean
        inside = self._combine(self.coefficients(y))
        k, d = self.basis.shape
        return ((yc - inside).pow(2).sum(1) / (d - k)).sqrt()

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        check_batch(y, self.in_channels)
        c = self.coefficients(y)
        s2 = self.estimate_sigma(y).pow(2)[:, None]
        shrunk = c * (self.variances / (self.variances + s2))
        out = self.mean + self._combine(shrunk)
        return out.reshape(y.shape).to(y.dtype)
