"""Memorization versus generalization: the measurements behind the paper's section 6.

* Exact nearest-neighbour search (cosine or L2) against a training set too large for one
  B x N similarity matrix: :func:`nearest_neighbors`.
* Model variance from paired samplers (paper section 6.2, Fig 2; spec 6.2): the cosine between
  the samples of two denoisers trained on disjoint sets and drawn with the same seed
  (:func:`paired_cosine`, "samples from two denoisers", blue) and the cosine between a sample and
  the closest image of its own training set (:func:`nearest_train_cosine`, "sample and closest
  train image", orange); :func:`memorization_summary` and :func:`similarity_histograms_figure`.
* Train/test denoising curves (section 6.1, Fig 1; spec 6.1): :func:`denoising_curve`,
  :func:`denoising_curves_figure`; the generalization gap of Fig 15 (section 6.3; spec 6.3):
  :func:`psnr_gap`, :func:`psnr_gap_figure`.
* Distance to the closed-form memorising denoiser f_emp (spec 11.1): :func:`distance_to_empirical`.

"Cosine" is the paper's "normalized inner product" <a, b> / (|a| |b|) of the flattened images,
with no mean removal unless ``center=True`` (the variant the official code uses for
deduplication and patch matching; spec 6.2).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch

from gahb.report.figures import pyplot, save_figure
from gahb.utils.device import no_tf32

METRICS = ("cosine", "l2")


# ------------------------------------------------------------------------------------------------
# Exact nearest neighbours



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
        the lower index, whatever the chunk size. L2 distances come from the expansion
        ||q||^2 - 2<q, x> + ||x||^2 (about the queries' mean), so in float32 a distance near 0
        carries an absolute error ~ sqrt(eps) * ||x - mean||; use float64 for exact small values.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    queries = _as_tensor(queries)
    if queries.ndim < 2 or queries.shape[0] == 0:
        raise ValueError(f"queries must be a non-empty (B, ...) batch, got shape {tuple(queries.shape)}")
    device = torch.device(device) if device is not None else queries.device
    shift = None
    if metric == "l2":
        shift = _prepare_rows(queries, "l2", center, dtype, device)[0].mean(0)
    q, q_sq = _prepare_rows(queries, metric, center, dtype, device, shift)
    top = RunningTopK(q.shape[0], k, dtype, device)

    from tqdm.auto import tqdm

    total = _database_length(database)
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




def _panel_grid(count: int, ncols: int | None, panel: tuple[float, float]):
    plt = pyplot()
    ncols = ncols or min(count, 4)
    nrows = math.ceil(count / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, axes.flat


def _sorted_keys(per_n: dict) -> list:
    """Integer N in increasing order first, then any other labels alphabetically."""
    ints = sorted(k for k in per_n if isinstance(k, (int, np.integer)))
    return ints + sorted((k for k in per_n if not isinstance(k, (int, np.integer))), key=str)


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
    ``bins`` then does not apply), and optionally ``"note"``, a line added to the panel's title
    (e.g. how many samples failed and were left out). Values are clipped to [0, 1]. Returns the figure.
    """
    if not per_n:
        raise ValueError("per_n is empty")
    keys = _sorted_keys(per_n)
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
        note = per_n[n].get("note") if isinstance(per_n[n], dict) else None
        ax.set_title(_n_label(n) + (f"\n{note}" if note else ""), fontsize=9)
        ax.set_xlabel("cosine similarity", fontsize=8)
        ax.tick_params(labelsize=7)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, -0.04))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


# ------------------------------------------------------------------------------------------------
# Denoising curves (paper section 6.1, Fig 1; section 6.3, Fig 15)


DEFAULT_INPUT_PSNRS = tuple(range(0, 43, 3))  # the paper's x-axis: 0 to 42 dB in 3-dB ticks


