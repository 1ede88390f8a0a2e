"""The calibrated copy test (d1/d2 < 1/3) and the bootstrap intervals claims are judged with."""

from __future__ import annotations

import pytest
import torch

from gahb.analysis.copies import copy_fraction, copy_ratio, copy_references, is_copy
from gahb.analysis.uncertainty import (bootstrap_interval, difference_interval, fraction_interval,
                                       paired_difference_interval)


def _fashion_mnist(n: int):
    from gahb.data.readers import fashion_mnist_files, read_fashion_mnist_raw

    try:
        fashion_mnist_files()
    except (FileNotFoundError, ValueError) as e:
        pytest.skip(f"Fashion-MNIST is not installed (Debian package dataset-fashion-mnist): {e}")
    x = read_fashion_mnist_raw(progress=False).to_tensor()
    return x[:n]


def test_the_ratio_is_d1_over_d2_and_uses_the_reference_at_n_1():
    train = torch.zeros(3, 1, 2, 2)
    train[1, 0, 0, 0], train[2, 0, 0, 0] = 3.0, -5.0
    q = torch.zeros(1, 1, 2, 2)
    q[0, 0, 0, 0] = 1.0  # distances 1, 2, 6
    assert float(copy_ratio(q, train, scale_free=False)[0]) == pytest.approx(0.5)
    assert float(copy_ratio(q, train[:1], reference=4.0, scale_free=False)[0]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="reference distance"):
        copy_ratio(q, train[:1])
    # scale-free: distances between unit vectors, sqrt(2 - 2 cos); a brighter copy is still a copy
    x = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[0.0, 1.0], [0.0, 0.0]]], [[[1.0, 1.0], [0.0, 0.0]]]])
    y = 2.5 * (x[:1] + 0.01 * torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]]))
    r = float(copy_ratio(y, x)[0])
    d1, d2 = (2 - 2 / (1 + 1e-4) ** 0.5) ** 0.5, (2 - 2 * (1 + 0.01) / (2 * (1 + 1e-4)) ** 0.5) ** 0.5
    assert r == pytest.approx(d1 / d2, rel=1e-6) and is_copy(torch.tensor([r]))[0]
    assert not is_copy(copy_ratio(y, x, scale_free=False))[0]  # by plain L2 the bright copy is far from all
    assert is_copy(torch.tensor([0.2, 1 / 3, 0.5])).tolist() == [True, False, False]


@pytest.mark.parametrize("n", [1, 10, 1000])
def test_known_copies_are_copies_and_held_out_images_are_not(n):
    """On Fashion-MNIST: training images + noise at sigma 0.02 are >= 95% copies, held-out images <= 20%."""
    x = _fashion_mnist(11_000)
    train, held_out = x[:n], x[10_000:10_500]
    ref = copy_references(train, held_out, copies=200)
    summary = ref.summary()
    assert summary["true_copies"]["estimate"] >= 0.95, summary
    assert summary["held_out"]["estimate"] <= 0.20, summary
    # samples are measured the same way: other held-out images score like the floor, noisy copies do not
    like_new = copy_fraction(copy_ratio(x[10_500:10_700], train, reference=ref.reference_distance), ref.held_out_ratio)
    assert like_new["minus_held_out"].lo <= 0 <= like_new["minus_held_out"].hi
    like_copies = copy_fraction(ref.true_copy_ratio, ref.held_out_ratio)
    assert like_copies["fraction"].lo >= 0.9 and like_copies["minus_held_out"].lo > 0.7


def test_bootstrap_intervals_cover_the_true_value_in_90_percent_of_repetitions():
    """200 synthetic repetitions each: a mean (normal data), a fraction (Bernoulli 0.3), a difference of two
    fractions and a paired mean difference; each 95% interval must cover the truth >= 90% of the time."""
    g = torch.Generator().manual_seed(0)
    hits = {"mean": 0, "fraction": 0, "difference": 0, "paired": 0}
    reps = 200
    for r in range(reps):
        v = 2.0 + torch.randn(64, generator=g, dtype=torch.float64)
        hits["mean"] += bootstrap_interval(v, resamples=500, seed=r).contains(2.0)
        f = torch.rand(64, generator=g) < 0.3
        hits["fraction"] += fraction_interval(f, resamples=500, seed=r).contains(0.3)
        f2 = torch.rand(80, generator=g) < 0.1
        hits["difference"] += difference_interval(f.double(), f2.double(), resamples=500, seed=r).contains(0.2)
        common = torch.randn(64, generator=g, dtype=torch.float64)
        a, b = common + 0.1 + 0.3 * torch.randn(64, generator=g, dtype=torch.float64), common
        hits["paired"] += paired_difference_interval(a, b, resamples=500, seed=r).contains(0.1)
    assert all(h >= 0.9 * reps for h in hits.values()), hits
    # ... and they are not trivially wide: the paired interval excludes 0 for a clear shift
    assert paired_difference_interval(a + 1, b, seed=0).lo > 0


