"""Sample quality: a Frechet distance and a classifier's confidence (paper section 2, Fig 2).

At the largest N the paper's samples are "distinct from the training set, and of high visual
quality". The copy test (:mod:`gahb.analysis.copies`) measures the first half; this module the second,
in the feature space of the garment classifier of :mod:`gahb.analysis.classifier`:

* :func:`frechet_distance`: the Frechet distance between Gaussians fitted to two sets of features,
  ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2}) (Dowson & Landau 1982; the FID of Heusel et
  al. 2017 with a small classifier in place of Inception). The matrix square root is scipy's
  ``sqrtm``; both sets must have the same size, since the distance's finite-sample bias (about
  tr(S_a + S_b) / n from the means alone) depends on it.
* :func:`frechet_interval`: its bootstrap interval, both sets resampled, each on its own.
  Resampling with replacement repeats images, which raises the distance by about the bias above; the
  interval is the percentile interval of the resampled distances shifted by their mean excess over
  the estimate (the bootstrap's estimate of that bias), cut at 0: an interval for the distance
  measured at this set size, around the estimate, with its spread. Every row is measured at the same
  set size, so rows compare as they stand (a smaller set scores every row higher).
* :func:`confidence_interval`: the mean max-softmax probability with its bootstrap interval. A
  garment classifier names a garment for any input; how sure it is tells a garment from a smudge.
* :func:`quality_references`: what the numbers mean, measured the same way against the same held-out
  test images T: new real images (training images the classifier never saw; the floor), the same
  images lightly and heavily blurred (what "blurry" scores) and noise images (what nothing scores).
  A measure that does not rank them floor < light blur < heavy blur < noise is not a quality measure.
"""

from __future__ import annotations

import numpy as np
import torch

from gahb.analysis.uncertainty import DEFAULT_LEVEL, DEFAULT_RESAMPLES, Interval, _percentiles, bootstrap_interval

# Gaussian blur of the references, in pixels of the 28 x 28 images: light softens edges, heavy
# leaves the garment's silhouette (set before any distance was measured).
BLUR_SIGMAS = {"light": 1.0, "heavy": 2.5}
QUALITY_VERSION = 1  # bump when a constant above or the measure changes: cached numbers are recomputed


def _features(x) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"features must be an (n, d) array with n >= 2, got shape {a.shape}")
    return a


def _equal(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"the two feature sets must have the same size and dimension, got {a.shape} and {b.shape}: "
                         "the distance's bias depends on the set size")


def frechet_distance(features_a, features_b) -> float:
    """The Frechet distance between Gaussians fitted to two equal-size (n, d) feature sets (scipy ``sqrtm``)."""
    import warnings

    from scipy.linalg import LinAlgWarning, sqrtm

    a, b = _features(features_a), _features(features_b)
    _equal(a, b)
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():  # features that are 0 on every image make S_a S_b singular: expected
        warnings.simplefilter("ignore", LinAlgWarning)
        root = sqrtm(sa @ sb)
        if not np.all(np.isfinite(root)):  # offset the diagonals, as is customary (pytorch-fid does the same)
            eps = 1e-6 * np.eye(len(sa))
            root = sqrtm((sa + eps) @ (sb + eps))
    return float(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * np.trace(np.real(root)))


