"""Deduplication: the paper's rule (remove the later image of every pair with |corr| > 0.95 after
20x20 pooling and mean removal), computed in blocks, against a dense reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gahb.data.dedup import dedup_features, deduplicate, deduplicate_dense, nearest_earlier


def smooth_images(n, size=40, seed=0):
    """Distinct smooth random images (low-pass noise): pairwise correlations well below 0.95."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, 8, 8, generator=g)
    return F.interpolate(z, size=(size, size), mode="bicubic", align_corners=False)


def pooled_corr(a, b):
    fa = F.adaptive_avg_pool2d(a[None].double(), (20, 20)).flatten()
    fb = F.adaptive_avg_pool2d(b[None].double(), (20, 20)).flatten()
    fa, fb = fa - fa.mean(), fb - fb.mean()
    return float(fa @ fb / (fa.norm() * fb.norm()))


def test_planted_duplicates_removed_chunked():
    x = smooth_images(120, seed=1)
    g = torch.Generator().manual_seed(2)
    plants = {30: 5, 77: 60, 101: 5, 119: 0}  # later index -> earlier original
    for j, i in plants.items():
        # scaled, shifted, slightly noisy copy: still |corr| > 0.95 after mean removal
        x[j] = 0.6 * x[i] + 0.2 + 0.05 * torch.randn(x[i].shape, generator=g)
        assert pooled_corr(x[i], x[j]) > 0.95
    x[50] = -x[12] + 1.0  # contrast-inverted copy: |corr| = 1 counts too (the paper uses |.|)
    res = deduplicate(x, chunk=32, progress=False)  # chunk < N: several row and column blocks
    assert set(res.removed.tolist()) == set(plants) | {50}
    assert len(res.kept) == 120 - 5 and np.all(np.diff(res.kept) > 0)
    for j, i in plants.items():
        assert res.partner[j] == i and res.nearest_earlier[j] > 0.95
    # the distinct images really are distinct (the test would be vacuous otherwise)
    kept_max = res.nearest_earlier[res.kept].max()
    assert kept_max < 0.9


def test_matches_dense_reference_including_chains():
    torch.manual_seed(3)
    x = smooth_images(90, size=24, seed=3)
    # chain a ~ b ~ c with corr(a, c) < 0.95: both b and c must go (each has an earlier match)
    base, other = x[10].clone(), x[11].clone()
    x[40] = base + 0.25 * other
    x[70] = base + 0.55 * other
    assert pooled_corr(base, x[40]) > 0.95 and pooled_corr(x[40], x[70]) > 0.95
    assert pooled_corr(base, x[70]) < 0.95
    x[20] = 2 * x[60]  # a copy placed *before* its original: the later one (60) is removed
    x[85] = torch.full_like(x[85], 0.3)  # constant image: undefined correlation, never flagged
    x[86] = torch.full_like(x[86], 0.7)
    for chunk in (7, 16, 90, 1000):
        res = deduplicate(x, chunk=chunk, progress=False)
        np.testing.assert_array_equal(res.kept, deduplicate_dense(x))
    assert {40, 60, 70}.issubset(set(res.removed.tolist())) and res.partner[60] == 20
    assert 20 not in res.removed and 85 in res.kept and 86 in res.kept and res.n_constant == 2


def test_threshold_and_nearest_earlier_are_exact():
    x = smooth_images(60, size=20, seed=4)  # 20x20: pooling is the identity
    feats = dedup_features(x)
    f = x.reshape(60, -1).double()
    f = f - f.mean(1, keepdim=True)
    f = f / f.norm(dim=1, keepdim=True)
    corr = (f @ f.T).abs().tril(-1)
    best, arg = nearest_earlier(feats, chunk=13, progress=False)
    np.testing.assert_allclose(best[1:], corr.max(1).values[1:].numpy(), atol=1e-5)
    np.testing.assert_array_equal(arg[1:], corr.max(1).indices[1:].numpy())
    # a threshold just below the largest correlation removes exactly that image
    j = int(np.argmax(best))
    res = deduplicate(x, threshold=float(best[j]) - 1e-4, chunk=13, progress=False)
    assert res.removed.tolist() == [j]


def test_stored_integer_forms_give_same_result():
    """Correlations are scale free, so uint8 / uint16(R+G+B) stored pools dedup like floats."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (50, 1, 28, 28), dtype=np.uint8)
    x[33] = x[2]
    x[41] = np.clip(x[7].astype(int) + rng.integers(-3, 4, x[7].shape), 0, 255)
    r_u8 = deduplicate(x, chunk=16, progress=False)
    r_u16 = deduplicate(x.astype(np.uint16) * 3, chunk=16, progress=False)
    r_f = deduplicate(torch.from_numpy(x / 255.0), chunk=16, progress=False)
    assert r_u8.removed.tolist() == [33, 41]
    np.testing.assert_array_equal(r_u8.kept, r_u16.kept)
    np.testing.assert_array_equal(r_u8.kept, r_f.kept)


def test_small_images_and_bad_input():
    x = smooth_images(10, size=12, seed=6)  # smaller than 20x20: used as is
    assert dedup_features(x).shape == (10, 144)
    x[9] = x[3] * 2
    assert deduplicate(x, progress=False).removed.tolist() == [9]
    with pytest.raises(ValueError, match="threshold"):
        deduplicate(x, threshold=1.5)
    with pytest.raises(ValueError, match="shape"):
        deduplicate(torch.zeros(5, 10))
