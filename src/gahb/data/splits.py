"""Disjoint training subsets S1, S2 and a held-out test set (paper section 2.2: two non-overlapping sets of N images).

The paper trains two networks on non-overlapping subsets: S1 = the first N images of the
deduplicated tensor, S2 = the last N, in ``os.listdir`` order (no shuffling), with N capped at
half the pool. gahb keeps the structure and replaces the file-system order by one seeded
permutation of the pool, which removes any ordering bias (e.g. Fashion-MNIST's train/t10k blocks):

    perm  = seeded permutation of range(P)
    test  = perm[:n_test]                                  (held out, never trained on)
    H1    = perm[n_test : n_test + h],   H2 = perm[n_test + h : n_test + 2h],  h = (P - n_test) // 2
    S1(N) = H1[:N],   S2(N) = H2[:N],   N <= h = max_n

so S1, S2 and the test set are pairwise disjoint for every N, S1(10) is inside S1(100)
(nested, like the paper's prefixes), and the test set depends on the seed and n_test only,
never on N or on the subset.

The permutation sorts the raw 64-bit outputs of numpy's PCG64 bit generator. Bit generator
streams are frozen by numpy's compatibility policy (unlike ``Generator.permutation``, whose
algorithm may change between releases), so a split is reproducible across numpy versions.

**Grouped pools** (patches cut from photographs, :mod:`gahb.data.patches`): every image carries a
group, its source photograph, and :func:`split_groups` keeps each group within one of the three
sets, so that no photograph contributes to two of them (the paper's S1 and S2 share no image,
section 2; neighbouring patches of one photograph are far from independent images). With one
PCG64 stream of G + P raw draws, the first G ordering the groups and the next P the images:

    groups in the first's order: the shortest prefix holding >= n_test images is the test
        photographs; test = the first n_test of their images in the second order;
    the remaining groups, in that order, each go to the half holding fewer images so far
        (ties to half 1), so the two halves differ by less than one photograph;
    H1, H2 = each half's images in the second order, cut to h = the smaller count;
    S1(N) = H1[:N],   S2(N) = H2[:N],   N <= h = max_n

The contract is unchanged: pairwise disjoint (now by photograph), nested in N, test set a
function of (groups, seed, n_test) only. Images of the test photographs beyond the n_test, and the
surplus of the larger half, are used by none of the sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLIT_METHOD = "pcg64-raw-argsort-v1"
GROUP_SPLIT_METHOD = "pcg64-grouped-v1"
SUBSETS = ("s1", "s2")


def default_n_test(pool_size: int) -> int:
    """Held-out test-set size when none is given: min(1000, P // 10)."""
    return min(1000, pool_size // 10)


def seeded_permutation(n: int, seed: int) -> np.ndarray:
    """A uniformly random permutation of range(n), reproducible across numpy versions."""
    if n < 0:
        raise ValueError(f"permutation size must be >= 0, got {n}")
    keys = np.random.PCG64(int(seed)).random_raw(n)
    return np.argsort(keys, kind="stable").astype(np.int64)


def _ordered(indices: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """``indices`` sorted by their ``rank`` (a seeded order of all pool rows)."""
    return indices[np.argsort(rank[indices], kind="stable")].astype(np.int64)


def check_subset(subset: str) -> str:
    s = str(subset).lower()
    if s not in SUBSETS:
        raise ValueError(f"subset must be 's1' or 's2' (the two disjoint training halves), got {subset!r}")
    return s


@dataclass(frozen=True)
class PoolSplit:
    """Index-level split of a pool of ``pool_size`` images (all arrays int64 pool indices)."""

    pool_size: int
    seed: int
    n_test: int
    test: np.ndarray
    half1: np.ndarray
    half2: np.ndarray
    method: str = SPLIT_METHOD

    @property
    def max_n(self) -> int:
        """Largest training-set size N that keeps S1 and S2 disjoint (the half size)."""
        return int(self.half1.shape[0])

    def subset(self, name: str, n: int) -> np.ndarray:
        """S1(n) or S2(n): the first ``n`` indices of half 1 or half 2."""
        name = check_subset(name)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"training-set size n must be a positive integer, got {n!r}")
        if n > self.max_n:
            rule = ("the smaller of two halves that share no photograph" if self.method == GROUP_SPLIT_METHOD
                    else "(pool - n_test) // 2")
            raise ValueError(f"n = {n} is larger than a training half: with a pool of {self.pool_size} "
                             f"images and {self.n_test} held out for testing, the maximum N is "
                             f"{self.max_n} (max N = {rule})")
        half = self.half1 if name == "s1" else self.half2
        return half[:n].copy()


def split_pool(pool_size: int, seed: int = 0, n_test: int | None = None) -> PoolSplit:
    """Split ``range(pool_size)`` into a test set and two equal disjoint halves (module docstring)."""
    pool_size = int(pool_size)
    if n_test is None:
        n_test = default_n_test(pool_size)
    if isinstance(n_test, bool) or int(n_test) != n_test or n_test < 0:
        raise ValueError(f"n_test must be a non-negative integer, got {n_test!r}")
    n_test = int(n_test)
    if pool_size - n_test < 2:
        raise ValueError(f"a pool of {pool_size} images cannot hold a test set of {n_test} plus two "
                         "non-empty training halves")
    perm = seeded_permutation(pool_size, seed)
    h = (pool_size - n_test) // 2
    return PoolSplit(pool_size=pool_size, seed=int(seed), n_test=n_test, test=perm[:n_test],
                     half1=perm[n_test:n_test + h], half2=perm[n_test + h:n_test + 2 * h])


def split_groups(groups, seed: int = 0, n_test: int | None = None) -> PoolSplit:
    """Split a pool whose image i belongs to group ``groups[i]`` (its source photograph) into a test
    set and two equal halves that share no group (module docstring); ``n_test`` defaults to
    :func:`default_n_test` of the pool size. The result's ``subset`` works as for :func:`split_pool`."""
    groups = np.asarray(groups)
    if groups.ndim != 1 or not np.issubdtype(groups.dtype, np.integer):
        raise ValueError(f"groups must be a 1-D integer array (one group per image), got {groups.dtype} "
                         f"{groups.shape}")
    pool_size = int(groups.shape[0])
    if n_test is None:
        n_test = default_n_test(pool_size)
    if isinstance(n_test, bool) or int(n_test) != n_test or n_test < 0:
        raise ValueError(f"n_test must be a non-negative integer, got {n_test!r}")
    n_test = int(n_test)
    ids, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    keys = np.random.PCG64(int(seed)).random_raw(len(ids) + pool_size)
    group_order = np.argsort(keys[:len(ids)], kind="stable")
    rank = np.empty(pool_size, dtype=np.int64)
    rank[np.argsort(keys[len(ids):], kind="stable")] = np.arange(pool_size)

    cum = np.cumsum(counts[group_order])
    k = 0 if n_test == 0 else int(np.searchsorted(cum, n_test)) + 1  # test photographs: a prefix
    if k > len(ids):
        raise ValueError(f"a pool of {pool_size} images cannot hold a test set of {n_test}")
    half_of = np.full(len(ids), -1, dtype=np.int64)  # -1 test, 0 half 1, 1 half 2
    filled = [0, 0]
    for g in group_order[k:]:
        side = 0 if filled[0] <= filled[1] else 1
        half_of[g] = side
        filled[side] += int(counts[g])
    h = min(filled)
    if h < 1:
        raise ValueError(f"{len(ids)} photographs ({pool_size} images) cannot hold a test set of {n_test} "
                         f"images ({k} photographs) plus two non-empty training halves that share no photograph")
    row_half = half_of[inverse]
    test_groups = np.zeros(len(ids), dtype=bool)
    test_groups[group_order[:k]] = True
    test = _ordered(np.flatnonzero(test_groups[inverse]), rank)[:n_test]
    half1 = _ordered(np.flatnonzero(row_half == 0), rank)[:h]
    half2 = _ordered(np.flatnonzero(row_half == 1), rank)[:h]
    return PoolSplit(pool_size=pool_size, seed=int(seed), n_test=n_test, test=test, half1=half1, half2=half2,
                     method=GROUP_SPLIT_METHOD)