def test_an_interval_is_reproducible_and_rejects_empty_input():
    v = torch.arange(10.0)
    assert bootstrap_interval(v, seed=3) == bootstrap_interval(v, seed=3)
    with pytest.raises(ValueError, match="at least one value"):
        bootstrap_interval([])
    with pytest.raises(ValueError, match="same length"):
        paired_difference_interval([1.0, 2.0], [1.0])


def test_a_gap_flat_within_its_errors_is_not_decreasing():
    from gahb.analysis.uncertainty import decrease_to_zero

    # the quick study's paired gaps: falls 12.6 -> 3.9 -> 0, then stays within 2 SE of zero
    assert decrease_to_zero([12.636, 3.902, -0.014, 0.025], [None, 0.346, 0.021, 0.066]) == 2
    # flat within errors everywhere: not decreasing, though each point is below the one before
    assert decrease_to_zero([0.30, 0.25, 0.20, 0.15], [0.2, 0.2, 0.2, 0.2]) is None
    # falls significantly, but the last value is far from zero: the fall reaches the end
    assert decrease_to_zero([5.0, 3.0, 1.0], [0.1, 0.1, 0.1]) == 2
    # falls then rises again away from zero: only the first part counts, and beyond it is not zero
    assert decrease_to_zero([5.0, 1.0, 3.0], [0.1, 0.1, 0.1]) is None
    with pytest.raises(ValueError, match="standard errors"):
        decrease_to_zero([1.0, 0.5], [0.1])


def test_slope_and_binomial_intervals_cover_the_truth_in_90_percent_of_repetitions():
    """A slope over per-image PSNR curves (each image its own offset and slope around the population's
    0.6) and a failure rate of 0.03 in 64 samples: each 95% interval covers the truth >= 90% of 200 times."""
    from gahb.analysis.optimality import slope_interval
    from gahb.analysis.uncertainty import binomial_interval

    g = torch.Generator().manual_seed(1)
    x = torch.arange(0.0, 42.0, 3.0, dtype=torch.float64)
    hits = {"slope": 0, "binomial": 0}
    reps = 200
    for r in range(reps):
        slopes = 0.6 + 0.05 * torch.randn(32, 1, generator=g, dtype=torch.float64)
        rows = slopes * x + 3 * torch.randn(32, 1, generator=g, dtype=torch.float64) \
            + 0.2 * torch.randn(32, x.numel(), generator=g, dtype=torch.float64)
        hits["slope"] += slope_interval(x, rows, (9.0, 30.0), resamples=300, seed=r).contains(0.6)
        k = int((torch.rand(64, generator=g) < 0.03).sum())
        hits["binomial"] += binomial_interval(k, 64).contains(0.03)
    assert all(h >= 0.9 * reps for h in hits.values()), hits
    # no samples failed: the rate is 0, and the interval still says how large it could be
    iv = binomial_interval(0, 64)
    assert iv.estimate == 0 and iv.lo == 0 and 0.03 < iv.hi < 0.1
    with pytest.raises(ValueError, match="0 <= k <= n"):
        binomial_interval(5, 4)
    with pytest.raises(ValueError, match="levels"):
        slope_interval(x, torch.zeros(4, 3), (9.0, 30.0))


def test_a_judged_claim_without_reference_or_uncertainty_is_flagged():
    from gahb.studies.common import claim, unsupported_claims

    rows = [claim("bare", "p", 1.0, True, "> 0"),
            claim("with reference", "p", 1.0, False, "> 0", reference="the optimum"),
            claim("with uncertainty", "p", 1.0, True, "> 0", uncertainty="+- 0.1"),
            claim("informative", "p", 1.0, None)]
    assert unsupported_claims(rows) == ["bare"]


def test_a_failure_of_the_papers_recipe_names_the_variant_that_passes():
    from gahb.studies.common import claim, label_variant
    from gahb.studies.reproduce import mark_variant_passes

    paper = [claim("slope, alpha=1", "p", 0.4, False, uncertainty="x"), claim("slope, alpha=2", "p", 0.6, True,
                                                                               uncertainty="x")]
    variant = label_variant([claim("slope, alpha=1", "p", 0.5, True, uncertainty="x"),
                             claim("slope, alpha=2", "p", 0.5, True, uncertainty="x")], {"loss_weight": "eps"})
    entries = [{"section": "calpha", "study": "calpha", "results": {"variant": None, "claims": paper}},
               {"section": "calpha_eps", "study": "calpha", "results": {"variant": "loss weight eps", "claims": variant}},
               {"section": "manifold", "study": "manifold", "results": {"variant": None, "claims": [
                   claim("slope, alpha=1", "p", 0.4, False, uncertainty="x")]}}]
    mark_variant_passes(entries)
    first, second = entries[0]["results"]["claims"]
    assert first["passes_for_variant"] == "loss weight eps (section calpha_eps)"
    assert "passes_for_variant" not in second  # it passes on the paper's recipe
    assert "passes_for_variant" not in entries[2]["results"]["claims"][0]  # another study
    assert all("passes_for_variant" not in c for c in entries[1]["results"]["claims"])
