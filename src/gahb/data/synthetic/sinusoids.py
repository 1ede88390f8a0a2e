"""Sinusoids of unit frequency (paper Fig. 20): a 2-D cone of images whose optimal denoising
basis is the unit-frequency sine and cosine."""

from __future__ import annotations

import math

import torch

from .seeding import Size, _block_rngs, _check_n, _hw, _uniform


def sample_sinusoid_params(n: int, seed: int = 0, max_amplitude: float = 0.5) -> torch.Tensor:
    """(n, 2) float64 = (amplitude ~ U(0, max_amplitude), phase ~ U(0, 2 pi))."""
    n = _check_n(n)
    if not 0 < max_amplitude <= 0.5:
        raise ValueError(f"max_amplitude must be in (0, 0.5] to keep images in [0, 1], got "
                         f"{max_amplitude}")
    out = torch.empty(n, 2, dtype=torch.float64)
    for lo, hi, rng in _block_rngs(seed, n, salt=2):
        u = torch.from_numpy(_uniform(rng, hi - lo, (2,)))
        out[lo:hi, 0] = max_amplitude * u[:, 0]
        out[lo:hi, 1] = 2 * math.pi * u[:, 1]
    return out


def sinusoid_images(params, size: Size = 80, axis: str = "x") -> torch.Tensor:
    """x[i, j] = 1/2 + A sin(2 pi j / W + phase) (axis "x"; axis "y" uses i / H).

    One period across the image, so the DFT is supported on the frequencies 0 and +-1 of the
    chosen axis only. The orientation is fixed (varying along the columns by default): the set
    {1/2 + A sin(. + phase)} = {1/2 + a cos + b sin} is then a 2-D cone whose tangent space is
    spanned by the unit-frequency sine and cosine, the optimal basis.
    """
    h, w = _hw(size)
    p = torch.as_tensor(params, dtype=torch.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"sinusoid parameters must have shape (N, 2) = (amplitude, phase), got "
                         f"{tuple(p.shape)}")
    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
    length = w if axis == "x" else h
    t = (2 * math.pi / length) * torch.arange(length, dtype=torch.float64)
    # The 1-D profile in float64, then one float32 broadcast: no (N, H, W) float64 temporary.
    prof = (0.5 + p[:, 0, None] * torch.sin(t[None, :] + p[:, 1, None])).clamp(0, 1).float()
    view = prof[:, None, None, :] if axis == "x" else prof[:, None, :, None]
    return view.expand(p.shape[0], 1, h, w).contiguous()
