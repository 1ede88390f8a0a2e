"""Datasets: readers, the paper's deduplication, disjoint subsets S1/S2, and the prepared cache.

The API training code uses::

    from gahb.data import load_split
    split = load_split("fashion-mnist", n=1000, subset="s1", seed=0)
    split.train, split.test        # float32 (n, C, H, W) in [0, 1]; disjoint; test independent of n

See ``specs.py`` for dataset spec strings, ``prepared.py`` for the cache layout, ``readers/``
for the formats, ``dedup.py`` for the duplicate rule, ``splits.py`` for how S1, S2 and the test
set are drawn, and ``synthetic/`` for the generated datasets.
"""

from gahb.data.datasets import (
    DatasetSpec,
    Pool,
    Split,
    cache_root,
    default_dataset_dir,
    load_pool,
    load_split,
    open_prepared,
    parse_dataset_spec,
    prepare_dataset,
)
from gahb.data.dedup import DedupResult, deduplicate, deduplicate_dense, dedup_features
from gahb.data.readers import (
    ImageReadError,
    RawImages,
    center_crop,
    load_array,
    load_image,
    read_idx,
    save_image,
)
from gahb.data.splits import PoolSplit, default_n_test, seeded_permutation, split_pool

__all__ = [
    "DatasetSpec", "DedupResult", "ImageReadError", "Pool", "PoolSplit", "RawImages", "Split",
    "cache_root", "center_crop", "dedup_features", "deduplicate", "deduplicate_dense", "default_dataset_dir",
    "default_n_test", "load_array", "load_image", "load_pool", "load_split", "open_prepared",
    "parse_dataset_spec", "prepare_dataset", "read_fashion_mnist",
    "read_idx", "save_image", "seeded_permutation", "split_pool",
]
