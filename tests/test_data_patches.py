"""Patches of photographs (gahb.data.patches): spec, geometry, manifest, cache, and the split by photograph."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gahb.cli import main as cli_main
from gahb.data import load_pool, load_split, open_prepared, parse_dataset_spec, prepare_dataset, split_pool
from gahb.data.patches import PatchGeometry, patch_geometry
from gahb.data.readers import ImageReadError
from gahb.data.splits import GROUP_SPLIT_METHOD, split_groups

TRAIN400 = Path(__file__).resolve().parents[2] / "shared" / "published" / "images" / "Train400"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GAHB_CACHE", str(tmp_path / "cache"))


def photograph(rng, width: int, height: int) -> np.ndarray:
    """A smooth random field plus fine noise, uint8 (height, width): no two patches alike."""
    coarse = Image.fromarray(rng.uniform(0, 255, (4, 4)).astype(np.float32)).resize((width, height), Image.BICUBIC)
    x = np.asarray(coarse) * 0.7 + rng.uniform(0, 76, (height, width))
    return np.clip(x, 0, 255).astype(np.uint8)


def make_photos(folder: Path, sizes, seed: int = 0) -> list[np.ndarray]:
    """Gray PNG photographs named p00.png, p01.png, ... of the given (width, height)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = [photograph(rng, w, h) for w, h in sizes]
    for i, p in enumerate(photos):
        Image.fromarray(p).save(folder / f"p{i:02d}.png")
    return photos


SIZES = [(48, 40), (40, 48), (33, 33), (64, 50), (16, 16), (50, 70)]


def test_spec_grammar_and_defaults(tmp_path):
    s = parse_dataset_spec(f"patches:{tmp_path}")
    assert s.kind == "patches" and s.path == tmp_path.resolve() and s.options == {}
    assert patch_geometry(s.options) == PatchGeometry(40, None) and PatchGeometry().step == 40
    s = parse_dataset_spec(f"patches:{tmp_path}:size=32,stride=16")
    assert s.options == {"size": 32, "stride": 16} and s.describe().endswith(":size=32,stride=16")
    colon = tmp_path / "a:b"
    assert parse_dataset_spec(f"patches:{colon}").path == colon.resolve()  # ':' in a folder name
    assert parse_dataset_spec(f"patches:{colon}:size=8").path == colon.resolve()
    with pytest.raises(ValueError, match="not an int"):
        parse_dataset_spec(f"patches:{tmp_path}:size=2.5")
    with pytest.raises(ValueError, match="unknown option 'per_image'"):
        parse_dataset_spec(f"patches:{tmp_path}:per_image=4")
    with pytest.raises(ValueError, match="stride must be a positive integer"):
        parse_dataset_spec(f"patches:{tmp_path}:stride=0")
    with pytest.raises(ValueError, match="no folder"):
        parse_dataset_spec("patches::size=8")
    assert patch_geometry({}, size=20).size == 20  # --size sets the side the spec leaves open
    with pytest.raises(ValueError, match="size=16 but size=20"):
        patch_geometry({"size": 16}, size=20)


def test_grid_is_centred_and_non_overlapping_by_default():
    g = PatchGeometry(40)
    assert g.grid(180, 180) == ([10, 50, 90, 130], [10, 50, 90, 130])  # BSD400: 16 patches from pixel 10
    assert PatchGeometry(16).grid(48, 40) == ([4, 20], [0, 16, 32])
    assert PatchGeometry(16, 8).grid(33, 33) == ([0, 8, 16], [0, 8, 16])  # odd margin: extra pixel at the end
    with pytest.raises(ValueError, match="smaller than a 16x16 patch"):
        PatchGeometry(16).grid(15, 40)


