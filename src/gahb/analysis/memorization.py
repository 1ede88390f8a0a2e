"""Memorization versus generalization: the measurements behind the paper's section 2 (Figs 1, 2) and Fig 15.

* Model variance from paired samplers (Fig 2): the cosine between the samples of two denoisers
  trained on disjoint sets and drawn with the same seed (:func:`paired_cosine`, "samples from two
  denoisers", blue) and the cosine between a sample and the closest image of its own training set
  (:func:`nearest_train_cosine`, "sample and closest train image", orange, by the exact search of
  :mod:`gahb.analysis.nearest`); :func:`memorization_summary` holds the numbers of its histograms.
* Train/test denoising curves (Fig 1): :func:`denoising_curve`; the generalization gap of Fig 15:
  :func:`psnr_gap`, :func:`paired_psnr_gap`.
* Distance to the closed-form memorising denoiser f_emp, the optimal denoiser for the empirical
  distribution of the training set: :func:`distance_to_empirical`.

The figures that draw these numbers are in :mod:`gahb.report.memorization_figures`.

"Cosine" is the paper's "normalized inner product" <a, b> / (|a| |b|) of the flattened images,
with no mean removal unless ``center=True`` (the variant the official code uses for
deduplication and patch matching).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .nearest import METRICS, RunningTopK, as_tensor, iter_chunks, nearest_neighbors

__all__ = [
    "DEFAULT_BINS", "DEFAULT_INPUT_PSNRS", "DEFAULT_THRESHOLDS", "METRICS", "MemorizationSummary", "RunningTopK",
    "SimilaritySummary", "denoising_curve", "distance_to_empirical", "fixed_noise", "iter_chunks",
    "memorization_summary", "nearest_neighbors", "nearest_train_cosine", "paired_cosine", "paired_psnr_gap",
    "psnr_gap", "summarize_similarities", "unpaired_gap_se",
]


# ------------------------------------------------------------------------------------------------
# Paired-sample similarities (paper section 2, Fig 2)


def paired_cosine(samples_a: torch.Tensor, samples_b: torch.Tensor, center: bool = False) -> torch.Tensor:
    """cos(x_a[i], x_b[i]) per pair, float64 (B,): "samples from two denoisers" (Fig 2, blue).

    ``samples_a`` and ``samples_b`` are drawn from f_S1 and f_S2 (disjoint training sets of one
    size N) with the same seeds, row i of each from seed i (section 2).
    """
    a, b = as_tensor(samples_a), as_tensor(samples_b)
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    from .metrics import cosine_similarity

    return cosine_similarity(a, b, center=center)


def nearest_train_cosine(samples: torch.Tensor, train, center: bool = False, chunk: int = 4096,
                         dtype: torch.dtype = torch.float32, device: str | torch.device | None = None,
                         progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """max over x in S of cos(sample, x) and its argmax: "sample and closest train image" (Fig 2, orange).

    ``train`` is the sampled model's *own* training set, in any form accepted by
    :func:`~gahb.analysis.nearest.nearest_neighbors`. Returns ``(values (B,), indices (B,))``.
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
    v = as_tensor(values).detach().double().flatten().cpu().numpy()
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
    """Fig 2 quantities for one training-set size N (paper section 2).

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
# Denoising curves (paper section 2, Figs 1 and 15)


DEFAULT_INPUT_PSNRS = tuple(range(0, 43, 3))  # the paper's x-axis: 0 to 42 dB in 3-dB ticks


def fixed_noise(image_shape: tuple[int, ...], indices, seed: int = 0) -> torch.Tensor:
    """Unit Gaussian noise images, one per index, each from its own stream seeded by (seed, index)
    (:func:`gahb.utils.noise.per_image`): curves do not depend on the batch size."""
    from gahb.utils.noise import per_image

    return per_image(image_shape, indices, seed)


def _denoiser_device(denoiser, fallback: torch.device) -> torch.device:
    if isinstance(denoiser, torch.nn.Module):
        for t in list(denoiser.parameters()) + list(denoiser.buffers()):
            return t.device
    return fallback


def _check_images(images) -> torch.Tensor:
    images = as_tensor(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) batch, got shape {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or inf")
    return images


def _check_eval(denoiser) -> None:
    # Batch-norm in training mode normalises with batch statistics: results would depend on the
    # batch composition. Modules without batch norm may stay in training mode.
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
    """Output PSNR of a blind denoiser as a function of input PSNR (paper section 2, Fig 1).

    For each input PSNR p (sigma = 10^(-p/20)), each image x receives y = x + sigma z with its
    fixed unit noise z (:func:`fixed_noise`; the same z at every level, so the curve is smooth in
    p), and the PSNR of f(y) against x is averaged over images as in the official code.
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

    The generalization metric of the paper's Fig 15 ("averaged over sigma in [0, 1]"). The average
    is over the evaluated levels, uniform in input PSNR (i.e. in log sigma) on the default 0-42 dB
    grid; the paper does not say how the levels are weighted.
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


# ------------------------------------------------------------------------------------------------
# Distance to the memorising reference f_emp


@torch.no_grad()
def distance_to_empirical(denoiser: Callable[[torch.Tensor], torch.Tensor], train, images, sigmas,
                          seed: int = 0, batch: int = 64, chunk: int = 4096,
                          device: str | torch.device | None = None, progress: bool = False) -> dict[str, Any]:
    """Mean ||f_net(y) - f_emp(y; sigma)||^2 / d per noise level: how closely a network memorises.

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