def fixed_noise(image_shape: tuple[int, ...], indices, seed: int = 0) -> torch.Tensor:
    """Unit Gaussian noise images, one per index, each from its own stream seeded by (seed, index).

    Image i always receives the same noise, whatever the batch it is processed in, so curves
    do not depend on the batch size, and a train and a test set evaluated with one seed see the
    same noise realisations (row by row). Returns float32 (len(indices), *image_shape).
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    out = torch.empty((idx.shape[0],) + tuple(image_shape), dtype=torch.float32)
    g = torch.Generator()
    for row, i in enumerate(idx):
        state = np.random.SeedSequence([int(seed), int(i)]).generate_state(2, dtype=np.uint32)
        g.manual_seed((int(state[0]) << 31) ^ int(state[1]))
        out[row] = torch.randn(tuple(image_shape), generator=g)
    return out


def _denoiser_device(denoiser, fallback: torch.device) -> torch.device:
    if isinstance(denoiser, torch.nn.Module):
        for t in list(denoiser.parameters()) + list(denoiser.buffers()):
            return t.device
    return fallback


def _check_images(images) -> torch.Tensor:
    images = _as_tensor(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) batch, got shape {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or inf")
    return images


def _check_eval(denoiser) -> None:
    # Batch-norm in training mode normalises with batch statistics: results would depend on the
    # batch composition (spec 10.4). Modules without batch norm may stay in training mode.
    from torch.nn.modules.batchnorm import _BatchNorm

    from gahb.models import BFBatchNorm2d

    if isinstance(denoiser, torch.nn.Module):
        bad = [n for n, m in denoiser.named_modules() if m.training and isinstance(m, (BFBatchNorm2d, _BatchNorm))]
        if bad:
            raise ValueError(f"the denoiser has batch-norm layers in training mode ({bad[0]!r}, ...); "
                             "call model.eval() first")


@torch.no_grad()
def denoising_curve(denoiser: Callable[[torch.Tensor], torch.Tensor], images, input_psnrs=DEFAULT_INPUT_PSNRS,
                    seed: int = 0, batch: int = 64, device: str | torch.device | None = None,
                    progress: bool = False, keep_per_image: bool = False) -> dict[str, Any]:
    """Output PSNR of a blind denoiser as a function of input PSNR (paper section 6.1, Fig 1).

    For each input PSNR p (sigma = 10^(-p/20)), each image x receives y = x + sigma z with its
    fixed unit noise z (:func:`fixed_noise`; the same z at every level, so the curve is smooth in
    p), and the PSNR of f(y) against x is averaged over images as in the official code (spec 6.1).
    Noisy images are not clipped. Evaluate the train and the test curve with the same ``seed``.

    Returns a JSON-able dict: ``input_psnr`` (nominal), ``sigma``, ``output_psnr`` (mean over
    images), ``output_psnr_std``, ``noisy_psnr`` (the realised PSNR of y, i.e. what the identity
    map scores), ``image_mean_psnr`` (per image, its output PSNR averaged over the levels: what
    :func:`paired_psnr_gap` pairs), ``n_images``, ``seed``; with ``keep_per_image`` also
    ``image_psnr``, the (images x levels) output PSNRs (for bootstrap intervals over images).
    """
    from tqdm.auto import tqdm

    from .metrics import psnr, sigma_from_psnr

    images = _check_images(images)
    _check_eval(denoiser)
    levels = [float(p) for p in input_psnrs]
    if not levels:
        raise ValueError("input_psnrs is empty")
    sigmas = [sigma_from_psnr(p) for p in levels]
    device = torch.device(device) if device is not None else _denoiser_device(denoiser, images.device)
    n = images.shape[0]
    out_sum = torch.zeros(len(levels), dtype=torch.float64)
    out_sq = torch.zeros(len(levels), dtype=torch.float64)
    per_image = torch.zeros(n, dtype=torch.float64)
    table = torch.zeros(n, len(levels), dtype=torch.float64) if keep_per_image else None
    noisy_sum = torch.zeros(len(levels), dtype=torch.float64)
    bar = tqdm(total=n * len(levels), desc="denoising curve", unit="img", disable=not progress)
    for lo in range(0, n, batch):
        x = images[lo:lo + batch].to(device=device, dtype=torch.float32)
        z = fixed_noise(x.shape[1:], range(lo, lo + x.shape[0]), seed).to(device)
        for j, s in enumerate(sigmas):
            y = x + s * z
            p_out = psnr(denoiser(y), x, reduce=False).double().cpu()
            out_sum[j] += p_out.sum()
            out_sq[j] += p_out.pow(2).sum()
            per_image[lo:lo + x.shape[0]] += p_out / len(sigmas)
            if table is not None:
                table[lo:lo + x.shape[0], j] = p_out
            noisy_sum[j] += psnr(y, x, reduce=False).double().sum().cpu()
            bar.update(x.shape[0])
    bar.close()
    mean = out_sum / n
    std = (out_sq / n - mean.pow(2)).clamp_min(0.0).sqrt()
    curve = {"input_psnr": levels, "sigma": sigmas, "output_psnr": mean.tolist(),
             "output_psnr_std": std.tolist(), "noisy_psnr": (noisy_sum / n).tolist(),
             "image_mean_psnr": per_image.tolist(), "n_images": int(n), "seed": int(seed)}
    if table is not None:
        curve["image_psnr"] = table.tolist()
    return curve


def psnr_gap(train_curve: dict, test_curve: dict, sigma_max: float = 1.0) -> float:
    """Train minus test output PSNR, averaged over the curves' noise levels with sigma <= sigma_max.

    The generalization metric of the paper's Fig 15 (section 6.3; spec 6.3: "averaged over
    sigma in [0, 1]"). The average is over the evaluated levels, uniform in input PSNR (i.e. in
    log sigma) on the default 0-42 dB grid; the paper does not say how the levels are weighted.
    """
    a, b = [float(p) for p in train_curve["input_psnr"]], [float(p) for p in test_curve["input_psnr"]]
    if a != b:
        raise ValueError(f"train and test curves use different input PSNRs: {a} vs {b}")
    sig = np.asarray(train_curve["sigma"], dtype=np.float64)
    keep = sig <= sigma_max * (1 + 1e-12)
    if not keep.any():
        raise ValueError(f"no noise level with sigma <= {sigma_max}")
    gap = np.asarray(train_curve["output_psnr"], np.float64) - np.asarray(test_curve["output_psnr"], np.float64)
    return float(gap[keep].mean())


def paired_psnr_gap(own_1: dict, cross_1: dict, own_2: dict, cross_2: dict) -> dict[str, float]:
    """Train - test PSNR gap of two networks trained on disjoint sets, estimated on the same images.

    ``own_1`` is f_S1's curve on images of S1 and ``cross_1`` is f_S2's curve on the *same* images
    with the same noise (S1 is held out for f_S2); likewise ``own_2`` and ``cross_2`` on images of S2.
    The gap is mean_i[own_1 - cross_1] / 2 + mean_i[own_2 - cross_2] / 2 over the per-image PSNRs
    averaged over sigma (:func:`denoising_curve`'s ``image_mean_psnr``).

    It estimates the same expectation as :func:`psnr_gap` (own training images minus unseen images
    of the same distribution), but each image is compared with itself: the image-to-image spread
    of PSNR (easy dark images, hard textured ones), which dominates the unpaired difference of two
    image sets once the true gap is below ~0.1 dB, cancels; so does a constant quality difference
    between the two networks, which enters the two halves with opposite signs. Returns ``gap_db``
    and its standard error ``se_db`` (images taken as independent; None for a single image).
    """
    diffs = []
    for own, cross in ((own_1, cross_1), (own_2, cross_2)):
        if [float(p) for p in own["input_psnr"]] != [float(p) for p in cross["input_psnr"]]:
            raise ValueError("own and cross curves use different input PSNRs")
        a = np.asarray(own["image_mean_psnr"], np.float64)
        b = np.asarray(cross["image_mean_psnr"], np.float64)
        if a.shape != b.shape or a.size < 1:
            raise ValueError(f"own and cross curves must cover the same images, got {a.size} and {b.size}")
        diffs.append(a - b)
    gap = 0.5 * (diffs[0].mean() + diffs[1].mean())
    if min(d.size for d in diffs) < 2:  # N = 1: one image, no spread to estimate an error from
        return {"gap_db": float(gap), "se_db": None}
    se = 0.5 * math.sqrt(sum(d.var(ddof=1) / d.size for d in diffs))
    return {"gap_db": float(gap), "se_db": float(se)}


def unpaired_gap_se(train_curve: dict, test_curve: dict) -> float:
    """Standard error (dB) of :func:`psnr_gap` from the per-image spread of the two image sets
    (a set of one image contributes no spread)."""
    a = np.asarray(train_curve["image_mean_psnr"], np.float64)
    b = np.asarray(test_curve["image_mean_psnr"], np.float64)
    return float(math.sqrt(sum(v.var(ddof=1) / v.size for v in (a, b) if v.size > 1)))


def denoising_curves_figure(per_n: dict, path=None, ncols: int | None = None, title: str | None = None):
    """Paper Fig 1 layout: one panel per N with the train and test PSNR curves and the identity line.

    ``per_n`` maps N to ``{"train": curve, "test": curve}`` (either may be missing), curves as
    returned by :func:`denoising_curve`. Returns the figure.
    """
    if not per_n:
        raise ValueError("per_n is empty")
    keys = _sorted_keys(per_n)
    fig, axes = _panel_grid(len(keys), ncols, (3.0, 2.8))
    for ax, n in zip(axes, keys):
        lo, hi = math.inf, -math.inf
        for key, style in (("train", dict(color="tab:blue", marker="o")),
                           ("test", dict(color="tab:orange", marker="s"))):
            curve = per_n[n].get(key)
            if curve is None:
                continue
            ax.plot(curve["input_psnr"], curve["output_psnr"], ms=3, lw=1.2, label=key, **style)
            lo, hi = min(lo, min(curve["input_psnr"])), max(hi, max(curve["input_psnr"]))
        if math.isfinite(lo):
            ax.plot([lo, hi], [lo, hi], color="0.5", ls="--", lw=1, label="identity")
        ax.set_title(_n_label(n), fontsize=9)
        ax.set_xlabel("input PSNR (dB)", fontsize=8)
        ax.set_ylabel("output PSNR (dB)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def psnr_gap_figure(per_resolution: dict, path=None, title: str | None = None):
    """Paper Fig 15 layout: PSNR gap (dB) against N on log-log axes, one line per image size.

    ``per_resolution`` maps a label (e.g. 80 for 80x80) to ``{N: gap}``. The gap axis is
    logarithmic as in the paper; when a gap is at or below 1e-3 dB (the paper's lower axis limit),
    or negative (an estimate at its noise floor), it becomes symmetric-log, linear within +-1e-2 dB,
    so every value is drawn where it is rather than clipped.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    values = [float(v) for gaps in per_resolution.values() for v in gaps.values()]
    for label, gaps in per_resolution.items():
        ns = sorted(gaps)
        ax.plot(ns, [float(gaps[n]) for n in ns], marker="o", ms=4,
                label=f"{label}x{label}" if isinstance(label, (int, np.integer)) else str(label))
    ax.set_xscale("log")
    if values and min(values) > 1e-3:
        ax.set_yscale("log")
    else:
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.axhline(0.0, color="0.5", lw=0.8)
    ax.set_xlabel("N (training images)")
    ax.set_ylabel("train - test PSNR (dB)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


# ------------------------------------------------------------------------------------------------
# Distance to the memorising reference (spec 11.1)


@torch.no_grad()
def distance_to_empirical(denoiser: Callable[[torch.Tensor], torch.Tensor], train, images, sigmas,
                          seed: int = 0, batch: int = 64, chunk: int = 4096,
                          device: str | torch.device | None = None, progress: bool = False) -> dict[str, Any]:
    """Mean ||f_net(y) - f_emp(y; sigma)||^2 / d per noise level: how closely a network memorises (spec 11.1).

    f_emp is the closed-form posterior mean under the empirical distribution of ``train``
    (:class:`gahb.analysis.empirical.EmpiricalDenoiser`), given the *known* sigma of the added
    noise (not blind). y = x + sigma z with the fixed noise of :func:`fixed_noise`, for x in
    ``images`` (the training images, held-out images or both). A network that memorises tracks
    f_emp (distance -> 0); a generalising one departs from it, most at large sigma.

    Returns a JSON-able dict: ``sigma``, ``distance`` (mean over images of ||f_net - f_emp||^2 / d),
    ``net_mse`` and ``emp_mse`` (mean ||f - x||^2 / d of each denoiser, for scale),
    ``n_images``, ``n_train``, ``seed``.
    """
    from tqdm.auto import tqdm

    from .empirical import EmpiricalDenoiser
    from .metrics import mse_per_image

    images = _check_images(images)
    train = _check_images(train)
    if train.shape[1:] != images.shape[1:]:
        raise ValueError(f"train images are {tuple(train.shape[1:])}, images are {tuple(images.shape[1:])}")
    _check_eval(denoiser)
    sigmas = [float(s) for s in sigmas]
    if not sigmas or min(sigmas) <= 0:
        raise ValueError(f"sigmas must be a non-empty list of positive noise levels, got {sigmas}")
    device = torch.device(device) if device is not None else _denoiser_device(denoiser, images.device)
    emp = EmpiricalDenoiser(train.to(torch.float32), sigma=None, chunk=chunk).to(device)
    n = images.shape[0]
    sums = {k: torch.zeros(len(sigmas), dtype=torch.float64) for k in ("distance", "net_mse", "emp_mse")}
    bar = tqdm(total=n * len(sigmas), desc="distance to f_emp", unit="img", disable=not progress)
    for lo in range(0, n, batch):
        x = images[lo:lo + batch].to(device=device, dtype=torch.float32)
        z = fixed_noise(x.shape[1:], range(lo, lo + x.shape[0]), seed).to(device)
        for j, s in enumerate(sigmas):
            y = x + s * z
            f_net = denoiser(y).double()
            f_emp = emp(y.double(), sigma=s)
            xd = x.double()
            sums["distance"][j] += mse_per_image(f_net, f_emp).sum().cpu()
            sums["net_mse"][j] += mse_per_image(f_net, xd).sum().cpu()
            sums["emp_mse"][j] += mse_per_image(f_emp, xd).sum().cpu()
            bar.update(x.shape[0])
    bar.close()
    out = {"sigma": sigmas}
    out.update({k: (v / n).tolist() for k, v in sums.items()})
    out.update({"n_images": int(n), "n_train": int(train.shape[0]), "seed": int(seed)})
    return out
