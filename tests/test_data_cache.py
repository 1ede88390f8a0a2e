"""Dataset specs, the prepared-dataset cache, load_pool / load_split, and `gahb data`."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from gahb.cli import main as cli_main
from gahb.data import load_pool, load_split, open_prepared, parse_dataset_spec, prepare_dataset
from gahb.data import readers


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GAHB_CACHE", str(tmp_path / "cache"))


def make_npy(tmp_path, n=200, size=16, seed=0, dups=((3, 10), (4, 150))):
    """Distinct random uint8 images with exact copies planted at (original, copy)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    for i, j in dups:
        x[j] = x[i]
    p = tmp_path / "pool.npy"
    np.save(p, x)
    return p, x


def test_spec_parsing(tmp_path):
    assert parse_dataset_spec("fashion-mnist").kind == "fashion-mnist"
    s = parse_dataset_spec(f"fashion-mnist:{tmp_path}")
    assert s.kind == "fashion-mnist" and s.path == tmp_path.resolve()
    s = parse_dataset_spec(f"npy:{tmp_path}/a.npz#images")
    assert s.kind == "npy" and s.key == "images" and s.path.name == "a.npz"
    assert parse_dataset_spec(f"celeba:{tmp_path}").kind == "celeba"
    with pytest.raises(ValueError, match="folder:"):
        parse_dataset_spec(str(tmp_path))  # a plain folder is ambiguous
    with pytest.raises(ValueError, match="unknown dataset spec"):
        parse_dataset_spec("imagenet")


def test_prepare_writes_manifest_hash_and_reuses(tmp_path):
    path, x = make_npy(tmp_path)
    pool = prepare_dataset(f"npy:{path}", progress=False)
    m = pool.manifest
    assert pool.path.parent == tmp_path / "cache" / "datasets"
    assert m["source"]["n_images"] == 200 and m["dedup"]["n_removed"] == 2 and len(pool) == 198
    assert m["array"]["dtype"] == "uint8" and m["array"]["scale"] == 255.0  # 8-bit gray stays uint8
    stored = np.load(pool.path / "images.npy")
    import hashlib

    assert hashlib.sha256(stored.tobytes()).hexdigest() == m["array"]["sha256"]
    src = np.load(pool.path / "source_index.npy")
    np.testing.assert_array_equal(stored[:, 0], x[src])
    assert 10 not in src and 150 not in src
    dups = json.loads((pool.path / "duplicates.json").read_text())
    assert {(d["duplicate_of"], d["removed"]) for d in dups} == {(3, 10), (4, 150)}
    # second call reuses the cache (same hash, no rewrite)
    mtime = (pool.path / "images.npy").stat().st_mtime_ns
    again = prepare_dataset(f"npy:{path}", progress=False)
    assert again.path == pool.path and (pool.path / "images.npy").stat().st_mtime_ns == mtime
    # a different request goes elsewhere
    nodedup = prepare_dataset(f"npy:{path}", dedup=False, progress=False)
    assert nodedup.path != pool.path and len(nodedup) == 200
    # pool.get / images are floats in [0, 1]
    torch.testing.assert_close(pool.get([5, 0]), torch.from_numpy(x[[5, 0]][:, None] / 255.0).float())
    assert pool.images.shape == (198, 1, 16, 16)


def test_corrupt_cache_detected(tmp_path):
    path, _ = make_npy(tmp_path)
    pool = prepare_dataset(f"npy:{path}", progress=False)
    arr = np.load(pool.path / "images.npy")
    arr[0, 0, 0, 0] ^= 1
    np.save(pool.path / "images.npy", arr)
    with pytest.raises(ValueError, match="corrupt"):
        open_prepared(pool.path)
    np.save(pool.path / "images.npy", arr[:5])
    with pytest.raises(ValueError, match="manifest says"):
        open_prepared(pool.path, verify="shape")
    # --force rebuilds
    fixed = prepare_dataset(f"npy:{path}", force=True, progress=False)
    assert len(open_prepared(fixed.path, verify="full")) == 198


def test_rgb_folder_stored_exactly_as_channel_sum(tmp_path):
    rng = np.random.default_rng(1)
    d = tmp_path / "imgs"
    d.mkdir()
    rgb = rng.integers(0, 256, (6, 12, 12, 3), dtype=np.uint8)
    for i, im in enumerate(rgb):
        Image.fromarray(im).save(d / f"{i}.png")
    pool = prepare_dataset(f"folder:{d}", dedup=False, progress=False)
    assert pool.raw.dtype == np.uint16 and pool.scale == 765.0
    np.testing.assert_allclose(pool.images[:, 0].numpy(), rgb.astype(np.float64).mean(3) / 255.0, atol=1e-6)
    # gray images stored as RGB files compact back to uint8
    g = tmp_path / "grayrgb"
    g.mkdir()
    for i in range(4):
        v = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        Image.fromarray(np.stack([v] * 3, -1)).save(g / f"{i}.png")
    assert prepare_dataset(f"folder:{g}", dedup=False, progress=False).raw.dtype == np.uint8


