"""Patches of photographs (gahb.data.patches): spec, geometry, manifest, cache, and the split by photograph."""

from __future__ import annotations

import numpy as np
import pytest

from gahb.data.splits import GROUP_SPLIT_METHOD, split_groups


def grouped_pool(seed=0, n_groups=60):
    rng = np.random.default_rng(seed)
    return np.repeat(np.arange(n_groups), rng.integers(1, 17, n_groups))


def test_split_groups_contract():
    groups = grouped_pool()
    s = split_groups(groups, seed=3, n_test=40)
    assert s.method == GROUP_SPLIT_METHOD and len(s.test) == 40 and len(s.half1) == len(s.half2) == s.max_n
    sets = [set(groups[idx].tolist()) for idx in (s.test, s.half1, s.half2)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert len(set(s.test) | set(s.half1) | set(s.half2)) == 40 + 2 * s.max_n
    # the halves lose less than one photograph's worth to balancing
    assert len(groups) - 40 - 2 * s.max_n < 2 * 16 + 16
    for sub in ("s1", "s2"):  # nested in N
        np.testing.assert_array_equal(s.subset(sub, 10), s.subset(sub, s.max_n)[:10])
    again = split_groups(groups, seed=3, n_test=40)
    for a, b in ((s.test, again.test), (s.half1, again.half1), (s.half2, again.half2)):
        np.testing.assert_array_equal(a, b)
    other = split_groups(groups, seed=4, n_test=40)
    assert not np.array_equal(other.half1, s.half1) and not np.array_equal(other.test, s.test)
    # S1(10) mixes photographs rather than taking one photograph's patches
    assert len(set(groups[s.subset("s1", 10)].tolist())) >= 5
    with pytest.raises(ValueError, match=f"maximum N is {s.max_n}.*share no photograph"):
        s.subset("s1", s.max_n + 1)
    with pytest.raises(ValueError, match="two non-empty training halves"):
        split_groups(np.array([0, 0, 1, 1]), n_test=1)
    with pytest.raises(ValueError, match="1-D integer"):
        split_groups(np.zeros((2, 2), dtype=np.int64))
