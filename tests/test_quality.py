"""Sample quality (gahb.analysis.quality, gahb.analysis.classifier): the Frechet distance, its interval,
the classifier's labels, training, cache and determinism, and the ranking of the references."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
import torch

from gahb.analysis import classifier as clf_mod
from gahb.analysis.classifier import ClassifierConfig, held_out_rows, load_classifier, pool_labels, training_rows
from gahb.analysis.quality import (
    RANKING,
    frechet_batch,
    frechet_distance,
    frechet_interval,
    gaussian_blur,
    quality_references,
    ranks_references,
)


# -- the distance ------------------------------------------------------------------------------------
def test_frechet_distance_exact_identities():
    g = np.random.default_rng(0)
    a = g.normal(size=(200, 6)) @ g.normal(size=(6, 6)) + 3.0
    shift = np.arange(6.0)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    # a shift moves only the means: + ||c||^2
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-8)
    # a scale s: ||(1 - s) mu||^2 + (1 - s)^2 tr(S)
    s, mu, cov = 0.5, a.mean(0), np.cov(a, rowvar=False)
    assert frechet_distance(a, s * a) == pytest.approx((1 - s) ** 2 * (mu @ mu + np.trace(cov)), rel=1e-8)


def test_frechet_batch_agrees_with_scipy_also_when_singular():
    g = np.random.default_rng(1)
    for n, d in ((300, 20), (8, 16)):  # n <= d: singular covariances, as with few samples
        a, b = g.normal(size=(n, d)), g.normal(size=(n, d)) @ g.normal(size=(d, d)) + 1
        batch = float(frechet_batch(torch.tensor(a)[None], torch.tensor(b)[None])[0])
        assert batch == pytest.approx(frechet_distance(a, b), rel=1e-6)


def test_frechet_needs_equal_set_sizes():
    with pytest.raises(ValueError, match="same size"):
        frechet_distance(np.zeros((10, 4)), np.zeros((11, 4)))
    with pytest.raises(ValueError, match="same size"):
        frechet_interval(np.zeros((10, 4)), np.zeros((10, 3)))


def test_frechet_interval_brackets_the_estimate_and_is_reproducible():
    g = np.random.default_rng(2)
    a, b = g.normal(size=(64, 8)), g.normal(size=(64, 8)) + 0.5
    iv = frechet_interval(a, b, resamples=400, seed=3)
    assert 0 <= iv.lo <= iv.estimate <= iv.hi and iv.n == 128 and iv.level == 0.95
    assert iv == frechet_interval(a, b, resamples=400, seed=3)
    assert iv.estimate == pytest.approx(frechet_distance(a, b))


def test_gaussian_blur_keeps_constants_and_the_mean_and_lowers_the_contrast():
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(gaussian_blur(torch.full((1, 1, 28, 28), 0.3), 2.5), torch.tensor(0.3), atol=1e-6)
    light, heavy = gaussian_blur(x, 1.0), gaussian_blur(x, 2.5)
    assert light.shape == x.shape
    assert float(light.mean()) == pytest.approx(float(x.mean()), abs=0.01)
    assert float(x.std()) > float(light.std()) > float(heavy.std())


# -- labels, training rows, the cache ----------------------------------------------------------------
def _idx(arr: np.ndarray, code: int = 0x08) -> bytes:
    return struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


@pytest.fixture(scope="module")
def small_fmnist(tmp_path_factory):
    """A Fashion-MNIST folder of 150 + 50 random images with labels, one t10k image a copy of a
    training image (deduplication removes it), prepared in a private cache."""
    from gahb.data.datasets import load_pool

    root = tmp_path_factory.mktemp("fmnist")
    g = np.random.default_rng(0)
    images = g.integers(0, 256, (200, 28, 28), dtype=np.uint8)
    images[150] = images[3]
    labels = g.integers(0, 10, 200).astype(np.uint8)
    for stem, sl in (("train", slice(0, 150)), ("t10k", slice(150, 200))):
        (root / f"{stem}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images[sl])))
        (root / f"{stem}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(labels[sl])))
    pool = load_pool(f"fashion-mnist:{root}", cache_dir=root / "cache", progress=False)
    return pool, images, labels, root / "cache"


def test_pool_labels_follow_the_images_through_deduplication(small_fmnist):
    pool, images, labels, _ = small_fmnist
    assert len(pool) == 199  # the copy is gone
    by_image = {images[i].tobytes(): int(labels[i]) for i in range(200) if i != 150}
    got = pool_labels(pool)
    assert [by_image[np.asarray(pool.raw[r, 0]).tobytes()] for r in range(len(pool))] == got.tolist()


def test_the_classifier_never_sees_the_held_out_images(small_fmnist):
    from gahb.data.splits import split_pool

    pool = small_fmnist[0]
    split = split_pool(len(pool), 0)
    rows = training_rows(len(pool), split, ClassifierConfig())
    held = held_out_rows(split)
    assert len(held) == 2 * split.n_test and not set(rows) & set(held) and len(rows) + len(held) == len(pool)
    sub = training_rows(len(pool), split, ClassifierConfig(train_images=50))
    assert len(sub) == 50 and set(sub) <= set(rows)


def test_the_classifier_is_cached_deterministic_and_rebuilt_when_stale(small_fmnist, monkeypatch):
    pool, _, _, cache = small_fmnist
    cfg = ClassifierConfig(widths=(4, 8), features=8, epochs=2, batch_size=16)
    first = load_classifier(pool, config=cfg, cache_dir=cache, progress=False)
    man = json.loads((first.path / "manifest.json").read_text())
    assert man["accuracy"]["held_out_test"] >= 0 and man["data"]["train_images"] == len(pool) - 2 * 19
    assert man["request"]["pool_sha256"] == pool.sha256 and "train_rows_sha256" in man["data"]
    sha = man["weights"]["sha256"]

    def no_training(*a, **k):
        raise AssertionError("trained again")

    with monkeypatch.context() as m:  # reused: same request, weights match their hash
        m.setattr(clf_mod, "train_classifier", no_training)
        again = load_classifier(pool, config=cfg, cache_dir=cache, progress=False)
    x = torch.from_numpy(np.array(pool.raw[:5])).float() / 255
    assert torch.equal(again.embed(x)[0], first.embed(x)[0])
    # forced: trained again, the same weights (seeded initialisation and order, one thread)
    assert load_classifier(pool, config=cfg, cache_dir=cache, force=True, progress=False).manifest["weights"]["sha256"] == sha
    # corrupt weights are rebuilt; another split seed is another classifier
    (first.path / "model.safetensors").write_bytes(b"garbage")
    assert load_classifier(pool, config=cfg, cache_dir=cache, progress=False).manifest["weights"]["sha256"] == sha
    other = load_classifier(pool, seed=1, config=cfg, cache_dir=cache, progress=False)
    assert other.path != first.path


def test_a_pool_without_labels_says_so(tmp_path):
    from gahb.data.datasets import load_pool

    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((30, 8, 8), dtype=np.float32))
    pool = load_pool(f"npy:{tmp_path / 'x.npy'}", cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="no class labels"):
        pool_labels(pool)


# -- the ranking on real images ----------------------------------------------------------------------
def test_the_tiny_classifier_ranks_test_images_light_blur_heavy_blur_noise(tmp_path):
    """The acceptance ranking, with the tiny classifier on Fashion-MNIST: the same code as the
    studies' standard one, trained in seconds."""
    from gahb.data.datasets import load_pool
    from gahb.data.readers import fashion_mnist_files
    from gahb.data.splits import split_pool

    try:
        fashion_mnist_files()
    except FileNotFoundError as e:
        pytest.skip(f"Fashion-MNIST is not installed (Debian package dataset-fashion-mnist): {e}")
    pool = load_pool("fashion-mnist", progress=False)
    clf = load_classifier(pool, config="tiny", cache_dir=tmp_path, progress=False)
    assert clf.manifest["accuracy"]["held_out_test"] > 0.75
    split = split_pool(len(pool), 0)
    refs = quality_references(clf, pool.get(split.test), pool.get(split.half1[: split.n_test]), 128,
                              resamples=500)
    d = [refs[k]["frechet"]["estimate"] for k in RANKING]
    assert ranks_references(refs), d
    conf = [refs[k]["confidence"]["estimate"] for k in ("floor", "blur_light", "blur_heavy")]
    assert conf[0] > conf[1] > conf[2]  # blur lowers the confidence (noise need not: see the module)
