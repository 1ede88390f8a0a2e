"""Uncertainty of the numbers a claim is judged on: percentile bootstrap intervals.

Every claim of the report compares a measurement with a reference; the comparison means something
only with the measurement's spread. The helpers here resample the per-item values (samples,
images) with replacement (Efron's percentile bootstrap) from a fixed seed, so an interval is
reproducible:

* :func:`bootstrap_interval`: a statistic of one set of values (a mean, a median, a fraction);
* :func:`fraction_interval`: the fraction of True flags (e.g. samples classified as copies);
* :func:`difference_interval`: a statistic of one set minus the same statistic of an independent
  set (e.g. the samples' copy fraction minus the held-out images');
* :func:`paired_difference_interval`: the mean of per-item differences a_i - b_i, resampling
  the pairs together (e.g. a sample's paired cosine minus its nearest-training cosine);
* :func:`bootstrap_rows`: any statistic of a table of per-item rows, resampling whole rows (e.g.
  the slope of a mean PSNR curve, each row one image's curve);
* :func:`binomial_interval`: Wilson's score interval of k successes in n trials (e.g. samples
  that failed), where a bootstrap of all-zero flags would collapse to a point.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its ``level`` (e.g. 95%) bootstrap interval [lo, hi], from ``n`` items."""

    estimate: float
    lo: float
    hi: float
    level: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)

    def contains(self, value: float) -> bool:
        return self.lo <= value <= self.hi

    def __str__(self) -> str:
        return f"{self.estimate:.3g} [{self.lo:.3g}, {self.hi:.3g}]"


def _values(values) -> torch.Tensor:
    v = torch.as_tensor(values).detach().reshape(-1).double().cpu()
    if v.numel() == 0:
        raise ValueError("a bootstrap interval needs at least one value")
    return v


def _check(resamples: int, level: float) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")


def _mean(v: torch.Tensor) -> torch.Tensor:
    return v.mean(-1)


def _percentiles(stats: torch.Tensor, level: float) -> tuple[float, float]:
    a = (1 - level) / 2
    q = torch.quantile(stats, torch.tensor([a, 1 - a], dtype=stats.dtype))
    return float(q[0]), float(q[1])


def _resample(n: int, resamples: int, g: torch.Generator) -> torch.Tensor:
    return torch.randint(n, (resamples, n), generator=g)


def bootstrap_interval(values, statistic: Callable[[torch.Tensor], torch.Tensor] = _mean, *,
                       resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL, seed: int = 0) -> Interval:
    """``statistic`` of ``values`` with its percentile bootstrap interval.

    ``statistic`` maps a (..., n) float64 tensor to its (...) statistic along the last axis
    (default: the mean; e.g. ``lambda v: v.median(-1).values``).
    """
    _check(resamples, level)
    v = _values(values)
    g = torch.Generator().manual_seed(int(seed))
    stats = statistic(v[_resample(v.numel(), resamples, g)])
    lo, hi = _percentiles(stats, level)
    return Interval(float(statistic(v[None])[0]), lo, hi, level, v.numel())


def fraction_interval(flags, **kw) -> Interval:
    """The fraction of True in ``flags`` (bools or 0/1) with its bootstrap interval."""
    return bootstrap_interval(torch.as_tensor(flags).double(), **kw)


def difference_interval(a, b, statistic: Callable[[torch.Tensor], torch.Tensor] = _mean, *,
                        resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL, seed: int = 0) -> Interval:
    """statistic(a) - statistic(b) for two independent sets, each resampled on its own."""
    _check(resamples, level)
    va, vb = _values(a), _values(b)
    g = torch.Generator().manual_seed(int(seed))
    stats = statistic(va[_resample(va.numel(), resamples, g)]) - statistic(vb[_resample(vb.numel(), resamples, g)])
    lo, hi = _percentiles(stats, level)
    return Interval(float(statistic(va[None])[0] - statistic(vb[None])[0]), lo, hi, level, va.numel() + vb.numel())


def paired_difference_interval(a, b, *, resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                               seed: int = 0) -> Interval:
    """mean_i (a_i - b_i) with its bootstrap interval, the pairs (a_i, b_i) resampled together."""
    va, vb = _values(a), _values(b)
    if va.shape != vb.shape:
        raise ValueError(f"paired values must have the same length, got {va.numel()} and {vb.numel()}")
    return bootstrap_interval(va - vb, resamples=resamples, level=level, seed=seed)


def bootstrap_rows(rows, statistic: Callable[[torch.Tensor], torch.Tensor], *,
                   resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL, seed: int = 0) -> Interval:
    """``statistic`` of an (n, ...) table of per-item rows, with the bootstrap resampling whole rows.

    ``statistic`` maps an (R, n, ...) float64 batch of tables to its (R,) statistics (R = 1 for the
    point estimate), e.g. the least-squares slope of the mean of n per-image PSNR curves.
    """
    _check(resamples, level)
    t = torch.as_tensor(rows).detach().double().cpu()
    if t.ndim < 1 or t.shape[0] == 0:
        raise ValueError("a bootstrap interval needs at least one value")
    g = torch.Generator().manual_seed(int(seed))
    stats = statistic(t[_resample(t.shape[0], resamples, g)])
    lo, hi = _percentiles(stats.reshape(-1), level)
    return Interval(float(statistic(t[None]).reshape(-1)[0]), lo, hi, level, int(t.shape[0]))


def binomial_interval(k: int, n: int, level: float = DEFAULT_LEVEL) -> Interval:
    """k/n with Wilson's score interval (Wilson 1927): sensible at k = 0 and k = n, unlike a bootstrap."""
    from statistics import NormalDist

    _check(1, level)
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), level, n)


def line_slope(x, y: torch.Tensor) -> torch.Tensor:
    """Least-squares slope of y (..., L) against the abscissae x (L,), batched over the leading axes."""
    xs = torch.as_tensor(x, dtype=y.dtype)
    xc = xs - xs.mean()
    return ((y - y.mean(-1, keepdim=True)) * xc).sum(-1) / (xc * xc).sum()


def decrease_to_zero(values, ses, z: float = 2.0) -> int | None:
    """Where a series falls to zero, judged with its standard errors; None when it does not.

    The series v_0, v_1, ... (e.g. the train - test gap at growing N) "decreases up to k" when every
    step before k falls by more than ``z`` standard errors of the step, v_j - v_{j+1} >
    z sqrt(se_j^2 + se_{j+1}^2), and "stays at zero beyond k" when every later value is within
    ``z`` standard errors of 0, |v_j| <= z se_j. Returns the largest k >= 1 with both (at least one
    significant decrease), else None: a series flat within its errors is not decreasing. A missing
    standard error (None, e.g. at N = 1 where one image has no spread) counts as 0.
    """
    v = [float(x) for x in values]
    se = [0.0 if s is None else float(s) for s in ses]
    if len(v) != len(se):
        raise ValueError(f"{len(v)} values but {len(se)} standard errors")
    falls = [v[j] - v[j + 1] > z * (se[j] ** 2 + se[j + 1] ** 2) ** 0.5 for j in range(len(v) - 1)]
    for k in range(len(v) - 1, 0, -1):
        if all(falls[:k]) and all(abs(v[j]) <= z * se[j] for j in range(k + 1, len(v))):
            return k
    return None
