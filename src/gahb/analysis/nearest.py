"""Exact nearest-neighbour search of a batch of images in a training set of any size.

The "closest train image" of the paper's Fig 2 (section 2) is the training image with the largest
normalized inner product <q, x> / (|q| |x|) with a sample. Calling a sample a copy needs the exact
maximum over all N training images, so the search is exhaustive, in chunks, so that memory does
not grow with N:

* :func:`nearest_neighbors`: the k nearest database rows of every query, by cosine or L2;
* :func:`iter_chunks`: the database read block by block, whatever form it comes in (tensor,
  array, a :class:`gahb.data.datasets.Pool` memmap, or a stream of chunks);
* :class:`RunningTopK`: the top-k of a score stream, merged chunk after chunk with ties broken
  towards the lower index, so results do not depend on the chunk size.

The patch matching of :mod:`gahb.analysis.patches` reuses the chunked reading and the merge.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Iterator

import numpy as np
import torch

from gahb.utils.device import no_tf32

METRICS = ("cosine", "l2")


class RunningTopK:
    """Top-k of a row-wise score stream, merged chunk after chunk ("larger is better").

    Chunks must arrive in increasing index order. Ties are broken towards the lower index: the
    kept entries (all with lower indices) are placed before the new chunk and a *stable* sort
    keeps that order among equal scores, so the result does not depend on the chunk size.
    """

    def __init__(self, rows: int, k: int, dtype: torch.dtype, device: torch.device):
        self.k = int(k)
        self.values = torch.empty((rows, 0), dtype=dtype, device=device)
        self.indices = torch.empty((rows, 0), dtype=torch.int64, device=device)

    def update(self, scores: torch.Tensor, offset: int) -> None:
        idx = torch.arange(offset, offset + scores.shape[1], device=scores.device).expand_as(scores)
        vals = torch.cat([self.values, scores], dim=1)
        inds = torch.cat([self.indices, idx], dim=1)
        # NaN scores (e.g. from inf inputs) must never win; push them to the end.
        vals = torch.nan_to_num(vals, nan=-math.inf)
        order = torch.sort(vals, dim=1, descending=True, stable=True).indices[:, : self.k]
        self.values = vals.gather(1, order)
        self.indices = inds.gather(1, order)


def as_tensor(x) -> torch.Tensor:
    """``x`` itself if it is a tensor, else ``torch.as_tensor`` of it as a NumPy array (no copy when possible)."""
    if isinstance(x, torch.Tensor):
        return x
    return torch.as_tensor(np.asarray(x))


def iter_chunks(database, chunk: int) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(offset, rows)`` blocks of a database given in any of the supported forms.

    ``database`` may be a tensor or array (N, ...), an object with ``__len__`` and
    ``get(indices)`` (a :class:`gahb.data.datasets.Pool`, read block by block from its memmap),
    a callable returning an iterable of chunks (called once), or an iterable of chunks. Chunks
    coming from an iterable keep their own sizes; the others are cut into ``chunk`` rows.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if isinstance(database, (torch.Tensor, np.ndarray)):
        n = database.shape[0]
        for lo in range(0, n, chunk):
            yield lo, as_tensor(database[lo:lo + chunk])
        return
    if hasattr(database, "get") and hasattr(database, "__len__"):
        n = len(database)
        for lo in range(0, n, chunk):
            yield lo, as_tensor(database.get(np.arange(lo, min(lo + chunk, n))))
        return
    if callable(database):
        database = database()
    if not isinstance(database, Iterable):
        raise TypeError(f"database must be a tensor, an array, a Pool, a callable or an iterable of "
                        f"chunks, got {type(database).__name__}")
    offset = 0
    for rows in database:
        rows = as_tensor(rows)
        yield offset, rows
        offset += rows.shape[0]


def database_length(database) -> int | None:
    """Number of items of a tensor, array or ``Pool`` database; None for a callable or a stream of chunks."""
    if isinstance(database, (torch.Tensor, np.ndarray)):
        return int(database.shape[0])
    if hasattr(database, "get") and hasattr(database, "__len__"):
        return len(database)
    return None


def _prepare_rows(x: torch.Tensor, metric: str, center: bool, dtype: torch.dtype,
                  device: torch.device, shift: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Flatten (and for cosine normalise) rows; for L2 also return squared norms."""
    x = x.reshape(x.shape[0], -1).to(device=device, dtype=dtype)
    if center:
        x = x - x.mean(1, keepdim=True)
    if metric == "cosine":
        # Zero rows have no direction: their cosine with anything is 0, not NaN.
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-30), None
    if shift is not None:
        # ||q||^2 - 2<q, x> + ||x||^2 cancels catastrophically for near neighbours; distances are
        # translation invariant, so move the origin to the queries' mean to shrink the norms.
        x = x - shift
    return x, x.pow(2).sum(1)