def test_load_split_contract(tmp_path):
    path, x = make_npy(tmp_path, n=300, dups=())
    spec = f"npy:{path}"
    a = load_split(spec, n=50, subset="s1", seed=0, n_test=20, progress=False)
    b = load_split(spec, n=50, subset="s2", seed=0, n_test=20, progress=False)
    small = load_split(spec, n=5, subset="s1", seed=0, n_test=20, progress=False)
    for s in (a, b):
        assert s.train.dtype == torch.float32 and s.train.shape == (50, 1, 16, 16)
        assert s.test.shape == (20, 1, 16, 16) and float(s.train.max()) <= 1 and float(s.train.min()) >= 0
        assert s.train_indices.dtype == np.int64
        json.dumps(s.info)
    assert not set(a.train_indices) & set(b.train_indices)
    assert not set(a.test_indices) & (set(a.train_indices) | set(b.train_indices))
    np.testing.assert_array_equal(a.test_indices, b.test_indices)
    np.testing.assert_array_equal(small.test_indices, a.test_indices)
    np.testing.assert_array_equal(small.train_indices, a.train_indices[:5])
    # the tensors are the pool rows named by the indices (no dedup here: pool row = source row)
    torch.testing.assert_close(a.train, torch.from_numpy(x[a.train_indices][:, None] / 255.0).float())
    assert a.info["max_n"] == (300 - 20) // 2 and a.info["pool_size"] == 300 and a.info["subset"] == "s1"
    other = load_split(spec, n=50, subset="s1", seed=1, n_test=20, progress=False)
    assert not np.array_equal(other.train_indices, a.train_indices)
    with pytest.raises(ValueError, match="maximum N is 140"):
        load_split(spec, n=141, n_test=20, progress=False)
    with pytest.raises(ValueError, match="'s1' or 's2'"):
        load_split(spec, n=5, subset="both", progress=False)


def test_load_pool_prepared_dir_and_prepare_false(tmp_path):
    path, _ = make_npy(tmp_path)
    with pytest.raises(FileNotFoundError, match="gahb data prepare"):
        load_pool(f"npy:{path}", prepare=False)
    pool = load_pool(f"npy:{path}", progress=False)
    same = load_pool(str(pool.path))
    assert same.sha256 == pool.sha256
    with pytest.raises(ValueError, match="not size=32"):
        load_pool(str(pool.path), size=32)


def test_fashion_mnist_spec_tiny_folder_and_missing(tmp_path):
    fm = tmp_path / "fm"
    fm.mkdir()
    rng = np.random.default_rng(0)
    for stem, n in (("train-images-idx3-ubyte", 30), ("t10k-images-idx3-ubyte", 10)):
        a = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        hdr = struct.pack(">BBBB3I", 0, 0, 8, 3, n, 28, 28)
        (fm / (stem + ".gz")).write_bytes(gzip.compress(hdr + a.tobytes()))
    s = load_split(f"fashion-mnist:{fm}", n=10, n_test=4, progress=False)
    assert s.train.shape == (10, 1, 28, 28) and s.info["pool_size"] == 40
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_split(f"fashion-mnist:{tmp_path / 'nothing'}", n=1, progress=False)


def test_real_fashion_mnist_load_split():
    if not (readers.FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("dataset-fashion-mnist not installed")
    # no dedup here: the paper's dedup pass over 70k images takes about a minute
    s = load_split("fashion-mnist", n=100, subset="s2", dedup=False, progress=False)
    assert s.info["pool_size"] == 70000 and s.info["max_n"] == 34500
    assert s.train.shape == (100, 1, 28, 28) and s.test.shape == (1000, 1, 28, 28)


def test_cli_prepare_and_info(tmp_path, capsys):
    path, _ = make_npy(tmp_path)
    assert cli_main(["data", "info", f"npy:{path}"]) == 1  # not prepared yet
    assert "gahb data prepare" in capsys.readouterr().err
    out_dir = tmp_path / "prepared"
    assert cli_main(["data", "prepare", f"npy:{path}", "--out", str(out_dir), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "198 kept of 200" in text and "2 near-duplicates removed" in text and str(out_dir) in text
    assert cli_main(["data", "info", str(out_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["summary"]["images"] == 198 and info["summary"]["max_n"] == (198 - 19) // 2
    assert cli_main(["data", "prepare", "npy:/does/not/exist.npy", "--no-progress"]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli_main(["data", "prepare", "--help"])
    assert exc.value.code == 0
    assert "celeba:DIR" in capsys.readouterr().out


def test_concurrent_prepare_builds_once(tmp_path, monkeypatch):
    import threading

    from gahb.data import prepared

    path, _ = make_npy(tmp_path)
    calls, real_build = [], prepared._build

    def counting_build(*a, **k):
        calls.append(1)
        return real_build(*a, **k)

    monkeypatch.setattr(prepared, "_build", counting_build)
    results = []
    threads = [threading.Thread(target=lambda: results.append(prepare_dataset(f"npy:{path}", progress=False)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len({p.sha256 for p in results}) == 1
    assert len(calls) == 1  # the others waited on the lock, then reused the result
