"""Seeding and bookkeeping shared by the synthetic generators.

Randomness is drawn in fixed blocks of :data:`BLOCK` images, each block from its own child of
``numpy.random.SeedSequence(seed)``, so

* the same seed gives the same images, whatever the chunking, thread or progress settings;
* a dataset is a prefix of a larger one with the same seed (``calpha_images(10, seed=s)`` equals
  ``calpha_images(1000, seed=s)[:10]``), which makes nested training sets cheap;
* working memory beyond the returned tensor is bounded by one block (~50 MB at 80x80), and
  :func:`~gahb.data.synthetic.iter_synthetic` streams datasets too large to hold in memory.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch

BLOCK = 256
"""Images per random block. Part of the seeding scheme: changing it changes every dataset.
256 keeps a block's 80x80 arrays (~13 MB) small enough for the allocator to reuse them."""

Size = int | Sequence[int]


def _hw(size: Size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        size = tuple(int(s) for s in size)
        if len(size) != 2:
            raise ValueError(f"size must be an int or (H, W), got {size!r}")
        h, w = size
    if h < 2 or w < 2:
        raise ValueError(f"image size must be at least 2x2, got {h}x{w}")
    return h, w


def _check_n(n: int) -> int:
    if int(n) != n or n < 0:
        raise ValueError(f"number of images must be a non-negative integer, got {n!r}")
    return int(n)


def _block_rngs(seed: int, n: int, salt: int = 0) -> Iterator[tuple[int, int, np.random.Generator]]:
    """Yield (start, stop, rng) for consecutive blocks of BLOCK images.

    Block b draws from SeedSequence([seed, salt, b]); ``salt`` separates generators that would
    otherwise share streams (e.g. disk parameters and sinusoid parameters with the same seed).
    """
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for b, start in enumerate(range(0, n, BLOCK)):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(salt), b]))
        yield start, min(start + BLOCK, n), rng


def _uniform(rng: np.random.Generator, n: int, shape: tuple[int, ...] = (),
             dtype: type = np.float64) -> np.ndarray:
    """U[0, 1) draws for the first n images of a block.

    Always draws a whole block (and drops the tail) so that every draw of a block starts at the
    same point of the stream whatever n is: this is what makes datasets prefixes of each other.
    """
    return rng.random((BLOCK, *shape), dtype=dtype)[:n]


@contextmanager
def _torch_threads(threads: int | None):
    """Temporarily run torch (and the scipy FFTs, which follow it) on ``threads`` threads.

    The generators are memory-bound elementwise work on ~1e6-element blocks, where several
    OpenMP threads spin-wait on a busy machine and end up slower than one; so the generators
    default to one thread. ``None`` keeps torch's current setting. The previous setting is
    restored on exit.
    """
    old = torch.get_num_threads()
    if threads is None or int(threads) == old:
        yield
        return
    if int(threads) < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="img", leave=False)
