"""Memorization versus generalization: the measurements behind the paper's section 6.

* Exact nearest-neighbour search (cosine or L2) against a training set too large for one
  B x N similarity matrix: :func:`nearest_neighbors`.
* Model variance from paired samplers (paper section 6.2, Fig 2; spec 6.2): the cosine between
  the samples of two denoisers trained on disjoint sets and drawn with the same seed
  (:func:`paired_cosine`, "samples from two denoisers", blue) and the cosine between a sample and
  the closest image of its own training set (:func:`nearest_train_cosine`, "sample and closest
  train image", orange); :func:`memorization_summary` and :func:`similarity_histograms_figure`.

"Cosine" is the paper's "normalized inner product" <a, b> / (|a| |b|) of the flattened images,
with no mean removal unless ``center=True`` (the variant the official code uses for
deduplication and patch matching; spec 6.2).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch

METRICS = ("cosine", "l2")


# ------------------------------------------------------------------------------------------------
# Exact nearest neighbours


class _no_tf32:
    """TF32 matmuls (~1e-3 relative error) would reorder near-ties; keep full float32."""

    def __enter__(self):
        self.saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32 = self.saved


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


def _as_tensor(x) -> torch.Tensor:
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
            yield lo, _as_tensor(database[lo:lo + chunk])
        return
    if hasattr(database, "get") and hasattr(database, "__len__"):
        n = len(database)
        for lo in range(0, n, chunk):
            yield lo, _as_tensor(database.get(np.arange(lo, min(lo + chunk, n))))
        return
    if callable(database):
        database = database()
    if not isinstance(database, Iterable):
        raise TypeError(f"database must be a tensor, an array, a Pool, a callable or an iterable of "
                        f"chunks, got {type(database).__name__}")
    offset = 0
    for rows in database:
        rows = _as_tensor(rows)
        yield offset, rows
        offset += rows.shape[0]


def _database_length(database) -> int | None:
    if isinstance(database, (torch.Tensor, np.ndarray)):
        return int(database.shape[0])
    if hasattr(database, "get") and hasattr(database, "__len__"):
        return len(database)
    return None


def _prepare_rows(x: torch.Tensor, metric: str, center: bool, dtype: torch.dtype,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Flatten (and for cosine normalise) rows; for L2 also return squared norms."""
    x = x.reshape(x.shape[0], -1).to(device=device, dtype=dtype)
    if center:
        x = x - x.mean(1, keepdim=True)
    if metric == "cosine":
        # Zero rows have no direction: their cosine with anything is 0, not NaN.
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-30), None
    return x, x.pow(2).sum(1)


