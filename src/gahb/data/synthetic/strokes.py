"""Sparse bright strokes on black: quadratic Bezier curves drawn with a round pen.

Not a dataset of the paper: mostly black images with thin bright curves, of the character of
handwriting-like data, on which briefly trained denoisers let samples diverge
(docs/divergence.md).
"""

from __future__ import annotations

import torch

from .seeding import Size, _block_rngs, _check_n, _hw, _uniform


def sample_stroke_params(n: int, max_strokes: int = 3, seed: int = 0) -> torch.Tensor:
    """(n, max_strokes, 9) float64: per stroke a 0/1 presence flag, three Bezier control points
    (x0, y0, x1, y1, x2, y2) in [0.1, 0.9] of the image side, a half-width in [0.6, 1.6] px and a
    brightness in [0.6, 1]. Every image has at least one stroke (1 to ``max_strokes``, uniform)."""
    n = _check_n(n)
    if max_strokes < 1:
        raise ValueError(f"max_strokes must be >= 1, got {max_strokes}")
    out = torch.empty(n, max_strokes, 9, dtype=torch.float64)
    for lo, hi, rng in _block_rngs(seed, n, salt=4):
        u = torch.from_numpy(_uniform(rng, hi - lo, (max_strokes, 9)))
        count = 1 + (u[:, 0, 0] * max_strokes).floor().clamp(max=max_strokes - 1)
        out[lo:hi, :, 0] = (torch.arange(max_strokes)[None, :] < count[:, None]).double()
        out[lo:hi, :, 1:7] = 0.1 + 0.8 * u[:, :, 1:7]
        out[lo:hi, :, 7] = 0.6 + 1.0 * u[:, :, 7]
        out[lo:hi, :, 8] = 0.6 + 0.4 * u[:, :, 8]
    return out


def stroke_images(params, size: Size = 28, samples: int = 48, chunk: int = 64) -> torch.Tensor:
    """Render strokes: each a quadratic Bezier curve drawn with an anti-aliased round pen.

    A pixel at distance r from the curve (its nearest of ``samples`` points) gets
    brightness * clamp(half_width + 1/2 - r, 0, 1); strokes combine by their maximum; the
    background is 0. Mostly black images with thin bright strokes, float32 (n, 1, H, W) in [0, 1].
    """
    h, w = _hw(size)
    p = torch.as_tensor(params, dtype=torch.float64)
    if p.ndim != 3 or p.shape[2] != 9:
        raise ValueError(f"stroke parameters must have shape (N, strokes, 9), got {tuple(p.shape)}")
    t = torch.linspace(0, 1, samples, dtype=torch.float64)[:, None]
    gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                            indexing="ij")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)  # (HW, 2) in pixels
    scale = torch.tensor([w, h], dtype=torch.float64)
    out = torch.empty(p.shape[0], 1, h, w, dtype=torch.float32)
    for lo in range(0, p.shape[0], chunk):
        q = p[lo:lo + chunk]
        c0, c1, c2 = (q[..., 1 + 2 * i:3 + 2 * i] * scale for i in range(3))  # (B, S, 2)
        pts = ((1 - t) ** 2)[None, None] * c0[:, :, None] + (2 * t * (1 - t))[None, None] * c1[:, :, None] \
            + (t**2)[None, None] * c2[:, :, None]  # (B, S, T, 2)
        dist = torch.cdist(pts.reshape(-1, samples, 2), grid[None].expand(pts.shape[0] * pts.shape[1], -1, -1))
        r = dist.min(dim=1).values.reshape(q.shape[0], q.shape[1], h * w)
        ink = (q[..., 7:8] + 0.5 - r).clamp(0, 1) * q[..., 8:9] * q[..., 0:1]
        out[lo:lo + chunk, 0] = ink.max(dim=1).values.reshape(-1, h, w).float()
    return out
