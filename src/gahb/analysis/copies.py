"""Is a sample a copy of a training image? A calibrated distance-ratio test (paper section 2, Fig 2).

The paper calls a sample memorised when it is nearly identical to a training image. A fixed
threshold on the cosine to the nearest training image does not separate copies from new images:
novel images of a homogeneous dataset also lie close to some training image. The criterion used
here (Yoon et al. 2023; Gu et al. 2025) compares the nearest training image with the second one:

    a sample y is a copy when  d1(y) / d2(y) < 1/3,

d1 and d2 the Euclidean distances from y to its nearest and second-nearest training images. A
copy sits much closer to one training image than to any other; a new image sits between several.

The distances are taken between unit-normalised images, d = ||y/|y| - x/|x||| = sqrt(2 - 2 cos),
by default: a bias-free denoiser is homogeneous, f(a y) = a f(y), so the fixed points of one that
memorises form rays {a x} and its samples are copies up to a brightness the sampler's start sets
(at N = 1 they end anywhere between a fraction of and several times the training image). The
test then asks whether a sample points at one training image; ``scale_free=False`` compares the
images as they are.
With one training image (N = 1) there is no second neighbour, and d2 is replaced by the distance
that a new image of the same distribution has to the training image: the median over held-out
images (:func:`reference_distance`).

The test is calibrated against references measured the same way (:func:`copy_references`):

* true copies: training images with small added noise (sigma = 0.02), which must be copies;
* novel real images: held-out test images against the same training set, whose copy fraction is
  the floor a generalising model's samples are compared with.

Fractions come with 95% bootstrap intervals (:mod:`gahb.analysis.uncertainty`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gahb.analysis.nearest import nearest_neighbors
from gahb.analysis.uncertainty import difference_interval, fraction_interval

COPY_RATIO = 1 / 3  # d1 / d2 below this: a copy (Yoon et al. 2023; Gu et al. 2025)
COPY_NOISE_SIGMA = 0.02  # the true copies of the calibration: training images + N(0, 0.02^2)


def neighbour_distances(queries: torch.Tensor, train, *, scale_free: bool = True, chunk: int = 4096,
                        progress: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(d1, d2, index of the nearest): Euclidean distances of each query to its nearest and second
    nearest training images, float64 (B,), between unit-normalised images when ``scale_free`` (the
    module docstring); ``d2`` is None when ``train`` holds one image."""
    n = len(train)
    if n < 1:
        raise ValueError("the training set is empty")
    k = min(2, n)
    if scale_free:
        cos, idx = nearest_neighbors(queries, train, k=k, metric="cosine", chunk=chunk, dtype=torch.float64,
                                     progress=progress)
        values = (2.0 - 2.0 * cos).clamp_min(0.0).sqrt()
    else:
        values, idx = nearest_neighbors(queries, train, k=k, metric="l2", chunk=chunk, dtype=torch.float64,
                                        progress=progress)
    return values[:, 0], (values[:, 1] if n >= 2 else None), idx[:, 0]


def reference_distance(train, held_out: torch.Tensor, *, scale_free: bool = True) -> float:
    """The median distance from held-out images to their nearest training image: the d2 of a set
    with one image (how far a new image of the distribution lies from it)."""
    d1, _, _ = neighbour_distances(held_out, train, scale_free=scale_free)
    return float(d1.median())


def copy_ratio(queries: torch.Tensor, train, *, reference: float | None = None, scale_free: bool = True,
               progress: bool = False) -> torch.Tensor:
    """d1 / d2 per query (B,), float64; with one training image d1 / ``reference`` (required then)."""
    d1, d2, _ = neighbour_distances(queries, train, scale_free=scale_free, progress=progress)
    return _ratio(d1, d2, reference)


def _ratio(d1: torch.Tensor, d2: torch.Tensor | None, reference: float | None) -> torch.Tensor:
    if d2 is None:
        if reference is None or not reference > 0:
            raise ValueError("with one training image the copy ratio needs a positive reference distance "
                             "(reference_distance(train, held_out))")
        return d1 / reference
    return d1 / d2.clamp_min(1e-30)


def is_copy(ratio: torch.Tensor, threshold: float = COPY_RATIO) -> torch.Tensor:
    """True where a query is a copy: its distance ratio below ``threshold``."""
    return torch.as_tensor(ratio) < threshold


@dataclass(frozen=True)
class CopyReferences:
    """The two calibration sets of the copy test against one training set, as distance ratios."""

    true_copy_ratio: torch.Tensor  # training images + small noise: copies, ratio ~0
    held_out_ratio: torch.Tensor  # novel real images: their copy fraction is the floor for "new images"
    reference_distance: float | None  # the d2 used with one training image (None for N >= 2)

    def summary(self, threshold: float = COPY_RATIO, *, resamples: int = 2000, seed: int = 0) -> dict:
        """Copy fractions of both sets, with bootstrap intervals (dicts of :class:`Interval`)."""
        return {"true_copies": fraction_interval(is_copy(self.true_copy_ratio, threshold), resamples=resamples,
                                                 seed=seed).to_dict(),
                "held_out": fraction_interval(is_copy(self.held_out_ratio, threshold), resamples=resamples,
                                              seed=seed + 1).to_dict(),
                "reference_distance": self.reference_distance}


def copy_references(train, held_out: torch.Tensor, *, copies: int = 64, sigma: float = COPY_NOISE_SIGMA,
                    seed: int = 0, scale_free: bool = True) -> CopyReferences:
    """Calibrate the copy test on one training set: ``copies`` training images (cycled) plus
    N(0, sigma^2) noise from ``seed`` (true copies), and the ``held_out`` images (novel images),
    each measured as samples are (:func:`copy_ratio`)."""
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    n = len(train)
    first = torch.stack([torch.as_tensor(train[i]) for i in range(min(copies, n))]).double()
    base = first[torch.arange(copies) % first.shape[0]]  # the first images, cycled when N < copies
    g = torch.Generator().manual_seed(int(seed))
    noisy = base + sigma * torch.randn(base.shape, generator=g, dtype=torch.float64)
    # the held-out distances serve twice: as the N = 1 reference (reference_distance) and as their ratios
    h1, h2, _ = neighbour_distances(held_out, train, scale_free=scale_free)
    ref = float(h1.median()) if n == 1 else None
    return CopyReferences(copy_ratio(noisy, train, reference=ref, scale_free=scale_free), _ratio(h1, h2, ref), ref)


def copy_fraction(ratio, held_out_ratio, threshold: float = COPY_RATIO, *, resamples: int = 2000,
                  seed: int = 0) -> dict:
    """The copy fraction of samples (their distance ratios ``ratio``) with its interval, and its
    difference to the held-out images' (``held_out_ratio``, from :func:`copy_references`).

    Returns ``{"fraction": Interval, "minus_held_out": Interval}``.
    """
    flags = is_copy(torch.as_tensor(ratio, dtype=torch.float64), threshold).double()
    held = is_copy(torch.as_tensor(held_out_ratio, dtype=torch.float64), threshold).double()
    return {"fraction": fraction_interval(flags, resamples=resamples, seed=seed),
            "minus_held_out": difference_interval(flags, held, resamples=resamples, seed=seed)}