def test_patches_are_the_photograph_crops_with_groups_and_manifest(tmp_path):
    photos = make_photos(tmp_path / "photos", SIZES)
    rgb = np.random.default_rng(5).integers(0, 256, (20, 36, 3), dtype=np.uint8)
    (tmp_path / "photos" / "sub").mkdir()
    Image.fromarray(rgb).save(tmp_path / "photos" / "sub" / "c.png")
    pool = prepare_dataset(f"patches:{tmp_path / 'photos'}:size=16", dedup=False, progress=False)
    m = pool.manifest
    names = ["p00.png", "p01.png", "p02.png", "p03.png", "p04.png", "p05.png", "sub/c.png"]
    counts = [6, 6, 4, 12, 1, 12, 2]
    assert [p["name"] for p in m["source"]["photographs"]] == names
    assert [p["patches"] for p in m["source"]["photographs"]] == counts
    assert m["source"]["n_photographs"] == 7 and m["source"]["n_images"] == len(pool) == sum(counts)
    for rec in m["source"]["photographs"]:
        assert rec["sha256"] == hashlib.sha256((tmp_path / "photos" / rec["name"]).read_bytes()).hexdigest()
    assert m["preprocessing"]["patch"] == {"size": 16, "stride": 16, "grid": "regular, centred"}
    assert m["groups"]["by"] == "photograph" and m["groups"]["n_groups"] == 7
    np.testing.assert_array_equal(pool.groups, np.repeat(np.arange(7), counts))
    assert pool.image_shape == (1, 16, 16) and float(pool.images.min()) >= 0 and float(pool.images.max()) <= 1
    # row 7 is p01.png's second patch: 40x48 (WxH) gives tops [0, 16, 32], lefts [4, 20]
    np.testing.assert_allclose(pool.get([7])[0, 0].numpy(), photos[1][0:16, 20:36] / 255.0, atol=1e-6)
    assert pool.manifest["array"]["dtype"] == "uint16"  # the RGB photograph keeps R+G+B
    rows = np.flatnonzero(pool.groups == 6)  # the RGB photograph: gray = RGB mean
    top, left = (20 - 16) // 2, (36 - 32) // 2
    np.testing.assert_allclose(pool.get(rows[1:])[0, 0].numpy(),
                               rgb[top:top + 16, left + 16:left + 32].astype(np.float64).mean(2) / 255.0, atol=1e-6)


def test_overlapping_stride(tmp_path):
    make_photos(tmp_path / "photos", [(33, 33)])
    pool = prepare_dataset(f"patches:{tmp_path / 'photos'}:size=16,stride=8", dedup=False, progress=False)
    assert len(pool) == 9 and pool.manifest["preprocessing"]["patch"]["stride"] == 8