def nearest_neighbors(queries: torch.Tensor, database, k: int = 1, metric: str = "cosine", *,
                      center: bool = False, chunk: int = 4096, dtype: torch.dtype = torch.float32,
                      device: str | torch.device | None = None, progress: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest neighbours of each query in a database, by cosine similarity or L2 distance.

    The database is scanned in chunks; each chunk costs one (B, chunk) matrix product whose top-k
    is merged into a running top-k (:class:`RunningTopK`), so memory is O(B * (chunk + k) + chunk *
    d) whatever N is (the 35,000 Fashion-MNIST images or 10^5 80x80 CelebA images of the paper's
    N sweep). Used for the "closest train image" of the paper's Fig 2 (section 2).

    Args:
        queries: (B, ...) batch; flattened.
        database: (N, ...) tensor/array with the same per-item size, a ``Pool``, a callable
            returning an iterable of chunks, or an iterable of chunks (see :func:`iter_chunks`).
        k: neighbours per query (at most N).
        metric: ``"cosine"`` (largest <q, x> / (|q| |x|) first; the paper's normalized inner
            product) or ``"l2"`` (smallest Euclidean distance first).
        center: remove each vector's mean first (the official code's ``im_set_corr`` variant).
        chunk: database rows per block (for tensors, arrays and pools).
        dtype: computation dtype. ``torch.float64`` shrinks rounding to ~1e-16, so near-ties
            (e.g. duplicated training images) are ordered by index unless they differ by more;
            no dtype guarantees that duplicates score *bit-identically*, since a BLAS product may
            sum different columns in different orders.
        device: where the products run (default: the queries' device). TF32 is disabled on CUDA.
        progress: tqdm bar over chunks.

    Returns:
        ``(values, indices)``, both (B, k): similarities (descending) for cosine, Euclidean
        distances (ascending) for L2, and int64 database indices. Exactly equal scores go to
        the lower index, whatever the chunk size. L2 distances come from the expansion
        ||q||^2 - 2<q, x> + ||x||^2 (about the queries' mean), so in float32 a distance near 0
        carries an absolute error ~ sqrt(eps) * ||x - mean||; use float64 for exact small values.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    queries = as_tensor(queries)
    if queries.ndim < 2 or queries.shape[0] == 0:
        raise ValueError(f"queries must be a non-empty (B, ...) batch, got shape {tuple(queries.shape)}")
    device = torch.device(device) if device is not None else queries.device
    shift = None
    if metric == "l2":
        shift = _prepare_rows(queries, "l2", center, dtype, device)[0].mean(0)
    q, q_sq = _prepare_rows(queries, metric, center, dtype, device, shift)
    top = RunningTopK(q.shape[0], k, dtype, device)

    from tqdm.auto import tqdm

    total = database_length(database)
    bar = tqdm(total=total, desc="nearest neighbours", unit="img", unit_scale=True, disable=not progress)
    seen = 0
    with no_tf32():
        for offset, rows in iter_chunks(database, chunk):
            if rows.shape[0] == 0:
                continue
            if rows[0].numel() != q.shape[1]:
                raise ValueError(f"database items have {rows[0].numel()} values, queries have {q.shape[1]}")
            x, x_sq = _prepare_rows(rows, metric, center, dtype, device, shift)
            prod = q @ x.T
            if metric == "cosine":
                scores = prod
            else:  # rank by -||q - x||^2 so that "larger is better" holds for the merge
                scores = -(q_sq[:, None] - 2.0 * prod + x_sq[None, :]).clamp_min_(0.0)
            top.update(scores, offset)
            seen = offset + rows.shape[0]
            bar.update(rows.shape[0])
    bar.close()
    if seen < k:
        raise ValueError(f"k={k} neighbours requested but the database holds {seen} items")
    values = top.values if metric == "cosine" else (-top.values).sqrt()
    return values, top.indices