def frechet_batch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Frechet distances of R pairs of sets, (R, n, d) each, float64 (R,): tr (S_a S_b)^{1/2} as the
    sum of the square roots of the eigenvalues of S_a^{1/2} S_b S_a^{1/2} (similar to S_a S_b, symmetric)."""
    a, b = a.double(), b.double()
    n = a.shape[1]
    ca, cb = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    sa, sb = ca.mT @ ca / (n - 1), cb.mT @ cb / (n - 1)
    lam, vec = torch.linalg.eigh(sa)
    root_a = (vec * lam.clamp_min(0).sqrt().unsqueeze(-2)) @ vec.mT
    cross = torch.linalg.eigvalsh(root_a @ sb @ root_a).clamp_min(0).sqrt().sum(-1)
    mu = a.mean(1) - b.mean(1)
    return (mu * mu).sum(-1) + sa.diagonal(dim1=-2, dim2=-1).sum(-1) + sb.diagonal(dim1=-2, dim2=-1).sum(-1) - 2 * cross


def frechet_interval(features_a, features_b, *, resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                     seed: int = 0, chunk: int = 250) -> Interval:
    """:func:`frechet_distance` with its bias-shifted percentile bootstrap interval (module docstring)."""
    a, b = _features(features_a), _features(features_b)
    _equal(a, b)
    estimate = frechet_distance(a, b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    n = len(a)
    g = torch.Generator().manual_seed(int(seed))
    stats = []
    for lo in range(0, resamples, chunk):
        r = min(chunk, resamples - lo)
        ia, ib = torch.randint(n, (r, n), generator=g), torch.randint(n, (r, n), generator=g)
        stats.append(frechet_batch(ta[ia], tb[ib]))
    stats = torch.cat(stats)
    shift = float(stats.mean()) - estimate
    lo, hi = _percentiles(stats, level)
    return Interval(estimate, max(0.0, lo - shift), hi - shift, level, 2 * n)  # a distance is >= 0


def confidence_interval(confidence, *, seed: int = 0) -> Interval:
    """The mean max-softmax probability with its percentile bootstrap interval."""
    return bootstrap_interval(confidence, seed=seed)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Images (B, C, H, W) convolved with a Gaussian of ``sigma`` pixels (separable, radius 3 sigma,
    reflected at the border)."""
    x = torch.as_tensor(images).float()
    radius = max(1, int(np.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    pad = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    y = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    if pad < radius:  # an image smaller than the kernel: extend the reflection with zeros
        y = torch.nn.functional.pad(y, (radius - pad,) * 4)
    y = torch.nn.functional.conv2d(y, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return torch.nn.functional.conv2d(y, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def noise_images(like: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` Gaussian white-noise images with the mean and standard deviation of the pixels of
    ``like``, clipped to [0, 1] (from :func:`gahb.utils.noise.gaussian`'s stream ``seed``)."""
    from gahb.utils.noise import gaussian

    like = torch.as_tensor(like).float()
    z = gaussian((n,) + tuple(like.shape[1:]), seed)
    return (like.mean() + like.std() * z).clamp(0, 1)


def quality_of(classifier, images: torch.Tensor, target_features: torch.Tensor, *, seed: int = 0,
               resamples: int = DEFAULT_RESAMPLES) -> dict:
    """A set of images against the target's features (the same count): the Frechet distance and the
    mean confidence, each with its interval, as JSON-able dicts."""
    feats, conf = classifier.embed(images)
    return {"n": len(images),
            "frechet": frechet_interval(feats, target_features[: len(images)], seed=seed, resamples=resamples).to_dict(),
            "confidence": confidence_interval(conf, seed=seed).to_dict()}


def quality_references(classifier, test: torch.Tensor, real: torch.Tensor, n: int, *, seed: int = 0,
                       resamples: int = DEFAULT_RESAMPLES) -> dict:
    """The references of the measure at set size ``n``, each against the test images T = ``test[:n]``:
    ``floor`` (``real[:n]``: new real images, e.g. training images the classifier never saw), ``blur_light``
    and ``blur_heavy`` (the same images blurred by :data:`BLUR_SIGMAS`), ``noise`` (:func:`noise_images`);
    with ``test_confidence``, the classifier's mean confidence on T itself."""
    from gahb.utils.noise import QUALITY_STREAM

    if len(test) < n or len(real) < n:
        raise ValueError(f"a set size of {n} needs {n} test and {n} real images, got {len(test)} and {len(real)}")
    target, conf = classifier.embed(test[:n])
    base = torch.as_tensor(real[:n]).float()
    sets = {"floor": base, "blur_light": gaussian_blur(base, BLUR_SIGMAS["light"]),
            "blur_heavy": gaussian_blur(base, BLUR_SIGMAS["heavy"]), "noise": noise_images(test[:n], n, seed + QUALITY_STREAM)}
    out = {name: quality_of(classifier, x, target, seed=seed, resamples=resamples) for name, x in sets.items()}
    out["test_confidence"] = confidence_interval(conf, seed=seed).to_dict()
    out["blur_sigmas"] = dict(BLUR_SIGMAS)
    return out


RANKING = ("floor", "blur_light", "blur_heavy", "noise")  # the order the distance must give the references


def ranks_references(refs: dict) -> bool:
    """Whether the references' distances increase along :data:`RANKING`."""
    d = [refs[k]["frechet"]["estimate"] for k in RANKING]
    return all(x < y for x, y in zip(d, d[1:]))


__all__ = ["BLUR_SIGMAS", "QUALITY_VERSION", "RANKING", "confidence_interval", "frechet_batch", "frechet_distance",
           "frechet_interval", "gaussian_blur", "noise_images", "quality_of", "quality_references",
           "ranks_references"]