def nearest_neighbors(queries: torch.Tensor, database, k: int = 1, metric: str = "cosine", *,
                      center: bool = False, chunk: int = 4096, dtype: torch.dtype = torch.float32,
                      device: str | torch.device | None = None, progress: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest neighbours of each query in a database, by cosine similarity or L2 distance.

    The database is scanned in chunks; each chunk costs one (B, chunk) matrix product whose top-k
    is merged into a running top-k (:class:`RunningTopK`), so memory is O(B * (chunk + k) + chunk *
    d) whatever N is (the 35,000 Fashion-MNIST images or 10^5 80x80 CelebA images of the paper's
    N sweep). Used for the "closest train image" of the paper's Fig 2 (section 6.2).

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
        the lower index, whatever the chunk size.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    queries = _as_tensor(queries)
    if queries.ndim < 2 or queries.shape[0] == 0:
        raise ValueError(f"queries must be a non-empty (B, ...) batch, got shape {tuple(queries.shape)}")
    device = torch.device(device) if device is not None else queries.device
    q, q_sq = _prepare_rows(queries, metric, center, dtype, device)
    top = RunningTopK(q.shape[0], k, dtype, device)

    from tqdm.auto import tqdm

    total = _database_length(database)
    bar = tqdm(total=total, desc="nearest neighbours", unit="img", unit_scale=True, disable=not progress)
    seen = 0
    with _no_tf32() if device.type == "cuda" else nullcontext():
        for offset, rows in iter_chunks(database, chunk):
            if rows.shape[0] == 0:
                continue
            if rows[0].numel() != q.shape[1]:
                raise ValueError(f"database items have {rows[0].numel()} values, queries have {q.shape[1]}")
            x, x_sq = _prepare_rows(rows, metric, center, dtype, device)
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


# ------------------------------------------------------------------------------------------------
# Paired-sample similarities (paper section 6.2, Fig 2)


def paired_cosine(samples_a: torch.Tensor, samples_b: torch.Tensor, center: bool = False) -> torch.Tensor:
    """cos(x_a[i], x_b[i]) per pair, float64 (B,): "samples from two denoisers" (Fig 2, blue).

    ``samples_a`` and ``samples_b`` are drawn from f_S1 and f_S2 (disjoint training sets of one
    size N) with the same seeds, row i of each from seed i (section 6.2; spec 6.2 step 2).
    """
    a, b = _as_tensor(samples_a), _as_tensor(samples_b)
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    from .metrics import cosine_similarity

    return cosine_similarity(a, b, center=center)


def nearest_train_cosine(samples: torch.Tensor, train, center: bool = False, chunk: int = 4096,
                         dtype: torch.dtype = torch.float32, device: str | torch.device | None = None,
                         progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """max over x in S of cos(sample, x) and its argmax: "sample and closest train image" (Fig 2, orange).

    ``train`` is the sampled model's *own* training set (spec 6.2), in any form accepted by
    :func:`nearest_neighbors`. Returns ``(values (B,), indices (B,))``.
    """
    values, indices = nearest_neighbors(samples, train, k=1, metric="cosine", center=center, chunk=chunk,
                                        dtype=dtype, device=device, progress=progress)
    return values[:, 0], indices[:, 0]


DEFAULT_BINS = 50
DEFAULT_THRESHOLDS = (0.9, 0.95, 0.99)


@dataclass
class SimilaritySummary:
    """Distribution of one similarity measure: the numbers behind one histogram of Fig 2.

    ``counts`` are over ``bins`` equal bins of [0, 1]; values outside [0, 1] (negative cosines
    of centred or signed images) are clipped into the end bins, so ``sum(counts) == n``.
    ``fraction_above[t]`` is the fraction of values > t ("copies" at threshold t).
    """

    n: int
    mean: float
    median: float
    std: float
    min: float
    max: float
    quartiles: tuple[float, float]
    counts: list[int]
    bin_edges: list[float]
    fraction_above: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def summarize_similarities(values, bins: int = DEFAULT_BINS,
                           thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS) -> SimilaritySummary:
    """Median, mean, quartiles and [0, 1] histogram counts of similarity values."""
    v = _as_tensor(values).detach().double().flatten().cpu().numpy()
    if v.size == 0:
        raise ValueError("no similarity values to summarise")
    if not np.isfinite(v).all():
        raise ValueError("similarity values contain NaN or inf")
    counts, edges = np.histogram(np.clip(v, 0.0, 1.0), bins=bins, range=(0.0, 1.0))
    q1, q3 = np.quantile(v, [0.25, 0.75])
    return SimilaritySummary(
        n=int(v.size), mean=float(v.mean()), median=float(np.median(v)), std=float(v.std()),
        min=float(v.min()), max=float(v.max()), quartiles=(float(q1), float(q3)),
        counts=[int(c) for c in counts], bin_edges=[float(e) for e in edges],
        fraction_above={f"{t:g}": float((v > t).mean()) for t in thresholds},
    )


@dataclass
class MemorizationSummary:
    """Fig 2 quantities for one training-set size N (paper section 6.2).

    ``paired``: cos between the samples of f_S1 and f_S2 from the same seed (blue).
    ``nearest_train``: max cos between a sample and its model's training set (orange).
    Generalization shows as ``paired.median`` -> 1 while ``nearest_train.median`` moves left.
    """

    n_train: int | None
    paired: SimilaritySummary | None
    nearest_train: SimilaritySummary | None

    def to_dict(self) -> dict:
        return {"n_train": self.n_train,
                "paired": None if self.paired is None else self.paired.to_dict(),
                "nearest_train": None if self.nearest_train is None else self.nearest_train.to_dict()}


def memorization_summary(paired=None, nearest_train=None, n_train: int | None = None, bins: int = DEFAULT_BINS,
                         thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS) -> MemorizationSummary:
    """Summarise the two Fig 2 measures (either may be omitted, e.g. when only S1 was trained)."""
    if paired is None and nearest_train is None:
        raise ValueError("give paired and/or nearest_train similarities")
    s = lambda v: None if v is None else summarize_similarities(v, bins, thresholds)  # noqa: E731
    return MemorizationSummary(n_train=n_train, paired=s(paired), nearest_train=s(nearest_train))


# ------------------------------------------------------------------------------------------------
# Figures (matplotlib imported lazily, Agg backend)


PAIRED_COLOR = "tab:blue"
NEAREST_COLOR = "tab:orange"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> None:
    if path is None:
        return
    from gahb.utils.io import _atomic

    _atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def _panel_grid(count: int, ncols: int | None, panel: tuple[float, float]):
    plt = _plt()
    ncols = ncols or min(count, 4)
    nrows = math.ceil(count / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, axes.flat


def _n_label(n) -> str:
    try:
        n = int(n)
    except (TypeError, ValueError):
        return str(n)
    if n >= 1000 and n == 10 ** round(math.log10(n)):
        return f"N = $10^{{{round(math.log10(n))}}}$"
    return f"N = {n}"


def similarity_histograms_figure(per_n: dict, bins: int = DEFAULT_BINS, path=None, ncols: int | None = None,
                                 title: str | None = None):
    """Paper Fig 2 layout: one panel per N, x from 0 to 1, blue = paired, orange = nearest train.

    ``per_n`` maps N to a dict with keys ``"paired"`` and/or ``"nearest_train"`` holding either raw
    similarity values or :class:`SimilaritySummary` objects (their stored counts are drawn;
    ``bins`` then does not apply). Values are clipped to [0, 1]. Returns the figure.
    """
    if not per_n:
        raise ValueError("per_n is empty")
    keys = sorted(per_n, key=lambda n: (not isinstance(n, (int, np.integer)), n if isinstance(n, (int, np.integer)) else str(n)))
    fig, axes = _panel_grid(len(keys), ncols, (3.2, 2.6))
    series = (("paired", PAIRED_COLOR, "Samples from two denoisers"),
              ("nearest_train", NEAREST_COLOR, "Sample and closest train image"))
    for ax, n in zip(axes, keys):
        for key, color, label in series:
            v = per_n[n].get(key) if isinstance(per_n[n], dict) else getattr(per_n[n], key, None)
            if v is None:
                continue
            if isinstance(v, SimilaritySummary):
                counts, edges = np.asarray(v.counts), np.asarray(v.bin_edges)
            else:
                arr = np.clip(_as_tensor(v).detach().double().flatten().cpu().numpy(), 0.0, 1.0)
                counts, edges = np.histogram(arr, bins=bins, range=(0.0, 1.0))
            ax.stairs(counts, edges, fill=True, alpha=0.55, color=color, label=label)
        ax.set_xlim(0.0, 1.0)
        ax.set_title(_n_label(n), fontsize=9)
        ax.set_xlabel("cosine similarity", fontsize=8)
        ax.tick_params(labelsize=7)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, -0.04))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return fig
