"""Readers: IDX, Fashion-MNIST folder, image folders, .npy/.npz, CelebA and LSUN preprocessing,
load_image/save_image. Every file is written by the tests themselves."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gahb.data import readers
from gahb.data.readers import (
    ImageReadError,
    array_layout,
    load_image,
    read_array_raw,
    read_celeba_raw,
    read_fashion_mnist_raw,
    read_idx,
    read_image_folder_raw,
    read_lsun_raw,
    save_image,
)


def idx_bytes(arr: np.ndarray) -> bytes:
    assert arr.dtype == np.uint8
    return struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_fmnist(folder: Path, n_train=5, n_test=3, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = []
    for stem, n in (("train-images-idx3-ubyte", n_train), ("t10k-images-idx3-ubyte", n_test)):
        a = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        data = idx_bytes(a)
        if gz:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
        arrays.append(a)
    return np.concatenate(arrays)


# ------------------------------------------------------------------------------------------------
# IDX / Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip(tmp_path, gz):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = idx_bytes(a)
    p = tmp_path / "x.idx"
    p.write_bytes(gzip.compress(data) if gz else data)
    out = read_idx(p)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, a)


def test_idx_big_endian_int32(tmp_path):
    a = np.array([[1, -2], [70000, 3]], dtype=">i4")
    p = tmp_path / "i.idx"
    p.write_bytes(struct.pack(">BBBB", 0, 0, 0x0C, 2) + struct.pack(">2I", 2, 2) + a.tobytes())
    np.testing.assert_array_equal(read_idx(p), a.astype(np.int32))


def test_idx_bad_magic_truncated_trailing(tmp_path):
    a = np.zeros((2, 4, 4), np.uint8)
    good = idx_bytes(a)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02" + good[2:])
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    trunc = tmp_path / "trunc"
    trunc.write_bytes(good[:-5])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(trunc)
    trail = tmp_path / "trail"
    trail.write_bytes(good + b"\0")
    with pytest.raises(ValueError, match="trailing"):
        read_idx(trail)
    gz_trunc = tmp_path / "t.gz"
    gz_trunc.write_bytes(gzip.compress(good)[:-10])
    with pytest.raises(ValueError, match="gzip"):
        read_idx(gz_trunc)
    short_header = tmp_path / "short"
    short_header.write_bytes(good[:10])
    with pytest.raises(ValueError, match="header"):
        read_idx(short_header)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_folder(tmp_path, gz):
    ref = write_fmnist(tmp_path / "fm", gz=gz)
    x = read_fashion_mnist_raw(tmp_path / "fm", progress=False).to_tensor()
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.float32
    # train first, then t10k; value = byte / 255
    np.testing.assert_allclose(x[:, 0].numpy(), ref / 255.0, rtol=0, atol=1e-7)


def test_fashion_mnist_resize(tmp_path):
    write_fmnist(tmp_path / "fm")
    raw = readers.read_fashion_mnist_raw(tmp_path / "fm", size=14, progress=False)
    assert raw.data.shape == (8, 1, 14, 14) and raw.data.dtype == np.uint8 and raw.scale == 255.0


def test_fashion_mnist_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        read_fashion_mnist_raw(tmp_path / "nowhere", progress=False).to_tensor()
    (tmp_path / "half").mkdir()
    write_fmnist(tmp_path / "half")
    (tmp_path / "half" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        read_fashion_mnist_raw(tmp_path / "half", progress=False).to_tensor()


def test_fashion_mnist_truncated_file(tmp_path):
    write_fmnist(tmp_path / "fm", gz=False)
    p = tmp_path / "fm" / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        read_fashion_mnist_raw(tmp_path / "fm", progress=False).to_tensor()


def test_fashion_mnist_real_files():
    if not (readers.FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("dataset-fashion-mnist not installed")
    raw = readers.read_fashion_mnist_raw(progress=False)
    assert raw.data.shape == (70000, 1, 28, 28) and raw.data.dtype == np.uint8
    # all 70,000 are pairwise distinct as byte strings (datasets.md)
    assert len({row.tobytes() for row in raw.data.reshape(70000, -1)}) == 70000


# ------------------------------------------------------------------------------------------------
# Folders, load_image / save_image


def _gray_png(path: Path, value: np.ndarray):
    Image.fromarray(value.astype(np.uint8)).save(path)


def test_image_folder_png_jpeg_sorted_gray(tmp_path):
    rng = np.random.default_rng(1)
    d = tmp_path / "imgs"
    d.mkdir()
    g = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    _gray_png(d / "b.png", g)
    Image.fromarray(rgb).save(d / "a.png")
    flat = np.full((12, 10, 3), 90, np.uint8)
    Image.fromarray(flat).save(d / "c.jpg", quality=95)
    (d / "notes.txt").write_text("not an image")
    x = read_image_folder_raw(d, progress=False).to_tensor()
    assert x.shape == (3, 1, 12, 10)
    # a.png comes first (sorted), gray = mean of RGB exactly
    np.testing.assert_allclose(x[0, 0].numpy(), rgb.astype(np.float64).mean(2) / 255.0, atol=1e-6)
    np.testing.assert_allclose(x[1, 0].numpy(), g / 255.0, atol=1e-6)
    assert abs(float(x[2].mean()) - 90 / 255) < 3 / 255  # JPEG of a flat image
    x3 = read_image_folder_raw(d, channels=3, progress=False).to_tensor()
    assert x3.shape == (3, 3, 12, 10)
    np.testing.assert_allclose(x3[1].numpy(), np.repeat(g[None] / 255.0, 3, 0), atol=1e-6)


def test_image_folder_size_mismatch_names_file(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    _gray_png(d / "a.png", np.zeros((8, 8)))
    _gray_png(d / "b.png", np.zeros((8, 9)))
    with pytest.raises(ImageReadError, match="b.png"):
        read_image_folder_raw(d, progress=False).to_tensor()


def test_image_folder_unreadable_names_file(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    _gray_png(d / "a.png", np.zeros((8, 8)))
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageReadError, match="broken.png"):
        read_image_folder_raw(d, progress=False).to_tensor()
    full = tmp_path / "t.jpg"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(full)
    (d / "broken.png").unlink()
    (d / "cut.jpg").write_bytes(full.read_bytes()[:200])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        read_image_folder_raw(d, progress=False).to_tensor()


def test_image_folder_empty_and_missing(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        read_image_folder_raw(tmp_path / "empty").to_tensor()
    with pytest.raises(FileNotFoundError):
        read_image_folder_raw(tmp_path / "missing").to_tensor()


def test_image_folder_16bit_refused(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(d / "deep.png")
    with pytest.raises(ImageReadError, match="deep.png.*16-bit"):
        read_image_folder_raw(d, progress=False).to_tensor()


def test_image_folder_threads_match_serial(tmp_path):
    rng = np.random.default_rng(2)
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(d / f"{i:03d}.png")
    a = readers.read_image_folder_raw(d, progress=False).data
    b = readers.read_image_folder_raw(d, progress=False, workers=3).data
    np.testing.assert_array_equal(a, b)


def test_load_save_image_roundtrip(tmp_path):
    rng = np.random.default_rng(3)
    img = torch.from_numpy(rng.integers(0, 256, (3, 9, 7)).astype(np.float32) / 255)
    save_image(tmp_path / "c.png", img)
    back = load_image(tmp_path / "c.png", channels=3)
    assert back.shape == (3, 9, 7)
    torch.testing.assert_close(back, img, atol=1e-6, rtol=0)
    gray = load_image(tmp_path / "c.png", channels=1)
    torch.testing.assert_close(gray, img.mean(0, keepdim=True), atol=1e-6, rtol=0)
    # clamping, (H, W) and (1, C, H, W) inputs
    save_image(tmp_path / "g.png", torch.tensor([[-1.0, 0.5], [2.0, 1.0]]))
    g = load_image(tmp_path / "g.png")
    torch.testing.assert_close(g[0], torch.tensor([[0.0, 128 / 255], [1.0, 1.0]]), atol=1e-6, rtol=0)
    save_image(tmp_path / "b.png", torch.rand(1, 1, 4, 4))
    assert load_image(tmp_path / "b.png").shape == (1, 4, 4)


def test_load_save_image_errors(tmp_path):
    with pytest.raises(ValueError, match="C in"):
        save_image(tmp_path / "x.png", torch.rand(2, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        save_image(tmp_path / "x.png", torch.full((1, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="extension"):
        save_image(tmp_path / "x.xyz", torch.rand(1, 4, 4))
    with pytest.raises(ValueError, match="channels must be"):
        load_image(tmp_path / "x.png", channels=2)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="bad.png"):
        load_image(tmp_path / "bad.png")
    np.save(tmp_path / "g.npy", np.random.rand(5, 5).astype(np.float32))
    assert load_image(tmp_path / "g.npy").shape == (1, 5, 5)
    with pytest.raises(ValueError, match="1 channel"):
        load_image(tmp_path / "g.npy", channels=3)
    np.save(tmp_path / "c.npy", np.random.rand(3, 5, 5).astype(np.float32))
    torch.testing.assert_close(load_image(tmp_path / "c.npy"),
                               torch.from_numpy(np.load(tmp_path / "c.npy").mean(0, keepdims=True)))


# ------------------------------------------------------------------------------------------------
# Arrays


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw"])
def test_array_layouts_uint8(tmp_path, layout):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (6, 3, 8, 5), dtype=np.uint8)  # NCHW reference
    stored = {"nhw": x[:, 0], "nhwc": x.transpose(0, 2, 3, 1), "nchw": x}[layout]
    np.save(tmp_path / "a.npy", stored)
    out = read_array_raw(tmp_path / "a.npy", channels=None, progress=False).to_tensor()
    ref = x[:, :1] if layout == "nhw" else x
    np.testing.assert_allclose(out.numpy(), ref / 255.0, atol=1e-7)
    if layout != "nhw":
        gray = read_array_raw(tmp_path / "a.npy", channels=1, progress=False).to_tensor()
        np.testing.assert_allclose(gray.numpy(), x.astype(np.float64).mean(1, keepdims=True) / 255.0, atol=1e-6)


def test_array_layout_rule():
    assert array_layout((10, 1, 28, 28)) == "nchw"
    assert array_layout((10, 28, 28, 3)) == "nhwc"
    assert array_layout((10, 3, 5, 3)) == "nchw"  # ambiguous: channel-first wins
    assert array_layout((10, 3, 5, 3), layout="NHWC") == "nhwc"
    with pytest.raises(ValueError, match="channel axis"):
        array_layout((10, 4, 5, 6))
    with pytest.raises(ValueError, match="image stack"):
        array_layout((10, 784))


def test_array_float_npz_and_errors(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.random((4, 1, 6, 6)).astype(np.float64)
    x[0, 0, 0, 0] = 1.0 + 1e-5  # within tolerance: clipped
    np.savez(tmp_path / "one.npz", x)
    out = read_array_raw(tmp_path / "one.npz", progress=False).to_tensor()
    assert out.dtype == torch.float32 and float(out.max()) <= 1.0
    np.savez(tmp_path / "two.npz", images=x, labels=np.arange(4))
    with pytest.raises(ValueError, match="images"):
        read_array_raw(tmp_path / "two.npz", progress=False).to_tensor()
    assert read_array_raw(tmp_path / "two.npz", key="images", progress=False).to_tensor().shape == (4, 1, 6, 6)
    with pytest.raises(ValueError, match="no array 'nope'"):
        read_array_raw(tmp_path / "two.npz", key="nope", progress=False).to_tensor()
    bad = x.copy()
    bad[2, 0, 3, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match="NaN/inf.*first bad image: 2"):
        read_array_raw(tmp_path / "nan.npy", progress=False).to_tensor()
    np.save(tmp_path / "big.npy", x * 255)
    with pytest.raises(ValueError, match="divide by 255"):
        read_array_raw(tmp_path / "big.npy", progress=False).to_tensor()
    np.save(tmp_path / "int.npy", np.zeros((2, 4, 4), np.int32))
    with pytest.raises(ValueError, match="unsupported dtype"):
        read_array_raw(tmp_path / "int.npy", progress=False).to_tensor()
    np.save(tmp_path / "gray.npy", np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="1 channel"):
        read_array_raw(tmp_path / "gray.npy", channels=3, progress=False).to_tensor()
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.npy"):
        read_array_raw(tmp_path / "junk.npy", progress=False).to_tensor()
    with pytest.raises(FileNotFoundError):
        read_array_raw(tmp_path / "missing.npy", progress=False).to_tensor()


def test_array_resize_float(tmp_path):
    x = np.tile(np.linspace(0, 1, 16, dtype=np.float32), (3, 1, 16, 1))
    np.save(tmp_path / "r.npy", x)
    out = read_array_raw(tmp_path / "r.npy", size=8, progress=False).to_tensor()
    assert out.shape == (3, 1, 8, 8)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    # a horizontal ramp stays a ramp: rows equal, monotone along width
    assert torch.allclose(out[0, 0, 0], out[0, 0, 5]) and bool((out[0, 0, 0].diff() > 0).all())


# ------------------------------------------------------------------------------------------------
# CelebA and LSUN


def _celeba_image(rng, border=250):
    """218x178 RGB: the kept 160x160 region (rows 29:189, cols 9:169) holds values <= 120 in
    8x8 blocks, the cropped-out border is ``border``."""
    img = np.full((218, 178, 3), border, np.uint8)
    blocks = rng.integers(0, 121, (20, 20, 3), dtype=np.uint8)
    img[29:189, 9:169] = np.kron(blocks, np.ones((8, 8, 1), np.uint8))
    return img


def test_celeba_crop_region_exact_png(tmp_path):
    rng = np.random.default_rng(6)
    d = tmp_path / "img_align_celeba"
    d.mkdir()
    imgs = [_celeba_image(rng) for _ in range(3)]
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(d / f"{i + 1:06d}.png")
    full = read_celeba_raw(d, size=160, progress=False).to_tensor()
    assert full.shape == (3, 1, 160, 160)
    for i, im in enumerate(imgs):
        ref = im[29:-29, 9:-9].astype(np.float64).mean(2) / 255.0
        np.testing.assert_allclose(full[i, 0].numpy(), ref, atol=1e-6)
    # 80x80: bicubic of the RGB crop, then the channel mean (the paper's order)
    small = read_celeba_raw(d, size=80, progress=False).to_tensor()
    assert small.shape == (3, 1, 80, 80)
    ref = np.asarray(Image.fromarray(imgs[0][29:-29, 9:-9]).resize((80, 80), Image.BICUBIC), np.float64)
    np.testing.assert_allclose(small[0, 0].numpy(), ref.mean(2) / 255.0, atol=1e-6)
    assert float(small.max()) < 200 / 255  # no border value leaked in


def test_celeba_jpeg_folder(tmp_path):
    rng = np.random.default_rng(7)
    d = tmp_path / "img_align_celeba"
    d.mkdir()
    for i in range(3):
        Image.fromarray(_celeba_image(rng)).save(d / f"{i + 1:06d}.jpg", quality=95)
    x = read_celeba_raw(d, size=40, progress=False).to_tensor()
    assert x.shape == (3, 1, 40, 40) and x.dtype == torch.float32
    # border is 250 and the kept region <= 120: JPEG ringing aside, no border pixel may appear
    assert float(x.max()) < 170 / 255
    raw = readers.read_celeba_raw(d, size=40, progress=False)
    assert raw.data.dtype == np.uint16 and raw.scale == 765.0


def test_celeba_wrong_size_names_file(tmp_path):
    d = tmp_path / "img_align_celeba"
    d.mkdir()
    Image.fromarray(_celeba_image(np.random.default_rng(0))).save(d / "000001.png")
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(d / "000002.png")
    with pytest.raises(ImageReadError, match="000002.png.*178x218"):
        read_celeba_raw(d, progress=False).to_tensor()


def test_lsun_top_left_crop(tmp_path):
    d = tmp_path / "bedroom" / "sub"
    d.mkdir(parents=True)
    shapes = [(256, 300), (320, 256), (256, 256)]  # (H, W): LSUN's shorter side is 256
    refs = []
    rng = np.random.default_rng(8)
    for i, (h, w) in enumerate(shapes):
        im = np.full((h, w, 3), 255, np.uint8)  # outside the crop: white
        blocks = rng.integers(0, 100, (32, 32, 3), dtype=np.uint8)
        im[:256, :256] = np.kron(blocks, np.ones((8, 8, 1), np.uint8))
        refs.append(im[:256, :256])
        Image.fromarray(im).save(d / f"{i}.png")
    x = read_lsun_raw(tmp_path / "bedroom", size=256, progress=False).to_tensor()
    assert x.shape == (3, 1, 256, 256)
    for i, ref in enumerate(refs):
        np.testing.assert_allclose(x[i, 0].numpy(), ref.astype(np.float64).mean(2) / 255, atol=1e-6)
    small = read_lsun_raw(tmp_path / "bedroom", progress=False).to_tensor()
    assert small.shape == (3, 1, 80, 80) and float(small.max()) < 150 / 255
    Image.fromarray(np.zeros((200, 300, 3), np.uint8)).save(d / "3.png")
    with pytest.raises(ImageReadError, match="3.png.*smaller"):
        read_lsun_raw(tmp_path / "bedroom", progress=False).to_tensor()
