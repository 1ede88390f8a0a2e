"""Seeded Gaussian noise images: the one helper behind every fixed noise draw of the analyses and studies.

Every noise image comes from its own CPU ``torch.Generator``, so it is the same whatever the batch,
device or order it is drawn in, and two networks measured with one seed see the same noise.

* :func:`gaussian`: one image (or a stack) from the stream ``seed``.
* :func:`per_image`: image i of a set from the stream (seed, i), mixed by numpy's ``SeedSequence``
  (the denoising curves and the distances to the empirical denoiser).
* :func:`image_draw_seed`: the stream of noise draw r of image i (SURE over images and draws).

A study's ``seed`` also seeds the training of its networks, so its measurements draw their noise
from streams offset from it: the offsets below name them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

# Offsets from a study's seed (all distinct, so the measurements' noise never repeats the training's).
CURVE_STREAM = 1  # denoising curves of held-out images (output PSNR against input PSNR)
EXAMPLE_STREAM = 7  # the noisy example image a figure shows beside the curves
JACOBIAN_STREAM = 100  # + j: the noisy image j whose Jacobian is analysed (apart from the Lanczos seeds seed + j)
QUALITY_STREAM = 5000  # the noise images of the sample-quality references (gahb.analysis.quality)


def gaussian(shape: Sequence[int], seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N(0, I) of ``shape`` from the stream ``seed`` (CPU)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=g, dtype=dtype)


def per_image(image_shape: Sequence[int], indices, seed: int = 0) -> torch.Tensor:
    """Unit noise images, one per index, each from the stream (seed, index): float32 (len(indices), *image_shape).

    Image i always receives the same noise, whatever the batch it is processed in, and a training and
    a held-out set evaluated with one seed see the same noise realisations, row by row.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    out = torch.empty((idx.shape[0],) + tuple(image_shape), dtype=torch.float32)
    g = torch.Generator()
    for row, i in enumerate(idx):
        state = np.random.SeedSequence([int(seed), int(i)]).generate_state(2, dtype=np.uint32)
        g.manual_seed((int(state[0]) << 31) ^ int(state[1]))
        out[row] = torch.randn(tuple(image_shape), generator=g)
    return out


def image_draw_seed(seed: int, image: int, draw: int) -> int:
    """The stream of noise draw ``draw`` of image ``image``: distinct for up to 1,000 draws and 1,000 images."""
    return int(seed) * 1_000_003 + 1_000 * int(image) + int(draw)


__all__ = ["CURVE_STREAM", "EXAMPLE_STREAM", "JACOBIAN_STREAM", "QUALITY_STREAM", "gaussian", "image_draw_seed", "per_image"]
