"""The API training code uses: a dataset's pool, and a training subset with its test set.

``load_split(dataset, n, subset, seed)`` gives the training subset S1(n) or S2(n) of a dataset and
its held-out test set (see :mod:`gahb.data.splits` for how they are drawn), as float32 tensors on
[0, 1]. ``dataset`` is a spec string (:mod:`gahb.data.specs`); real images are read and
deduplicated once into the prepared-dataset cache (:mod:`gahb.data.prepared`), synthetic ones
(``synthetic:...``) are generated on the fly (:func:`synthetic_split`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from gahb.data.prepared import (
    FORMAT_VERSION,
    MEMMAP_BYTES,
    VERIFY_FULL_BYTES,
    Pool,
    cache_root,
    dataset_dir_name,
    default_dataset_dir,
    open_prepared,
    prepare_dataset,
)
from gahb.data.specs import DEFAULT_SIZES, DEFAULT_THRESHOLDS, KINDS, DatasetSpec, default_threshold, parse_dataset_spec
from gahb.data.splits import check_subset

__all__ = [
    "DEFAULT_SIZES", "DEFAULT_THRESHOLDS", "FORMAT_VERSION", "KINDS", "MEMMAP_BYTES", "SYNTHETIC_N_TEST",
    "SYNTHETIC_PREFIX", "VERIFY_FULL_BYTES", "DatasetSpec", "Pool", "Split", "cache_root", "dataset_dir_name",
    "default_dataset_dir", "default_threshold", "is_synthetic_spec", "load_pool", "load_split", "open_prepared",
    "parse_dataset_spec", "parse_synthetic_dataset", "prepare_dataset", "synthetic_split",
]


def load_pool(dataset: str = "fashion-mnist", size: int | None = None, cache_dir: str | os.PathLike | None = None,
              dedup: bool = True, *, channels: int = 1, threshold: float | None = None,
              prepare: bool = True, progress: bool = True, verify: str = "auto") -> Pool:
    """The prepared pool for ``dataset``, preparing (and caching) it on first use.

    For a prepared directory the stored pool is used as is; a ``size`` that disagrees with it is
    an error. With ``prepare=False`` a missing cache is an error instead of being built.
    """
    spec = parse_dataset_spec(dataset)
    if spec.kind == "prepared":
        pool = open_prepared(spec.path, verify)
        stored = pool.image_shape[1]
        if size is not None and size != stored:
            raise ValueError(f"{spec.path} holds {stored}x{stored} images, not size={size}")
        return pool
    if not prepare:
        where = default_dataset_dir(dataset, size, channels, dedup, threshold, cache_dir)
        if not (where / "manifest.json").is_file():
            flags = "".join([f" --size {size}" if size is not None else "",
                             f" --channels {channels}" if channels != 1 else "",
                             " --no-dedup" if not dedup else "",
                             f" --threshold {threshold:g}" if dedup and threshold is not None else "",
                             f" --cache-dir {cache_dir}" if cache_dir is not None else ""])
            raise FileNotFoundError(f"{dataset} is not prepared yet (expected {where}); run "
                                    f"`gahb data prepare {dataset}{flags}`")
        return open_prepared(where, verify)
    return prepare_dataset(dataset, size=size, channels=channels, dedup=dedup, threshold=threshold,
                           cache_dir=cache_dir, progress=progress, verify=verify)


@dataclass
class Split:
    """One training subset and the shared held-out test set (see ``splits.py``).

    ``train``/``test`` are float32 (n, C, H, W) in [0, 1]; the index arrays are int64 pool rows;
    ``info`` is JSON-able and identifies the split exactly (dataset, pool hash, n, subset, seed).
    For a pool of patches (:mod:`gahb.data.patches`) ``train_groups``/``test_groups`` give each
    row's source photograph (an index into the manifest's ``source.photographs``), else None.
    """

    train: torch.Tensor
    test: torch.Tensor
    train_indices: np.ndarray
    test_indices: np.ndarray
    info: dict = field(default_factory=dict)
    train_groups: np.ndarray | None = None
    test_groups: np.ndarray | None = None


def load_split(dataset: str = "fashion-mnist", n: int = 1000, subset: str = "s1", seed: int = 0,
               n_test: int | None = None, size: int | None = None, cache_dir: str | None = None,
               dedup: bool = True, *, channels: int = 1, threshold: float | None = None,
               progress: bool = True, pool: Pool | None = None) -> Split:
    """Training subset S1(n) or S2(n) of a dataset plus its held-out test set.

    S1 and S2 are disjoint halves of one seeded permutation of the deduplicated pool, nested in
    n; the test set (default min(1000, P // 10) images) depends on ``seed`` and ``n_test`` only.
    For a pool of patches the three sets are disjoint by source photograph as well
    (:func:`gahb.data.splits.split_groups`), and ``info`` says so (``group_by``).
    n above the half size raises ValueError naming the maximum N. Pass ``pool`` to reuse an
    already opened pool. A ``synthetic:...`` spec is generated instead (:func:`synthetic_split`).
    """
    subset = check_subset(subset)
    if is_synthetic_spec(dataset):
        return synthetic_split(dataset, n=n, subset=subset, seed=seed, n_test=n_test, size=size,
                               progress=progress)
    if pool is None:
        pool = load_pool(dataset, size=size, cache_dir=cache_dir, dedup=dedup, channels=channels,
                         threshold=threshold, progress=progress)
    split = pool.split(seed, n_test)
    train_idx = split.subset(subset, n)
    info = {
        "dataset": str(dataset),
        "pool_path": str(pool.path),
        "pool_size": len(pool),
        "pool_sha256": pool.sha256,
        "image_shape": list(pool.image_shape),
        "n": int(n),
        "subset": subset,
        "seed": int(seed),
        "n_test": split.n_test,
        "max_n": split.max_n,
        "split_method": split.method,
    }
    groups = pool.groups
    if groups is not None:
        info["group_by"] = pool.manifest["groups"]["by"]
        info["groups"] = {"train": int(len(np.unique(groups[train_idx]))), "test": int(len(np.unique(groups[split.test]))),
                          "half1": int(len(np.unique(groups[split.half1]))),
                          "half2": int(len(np.unique(groups[split.half2])))}
    return Split(train=pool.get(train_idx), test=pool.get(split.test), train_indices=train_idx,
                 test_indices=split.test.copy(), info=info,
                 train_groups=None if groups is None else groups[train_idx].copy(),
                 test_groups=None if groups is None else groups[split.test].copy())


# ------------------------------------------------------------------------------------------------
# Synthetic datasets (generated, not prepared)

SYNTHETIC_PREFIX = "synthetic:"
SYNTHETIC_N_TEST = 1000


def is_synthetic_spec(dataset) -> bool:
    """True for ``synthetic:NAME[:k=v,...]`` (or ``synthetic:NAME?k=v&...``) specs."""
    return isinstance(dataset, str) and dataset.strip().lower().startswith(SYNTHETIC_PREFIX)


def parse_synthetic_dataset(dataset: str) -> tuple[str, dict]:
    """``"synthetic:calpha:alpha=2,size=32"`` or ``"synthetic:calpha?alpha=2&size=32"`` -> (name, kwargs)."""
    from gahb.data.synthetic import parse_synthetic_spec

    if not is_synthetic_spec(dataset):
        raise ValueError(f"not a synthetic dataset spec: {dataset!r} (expected 'synthetic:NAME:key=value,...')")
    body = dataset.strip()[len(SYNTHETIC_PREFIX):]
    if "?" in body:  # URL-like form: name?k=v&k=v
        name, _, query = body.partition("?")
        body = f"{name}:{query.replace('&', ',')}"
    name, kw = parse_synthetic_spec(body)
    for key in ("n", "seed"):
        if key in kw:
            raise ValueError(f"synthetic dataset spec {dataset!r}: {key!r} is not part of the spec; the "
                             "training-set size and seed come from load_split (gahb train --n / --data-seed)")
    return name, kw


def synthetic_split(dataset: str, n: int = 1000, subset: str = "s1", seed: int = 0, n_test: int | None = None,
                    size: int | None = None, progress: bool = False) -> Split:
    """Training subset and test set of a generated synthetic dataset (:mod:`gahb.data.synthetic`).

    The three sets come from independent generator streams: test ``3 * seed``, S1 ``3 * seed + 1``,
    S2 ``3 * seed + 2`` (so they are disjoint with probability one, and S1(n) is a prefix of S1(m)
    for n < m, as for prepared pools). The image size is the spec's ``size`` or ``size`` (they
    must agree when both are given; default 80, the paper's). ``n_test`` defaults to 1000.
    """
    from gahb.data.synthetic import SyntheticConfig

    subset = check_subset(subset)
    name, kw = parse_synthetic_dataset(dataset)
    spec_size = kw.pop("size", None)
    if spec_size is not None and size is not None and spec_size != size:
        raise ValueError(f"{dataset!r} has size={spec_size} but size={size} was requested")
    size = spec_size if spec_size is not None else (size if size is not None else 80)
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    n_test = SYNTHETIC_N_TEST if n_test is None else int(n_test)
    if n_test < 1:
        raise ValueError(f"n_test must be a positive integer, got {n_test}")
    seed = int(seed)
    train_seed = 3 * seed + (1 if subset == "s1" else 2)
    train_cfg = SyntheticConfig(name=name, n=int(n), size=size, seed=train_seed, params=kw)
    test_cfg = SyntheticConfig(name=name, n=n_test, size=size, seed=3 * seed, params=kw)
    train_images = train_cfg.generate(progress=progress)
    test_images = test_cfg.generate(progress=False)
    info = {
        "dataset": str(dataset),
        "synthetic": name,
        "params": train_cfg.to_dict()["params"],
        "image_shape": list(train_images.shape[1:]),
        "n": int(n),
        "subset": subset,
        "seed": seed,
        "n_test": n_test,
        "train_seed": train_seed,
        "test_seed": 3 * seed,
        "split_method": "synthetic-streams-v1",
    }
    return Split(train=train_images, test=test_images, train_indices=np.arange(int(n), dtype=np.int64),
                 test_indices=np.arange(n_test, dtype=np.int64), info=info)
