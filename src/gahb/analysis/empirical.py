"""The closed-form empirical (memorising) denoiser: the memorisation reference point (paper section 2).

For a training set {x_i} the optimum of the denoising objective at noise sigma is the posterior
mean under the empirical distribution,

    f_emp(y; sigma) = sum_i w_i(y) x_i,   w = softmax_i( -||y - x_i||^2 / (2 sigma^2) ),

whose Jacobian sigma^-2 Cov_w[x] has rank at most N - 1 and which collapses onto the nearest
training image as sigma -> 0. Sampling with it reproduces training images.
"""

from __future__ import annotations

import torch
from torch import nn

from gahb.models.base import check_batch


class EmpiricalDenoiser(nn.Module):
    """Posterior mean under the empirical distribution of ``train`` (N, C, H, W).

    Args:
        train: training images on the pixel scale [0, 1].
        sigma: noise level. ``None`` makes the denoiser *blind*, honouring the gahb contract: the
            noise level of each input is estimated as ``sigma^2 = min_i ||y - x_i||^2 / d``, which
            is consistent for y = x_i + noise with d large (and is what a sampler needs).
        chunk: training images processed per block; the softmax is accumulated online in log
            space (running max), so memory is O(B * chunk) and no weight underflows to 0/0, even
            at sigma = 1e-3.
        dtype: computation dtype (float64 by default for stability of tiny sigma).
    """

    def __init__(self, train: torch.Tensor, sigma: float | None = None, chunk: int = 4096,
                 dtype: torch.dtype = torch.float64):
        super().__init__()
        check_batch(train, name="training set")
        if not torch.isfinite(train).all():
            raise ValueError("training set contains non-finite values")
        self.in_channels = train.shape[1]
        self.image_shape = tuple(train.shape[1:])
        self.sigma = sigma
        self.chunk = int(chunk)
        self.dtype = dtype
        flat = train.reshape(train.shape[0], -1).to(dtype)
        self.register_buffer("train_flat", flat)
        self.register_buffer("train_sqnorm", flat.pow(2).sum(1))

    def _sq_dists(self, yf: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        xs = self.train_flat[lo:hi]
        d2 = yf.pow(2).sum(1, keepdim=True) - 2.0 * yf @ xs.T + self.train_sqnorm[lo:hi]
        return d2.clamp_min(0.0)

    def estimate_sigma(self, y: torch.Tensor) -> torch.Tensor:
        """Blind noise estimate sqrt(min_i ||y - x_i||^2 / d), shape (B,)."""
        yf = y.reshape(y.shape[0], -1).to(self.dtype)
        n = self.train_flat.shape[0]
        best = torch.full((yf.shape[0],), float("inf"), dtype=self.dtype, device=yf.device)
        for lo in range(0, n, self.chunk):
            best = torch.minimum(best, self._sq_dists(yf, lo, lo + self.chunk).min(1).values)
        return (best / yf.shape[1]).sqrt()

    def forward(self, y: torch.Tensor, sigma: float | torch.Tensor | None = None) -> torch.Tensor:
        check_batch(y, self.in_channels)
        sigma = self.sigma if sigma is None else sigma
        yf = y.reshape(y.shape[0], -1).to(self.dtype)
        if sigma is None:
            s = self.estimate_sigma(y).clamp_min(1e-12)
        else:
            s = torch.as_tensor(sigma, dtype=self.dtype, device=yf.device).expand(yf.shape[0])
        inv2s2 = (0.5 / s.pow(2)).unsqueeze(1)
        n = self.train_flat.shape[0]
        run_max = torch.full((yf.shape[0], 1), -float("inf"), dtype=self.dtype, device=yf.device)
        run_sum = torch.zeros((yf.shape[0], 1), dtype=self.dtype, device=yf.device)
        acc = torch.zeros_like(yf)
        for lo in range(0, n, self.chunk):
            logits = -self._sq_dists(yf, lo, lo + self.chunk) * inv2s2
            new_max = torch.maximum(run_max, logits.max(1, keepdim=True).values)
            rescale = torch.exp(run_max - new_max)
            w = torch.exp(logits - new_max)
            run_sum = run_sum * rescale + w.sum(1, keepdim=True)
            acc = acc * rescale + w @ self.train_flat[lo:lo + self.chunk]
            run_max = new_max
        return (acc / run_sum).reshape(y.shape).to(y.dtype)