def test_bad_folder_and_too_small_or_broken_photographs_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_dataset(f"patches:{tmp_path / 'nowhere'}", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        prepare_dataset(f"patches:{tmp_path / 'empty'}", progress=False)
    make_photos(tmp_path / "small", [(64, 64), (30, 64)])
    with pytest.raises(ImageReadError, match=r"p01\.png.*30x64 photograph is smaller than a 40x40 patch"):
        prepare_dataset(f"patches:{tmp_path / 'small'}", progress=False)
    make_photos(tmp_path / "broken", [(64, 64)])
    (tmp_path / "broken" / "z.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match=r"z\.png"):
        prepare_dataset(f"patches:{tmp_path / 'broken'}", progress=False)


def test_prepared_once_then_reused(tmp_path):
    make_photos(tmp_path / "photos", SIZES)
    spec = f"patches:{tmp_path / 'photos'}:size=16"
    pool = prepare_dataset(spec, dedup=False, progress=False)
    mtime = (pool.path / "images.npy").stat().st_mtime_ns
    again = load_pool(spec, dedup=False, progress=False)
    assert again.path == pool.path and (pool.path / "images.npy").stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.groups, pool.groups)
    assert load_pool(f"patches:{tmp_path / 'photos'}:size=16,stride=16", dedup=False).path == pool.path
    assert load_pool(f"patches:{tmp_path / 'photos'}", size=16, dedup=False).path == pool.path
    assert load_pool(str(pool.path)).groups is not None  # a prepared directory keeps its grouping
    assert prepare_dataset(f"{spec},stride=8", dedup=False, progress=False).path != pool.path
    groups = np.load(pool.path / "groups.npy")
    np.save(pool.path / "groups.npy", groups[::-1].copy())
    with pytest.raises(ValueError, match="groups.npy does not match the manifest"):
        open_prepared(pool.path)


def test_dedup_removes_near_identical_patches_across_photographs_and_keeps_groups(tmp_path):
    photos = make_photos(tmp_path / "photos", [(32, 32)] * 3)
    dup = photos[2].copy()
    dup[16:, 16:] = photos[0][:16, :16]  # patch 3 of photograph 2 repeats patch 0 of photograph 0
    Image.fromarray(dup).save(tmp_path / "photos" / "p02.png")
    pool = prepare_dataset(f"patches:{tmp_path / 'photos'}:size=16", progress=False)
    assert pool.manifest["dedup"]["n_removed"] == 1 and len(pool) == 11
    np.testing.assert_array_equal(pool.groups, [0] * 4 + [1] * 4 + [2] * 3)
    (d,) = json.loads((pool.path / "duplicates.json").read_text())
    assert (d["removed_name"], d["duplicate_of_name"]) == ("p02.png@16,16", "p00.png@0,0")


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


def test_load_split_is_disjoint_by_photograph_nested_and_test_independent_of_n(tmp_path):
    make_photos(tmp_path / "photos", [(48, 48)] * 30, seed=1)  # 30 photographs x 9 patches
    spec = f"patches:{tmp_path / 'photos'}:size=16"
    pool = load_pool(spec, dedup=False, progress=False)
    probe = load_split(spec, n=1, seed=0, n_test=27, pool=pool)
    max_n = probe.info["max_n"]
    a = load_split(spec, n=max_n, subset="s1", seed=0, n_test=27, progress=False)
    b = load_split(spec, n=max_n, subset="s2", seed=0, n_test=27, progress=False)
    small = load_split(spec, n=5, subset="s1", seed=0, n_test=27, progress=False)
    train_a, train_b, test = set(a.train_groups.tolist()), set(b.train_groups.tolist()), set(a.test_groups.tolist())
    assert not (train_a & train_b) and not (train_a & test) and not (train_b & test)
    np.testing.assert_array_equal(a.train_groups, pool.groups[a.train_indices])
    assert len(test) == 3 and a.info["group_by"] == "photograph" and a.info["split_method"] == GROUP_SPLIT_METHOD
    assert a.info["groups"]["test"] == 3 and a.info["groups"]["half1"] + a.info["groups"]["half2"] == 27
    np.testing.assert_array_equal(small.train_indices, a.train_indices[:5])
    np.testing.assert_array_equal(small.test_indices, a.test_indices)
    np.testing.assert_array_equal(b.test_indices, a.test_indices)
    json.dumps(a.info)
    # the same pool split without the grouping shares photographs: what the grouped split prevents
    plain = split_pool(len(pool), 0, 27)
    assert set(pool.groups[plain.half1].tolist()) & set(pool.groups[plain.half2].tolist())


def test_cli_prepare_reports_grouping(tmp_path, capsys):
    make_photos(tmp_path / "photos", [(48, 48)] * 12)
    assert cli_main(["data", "prepare", f"patches:{tmp_path / 'photos'}:size=16", "--no-dedup", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "108 kept of 108" in out and "by photograph: 12" in out


def test_bsd400_train400_at_40x40():
    if not TRAIN400.is_dir():
        pytest.skip(f"BSD400 photographs not found at {TRAIN400} (../shared/published/images/Train400 "
                    "beside the repository); this optional check needs them")
    pool = load_pool(f"patches:{TRAIN400}", progress=False)
    m = pool.manifest
    assert m["source"]["n_photographs"] == 400 and m["source"]["n_images"] == 400 * 16
    assert abs(len(pool) - 6298) <= 3  # 102 near-duplicates removed (float rounding at the threshold aside)
    split = pool.split(0)
    assert split.n_test == len(pool) // 10 and abs(split.max_n - 2826) <= 16
    sets = [set(pool.groups[i].tolist()) for i in (split.test, split.half1, split.half2)]
    assert sum(map(len, sets)) == 400 and len(sets[0] | sets[1] | sets[2]) == 400
