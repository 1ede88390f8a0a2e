"""Readers for the image sources gahb trains on (paper section 2).

Every reader comes in two flavours:

* ``read_*`` returns a float32 tensor (N, C, H, W) on the pixel scale [0, 1], which is what the
  rest of gahb consumes;
* ``read_*_raw`` returns a :class:`RawImages`, the compact *stored* form: an integer (or float32)
  array together with a ``scale`` such that ``pixel = stored / scale``. The prepared-dataset cache
  keeps this form so that 8-bit sources stay 8-bit on disk and in memory.

Stored representations (all exact, never a lossy float16):

==========================================  ===========  =======
source                                      dtype        scale
==========================================  ===========  =======
8-bit grayscale (Fashion-MNIST, L images)   uint8        255
8-bit RGB averaged to gray (paper, 2.1)     uint16       765     (R + G + B, so gray = sum / 765)
8-bit RGB kept as colour                    uint8        255
float arrays (.npy/.npz)                    float32      1
==========================================  ===========  =======

The paper converts uint8 RGB to [0, 1] and then averages the three channels [C:dataloader_func.py
``prep_celeba``, ``rgb_to_gray``]; storing the channel sum as uint16 reproduces that value up to
float rounding while taking half the memory of float32.

Grayscale conversion is the plain RGB mean everywhere (as the paper does), not ITU-R luma.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

try:
    _BICUBIC = Image.Resampling.BICUBIC
except AttributeError:  # Pillow < 9.1
    _BICUBIC = Image.BICUBIC

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# Pool order: the 60k training images, then the 10k test images (the paper's own split is not
# used; gahb draws its disjoint subsets and test set from the pooled images, see splits.py).
FASHION_MNIST_PARTS = ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
FASHION_MNIST_INSTALL_HINT = (
    "install the Debian package with `sudo apt-get install dataset-fashion-mnist` "
    f"(it puts the IDX files in {FASHION_MNIST_DIR}), or pass the folder holding "
    "train-images-idx3-ubyte[.gz] and t10k-images-idx3-ubyte[.gz] as 'fashion-mnist:/path/to/folder'"
)

CELEBA_SHAPE = (218, 178)  # (H, W) of img_align_celeba
CELEBA_CROP = (29, 9)  # rows, cols removed on each side -> 160 x 160 [C:dataloader_func.py]
LSUN_CROP = 256  # top-left crop im[0:256, 0:256] [C:dataloader_func.py load_bedrooms_dataset]

# Pillow modes holding more than 8 bits per sample; gahb's folder readers are 8-bit only.
_DEEP_MODES = {"I", "F", "I;16", "I;16B", "I;16L", "I;16N", "I;32", "I;32B", "I;32L"}


class ImageReadError(ValueError):
    """An image file exists but cannot be decoded or does not fit the dataset (message names it)."""


# ------------------------------------------------------------------------------------------------
# The stored form


@dataclass
class RawImages:
    """Images in stored form: ``pixel = data / scale``, ``data`` of shape (N, C, H, W).

    ``names`` lists the source item of each row (file names, or ``"<file>[i]"``) when known;
    ``meta`` records the preprocessing that produced the array.
    """

    data: np.ndarray
    scale: float
    names: list[str] | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape)

    def to_tensor(self, indices: Sequence[int] | np.ndarray | None = None) -> torch.Tensor:
        """Float32 tensor (n, C, H, W) in [0, 1] of all rows, or of ``indices`` in that order."""
        return to_float(self.data if indices is None else self.data[np.asarray(indices, dtype=np.int64)],
                        self.scale)


def to_float(stored: np.ndarray, scale: float) -> torch.Tensor:
    """Convert stored pixels to a float32 tensor on [0, 1] (one copy, division in place)."""
    out = np.array(stored, dtype=np.float32, copy=True, order="C")
    if scale != 1:
        out /= np.float32(scale)
    return torch.from_numpy(out)


ArrayFactory = Callable[[tuple, np.dtype], np.ndarray]


def _numpy_factory(shape: tuple, dtype: np.dtype) -> np.ndarray:
    return np.empty(shape, dtype=dtype)


# ------------------------------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST)

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzipped; gzip is detected from the content, not the name).

    The IDX header is big-endian: two zero bytes, a type code, the number of dimensions d,
    then d uint32 sizes (16 bytes for a 3-D image file), followed by the raw values. The
    payload length must match the header exactly; a truncated or padded file is an error.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: truncated or corrupt gzip data ({exc})") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(raw)} bytes)")
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()} (expected 0x0000TTDD with type "
            f"TT in {{08,09,0b,0c,0d,0e}} and DD >= 1 dimensions, e.g. 0x00000803 for images)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[code])
    count = int(np.prod(dims, dtype=np.int64))
    expected, found = count * dtype.itemsize, len(raw) - header
    if found != expected:
        what = "truncated" if found < expected else "has trailing bytes"
        raise ValueError(f"{path}: IDX file {what}: header says {'x'.join(map(str, dims))} "
                         f"values ({expected} bytes) but {found} bytes follow the header")
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def fashion_mnist_files(folder: str | os.PathLike | None = None) -> list[Path]:
    """Locate the two Fashion-MNIST image files (``.gz`` preferred, plain IDX accepted)."""
    folder = Path(folder).expanduser() if folder is not None else FASHION_MNIST_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST folder {folder} does not exist: {FASHION_MNIST_INSTALL_HINT}")
    found = []
    for stem in FASHION_MNIST_PARTS:
        candidates = [folder / (stem + ".gz"), folder / stem]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            raise FileNotFoundError(f"{folder} has no {stem}.gz (or {stem}): {FASHION_MNIST_INSTALL_HINT}")
        found.append(hit)
    return found


def read_fashion_mnist_raw(folder: str | os.PathLike | None = None, size: int | None = None,
                           progress: bool = True) -> RawImages:
    """Fashion-MNIST train + t10k images as uint8 (N, 1, 28, 28), scale 255.

    ``folder`` defaults to ``/usr/share/datasets/fashion-mnist`` (Debian ``dataset-fashion-mnist``).
    Any folder with the standard file names works, so this also reads MNIST. ``size`` resizes
    with PIL bicubic (uint8 in, uint8 out).
    """
    parts, names = [], []
    shape = None
    files = fashion_mnist_files(folder)
    for path in files:
        arr = read_idx(path)
        if arr.dtype != np.uint8 or arr.ndim != 3:
            raise ValueError(f"{path}: expected a uint8 image file (magic 0x00000803), got "
                             f"{arr.dtype} with {arr.ndim} dimensions")
        if shape is not None and arr.shape[1:] != shape:
            raise ValueError(f"{path}: images are {arr.shape[1:]}, but the first file's are {shape}")
        shape = arr.shape[1:]
        parts.append(arr[:, None])
        names.extend(f"{path.name}[{i}]" for i in range(arr.shape[0]))
    data = np.concatenate(parts)
    meta = {"native_shape": list(shape), "files": [p.name for p in files]}
    if size is not None and tuple(shape) != (size, size):
        data = _resize_stack(data, size, progress=progress, desc="resize")
        meta["resize"] = "PIL bicubic"
    return RawImages(data, 255.0, names, meta)


def read_fashion_mnist(folder: str | os.PathLike | None = None, size: int | None = None) -> torch.Tensor:
    """Fashion-MNIST pool (70,000 x 1 x 28 x 28 for the standard files), float32 in [0, 1]."""
    return read_fashion_mnist_raw(folder, size, progress=False).to_tensor()


# ------------------------------------------------------------------------------------------------
# Single image files


def _check_channels(channels: int) -> int:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    return channels


def _decode(path: Path, process: Callable[[Image.Image], np.ndarray]) -> np.ndarray:
    """Open ``path`` and apply ``process`` inside the file's context; errors name the file."""
    try:
        with Image.open(path) as im:
            im.load()
            return process(im)
    except FileNotFoundError:
        raise
    except ImageReadError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from None


def _normalise_mode(im: Image.Image, path: Path) -> Image.Image:
    """Bring any 8-bit Pillow mode to 'L' or 'RGB' *before* geometry (palette images would
    otherwise be resized with nearest neighbour)."""
    if im.mode in _DEEP_MODES:
        raise ImageReadError(f"{path}: {im.mode} images (16-bit or float samples) are not supported "
                             "by the folder readers; convert them to 8-bit or stack them into a .npy "
                             "array scaled to [0, 1] and use 'npy:FILE'")
    if im.mode in ("L", "RGB"):
        return im
    if im.mode in ("1", "LA", "La"):
        return im.convert("L")
    return im.convert("RGB")  # P, RGBA, CMYK, YCbCr, ...; alpha is dropped


def _pil_to_stored(im: Image.Image, channels: int) -> np.ndarray:
    """'L'/'RGB' image -> stored (C, H, W): gray as uint16 R+G+B (scale 765), RGB as uint8."""
    if channels == 1:
        if im.mode == "L":
            return (np.asarray(im, dtype=np.uint16) * 3)[None]
        return np.asarray(im, dtype=np.uint16).sum(axis=2, dtype=np.uint16)[None]
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1))


def _stored_scale(channels: int) -> float:
    return 765.0 if channels == 1 else 255.0


def _image_loader(channels: int, crop: Callable[[Image.Image, Path], Image.Image] | None = None,
                  size: int | None = None) -> Callable[[Path], np.ndarray]:
    """Build ``path -> stored (C, H, W)``: mode normalisation, optional crop, bicubic resize to
    ``size`` x ``size``, then the channel conversion (the paper resizes RGB, then averages)."""

    def process(path: Path) -> np.ndarray:
        def work(im: Image.Image) -> np.ndarray:
            im = _normalise_mode(im, path)
            if crop is not None:
                im = crop(im, path)
            if size is not None and im.size != (size, size):
                if im.size[0] != im.size[1]:
                    raise ImageReadError(f"{path}: cannot resize a non-square {im.size[0]}x{im.size[1]} "
                                         f"image to {size}x{size} without distorting it")
                im = im.resize((size, size), _BICUBIC)
            return _pil_to_stored(im, channels)

        return _decode(path, work)

    return process


def load_image(path: str | os.PathLike, channels: int = 1) -> torch.Tensor:
    """One image file (PNG/JPEG/... or a single-image ``.npy``) as float32 (C, H, W) in [0, 1].

    ``channels=1`` converts colour to gray by the RGB mean; ``channels=3`` replicates a gray
    image. A ``.npy`` holding (H, W), (C, H, W) or (H, W, C) follows :func:`read_array` rules:
    3 -> 1 channels is averaged, 1 -> 3 is refused.
    """
    channels = _check_channels(channels)
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"image file {path} does not exist")
    if path.suffix.lower() == ".npy":
        arr = _load_npy(path)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise ValueError(f"{path}: a single image must be (H, W), (C, H, W) or (H, W, C); got shape {arr.shape}")
        raw = _array_to_raw(arr[None], path, channels=channels, layout=None, progress=False)
        return raw.to_tensor()[0]
    stored = _image_loader(channels)(path)
    return to_float(stored, _stored_scale(channels))


def center_crop(image: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """The central ``size`` (or (height, width)) window of a (..., H, W) image, as a contiguous copy."""
    h, w = image.shape[-2:]
    ch, cw = (size, size) if isinstance(size, int) else size
    if not (0 < ch <= h and 0 < cw <= w):
        raise ValueError(f"cannot crop {ch}x{cw} out of a {h}x{w} image")
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[..., top:top + ch, left:left + cw].contiguous()


def save_image(path: str | os.PathLike, image: torch.Tensor | np.ndarray) -> Path:
    """Write (H, W), (C, H, W) or (1, C, H, W) with C in {1, 3} as an 8-bit image, clamped to [0, 1].

    The format follows the extension (.png default; .jpg/.jpeg, .bmp, .tif/.tiff accepted);
    the write is atomic.
    """
    from gahb.utils.io import _atomic

    path = Path(path).expanduser()
    formats = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
    fmt = formats.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported image extension {path.suffix!r}; use one of {sorted(formats)}")
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise ValueError(f"save_image expects (H, W), (C, H, W) or (1, C, H, W) with C in {{1, 3}}; "
                         f"got shape {tuple(image.shape)}")
    arr = np.asarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"save_image({path}): image contains NaN or infinite values")
    u8 = np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    pil = Image.fromarray(u8[0]) if u8.shape[0] == 1 else Image.fromarray(np.ascontiguousarray(u8.transpose(1, 2, 0)))
    return _atomic(path, lambda tmp: pil.save(tmp, format=fmt))


# ------------------------------------------------------------------------------------------------
# Folders of image files


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` in a deterministic order (sorted relative POSIX paths);
    hidden files and folders are skipped."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    found = []
    if recursive:
        for root, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found.extend(Path(root) / f for f in files
                         if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS)
    else:
        found = [p for p in folder.iterdir()
                 if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not found:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _stream(paths: Sequence[Path], load: Callable[[Path], np.ndarray], *, factory: ArrayFactory | None,
            progress: bool, desc: str, workers: int = 1) -> np.ndarray:
    """Decode ``paths`` one by one into a preallocated (N, C, H, W) array.

    Only the output array is ever held (``factory`` may return a disk memmap), never the
    full-size source images. Threads help because Pillow releases the GIL while decoding.
    """
    factory = factory or _numpy_factory
    first = load(paths[0])
    out = factory((len(paths),) + first.shape, first.dtype)
    out[0] = first

    def check(i: int, img: np.ndarray) -> None:
        if img.shape != first.shape:
            raise ImageReadError(f"{paths[i]}: image has (C, H, W) = {img.shape} but {paths[0]} has "
                                 f"{first.shape}; all images of a dataset must have the same size")
        out[i] = img

    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, initial=1)
    try:
        if workers <= 1:
            for i in range(1, len(paths)):
                check(i, load(paths[i]))
                bar.update()
        else:
            batch = 64 * workers
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for lo in range(1, len(paths), batch):
                    idx = range(lo, min(lo + batch, len(paths)))
                    for i, img in zip(idx, pool.map(load, [paths[i] for i in idx])):
                        check(i, img)
                    bar.update(len(idx))
    finally:
        bar.close()
    return out


def read_image_folder_raw(folder: str | os.PathLike, channels: int = 1, size: int | None = None, *,
                          recursive: bool = True, factory: ArrayFactory | None = None,
                          progress: bool = True, workers: int = 1) -> RawImages:
    """All images of a folder (sorted order) in stored form; all must share one size.

    ``size`` bicubic-resizes square images to ``size`` x ``size`` (non-square ones are refused).
    """
    channels = _check_channels(channels)
    paths = list_images(folder, recursive)
    data = _stream(paths, _image_loader(channels, size=size), factory=factory, progress=progress,
                   desc="read images", workers=workers)
    root = Path(folder).expanduser()
    names = [p.relative_to(root).as_posix() for p in paths]
    meta = {"resize": "PIL bicubic" if size else None, "gray": "RGB mean" if channels == 1 else None}
    return RawImages(data, _stored_scale(channels), names, meta)


def read_image_folder(folder: str | os.PathLike, channels: int = 1, size: int | None = None, *,
                      recursive: bool = True, progress: bool = True) -> torch.Tensor:
    """Folder of PNG/JPEG/... images as float32 (N, C, H, W) in [0, 1], sorted file order."""
    return read_image_folder_raw(folder, channels, size, recursive=recursive, progress=progress).to_tensor()


def _celeba_crop(im: Image.Image, path: Path) -> Image.Image:
    h, w = CELEBA_SHAPE
    if im.size != (w, h):
        raise ImageReadError(f"{path}: is {im.size[0]}x{im.size[1]} (WxH), but aligned CelebA images "
                             f"(img_align_celeba) are {w}x{h}")
    r, c = CELEBA_CROP
    return im.crop((c, r, w - c, h - r))  # (left, upper, right, lower): rows 29:-29, cols 9:-9


def read_celeba_raw(folder: str | os.PathLike, size: int = 80, channels: int = 1, *,
                    factory: ArrayFactory | None = None, progress: bool = True,
                    workers: int = 1) -> RawImages:
    """CelebA ``img_align_celeba`` with the paper's preprocessing (spec 2.1).

    Each 218x178 aligned image is cropped to rows 29:-29, cols 9:-9 (160x160), resized with PIL
    bicubic to ``size`` (80 in the paper's main experiments, i.e. factor 0.5), converted to
    [0, 1] and averaged over RGB. Files are streamed; only the output array is held.
    """
    channels = _check_channels(channels)
    paths = list_images(folder, recursive=False)
    data = _stream(paths, _image_loader(channels, _celeba_crop, size), factory=factory,
                   progress=progress, desc="CelebA", workers=workers)
    meta = {"crop": "rows 29:-29, cols 9:-9 of 218x178 (160x160)", "resize": "PIL bicubic",
            "gray": "RGB mean" if channels == 1 else None}
    return RawImages(data, _stored_scale(channels), [p.name for p in paths], meta)


def read_celeba(folder: str | os.PathLike, size: int = 80, channels: int = 1,
                progress: bool = True) -> torch.Tensor:
    """CelebA preprocessed as in the paper, float32 (N, C, size, size) in [0, 1]."""
    return read_celeba_raw(folder, size, channels, progress=progress).to_tensor()


def _lsun_crop(crop: int) -> Callable[[Image.Image, Path], Image.Image]:
    def do(im: Image.Image, path: Path) -> Image.Image:
        if im.size[0] < crop or im.size[1] < crop:
            raise ImageReadError(f"{path}: is {im.size[0]}x{im.size[1]}, smaller than the "
                                 f"{crop}x{crop} top-left crop")
        return im.crop((0, 0, crop, crop))

    return do


def read_lsun_raw(folder: str | os.PathLike, size: int = 80, channels: int = 1, *, crop: int = LSUN_CROP,
                  factory: ArrayFactory | None = None, progress: bool = True,
                  workers: int = 1) -> RawImages:
    """LSUN (bedroom) images from a folder, paper preprocessing (spec 2.2): top-left
    ``crop`` x ``crop`` (256) crop, PIL bicubic resize to ``size``, RGB mean to gray."""
    channels = _check_channels(channels)
    root = Path(folder).expanduser()
    paths = list_images(root, recursive=True)
    data = _stream(paths, _image_loader(channels, _lsun_crop(crop), size), factory=factory,
                   progress=progress, desc="LSUN", workers=workers)
    meta = {"crop": f"top-left {crop}x{crop}", "resize": "PIL bicubic",
            "gray": "RGB mean" if channels == 1 else None}
    return RawImages(data, _stored_scale(channels), [p.relative_to(root).as_posix() for p in paths], meta)


def read_lsun(folder: str | os.PathLike, size: int = 80, channels: int = 1, crop: int = LSUN_CROP,
              progress: bool = True) -> torch.Tensor:
    """LSUN folder preprocessed as in the paper, float32 (N, C, size, size) in [0, 1]."""
    return read_lsun_raw(folder, size, channels, crop=crop, progress=progress).to_tensor()


# ------------------------------------------------------------------------------------------------
# .npy / .npz arrays

FLOAT_TOLERANCE = 1e-3  # float pixels may overshoot [0, 1] by this much (then they are clipped)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"cannot read array file {path}: {exc}") from None


def load_array(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """The array of a ``.npy`` (memory-mapped) or one array of a ``.npz`` (``key`` required when it
    holds several)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"array file {path} does not exist")
    if path.suffix.lower() != ".npz":
        if key is not None:
            raise ValueError(f"{path}: a key ({key!r}) only makes sense for .npz archives")
        return _load_npy(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
            if key is None:
                if len(keys) != 1:
                    raise ValueError(f"{path} holds arrays {keys}; choose one with 'npy:{path}#KEY'")
                key = keys[0]
            if key not in keys:
                raise ValueError(f"{path} has no array {key!r}; it holds {keys}")
            return z[key]
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"cannot read array file {path}: {exc}") from None


def array_layout(shape: tuple[int, ...], layout: str | None = None) -> str:
    """Decide how a 4-D image stack is laid out: "nchw" or "nhwc" (3-D is (N, H, W)).

    Rule: the channel axis is the one of axes 1 and 3 whose length is 1 or 3. If both qualify
    (e.g. (N, 3, 5, 3)) channel-first wins, as in torch; pass ``layout`` to override.
    """
    if len(shape) == 3:
        return "nhw"
    if len(shape) != 4:
        raise ValueError(f"an image stack must be (N, H, W), (N, H, W, C) or (N, C, H, W); got shape {shape}")
    if layout is not None:
        layout = layout.lower()
        if layout not in ("nchw", "nhwc"):
            raise ValueError(f"layout must be 'nchw' or 'nhwc', got {layout!r}")
        c = shape[1] if layout == "nchw" else shape[3]
        if c not in (1, 3):
            raise ValueError(f"shape {shape} read as {layout} has {c} channels; only 1 or 3 are supported")
        return layout
    if shape[1] in (1, 3):
        return "nchw"
    if shape[3] in (1, 3):
        return "nhwc"
    raise ValueError(f"cannot find a channel axis of length 1 or 3 in shape {shape} "
                     "(expected (N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3})")


def _array_to_raw(arr: np.ndarray, path: Path | str, *, channels: int | None, layout: str | None,
                  size: int | None = None, factory: ArrayFactory | None = None,
                  progress: bool = True, chunk: int = 2048) -> RawImages:
    lay = array_layout(arr.shape, layout)
    if lay == "nhw":
        arr = arr[:, None]
    elif lay == "nhwc":
        arr = arr.transpose(0, 3, 1, 2)
    n, c, h, w = arr.shape
    if n == 0:
        raise ValueError(f"{path}: the array holds no images")
    out_c = c if channels is None else _check_channels(channels)
    if out_c == 3 and c == 1:
        raise ValueError(f"{path}: array has 1 channel but channels=3 was requested")
    if size is not None and (h, w) != (size, size) and h != w:
        raise ValueError(f"{path}: cannot resize non-square {h}x{w} images to {size}x{size}")
    oh, ow = (size, size) if size is not None else (h, w)

    kind = arr.dtype.kind
    if arr.dtype == np.uint8:
        # gray from RGB is kept exact as the channel sum (scale 765), see the module docstring
        out_dtype, scale = (np.uint16, 765.0) if (c == 3 and out_c == 1) else (np.uint8, 255.0)
    elif arr.dtype == np.uint16:
        out_dtype, scale = np.float32, 1.0
    elif kind == "f":
        out_dtype, scale = np.float32, 1.0
    else:
        raise ValueError(f"{path}: unsupported dtype {arr.dtype}; use uint8 (0..255) or float in [0, 1]")

    out = (factory or _numpy_factory)((n, out_c, oh, ow), np.dtype(out_dtype))
    bar = tqdm(total=n, desc="convert", unit="img", disable=not progress)
    for lo in range(0, n, chunk):
        block = np.asarray(arr[lo:lo + chunk])
        if kind == "f":
            block = block.astype(np.float32)
            bad = ~np.isfinite(block)
            if bad.any():
                first = lo + int(np.argwhere(bad.reshape(len(block), -1).any(1))[0, 0])
                raise ValueError(f"{path}: array contains {int(bad.sum())} NaN/inf values in rows "
                                 f"{lo}..{lo + len(block) - 1} (first bad image: {first})")
            lo_v, hi_v = float(block.min()), float(block.max())
            if lo_v < -FLOAT_TOLERANCE or hi_v > 1 + FLOAT_TOLERANCE:
                raise ValueError(f"{path}: float pixel values span [{lo_v:g}, {hi_v:g}], outside [0, 1] "
                                 f"(tolerance {FLOAT_TOLERANCE}); if they are 0..255, divide by 255 or "
                                 "store uint8")
            np.clip(block, 0.0, 1.0, out=block)
        elif arr.dtype == np.uint16:
            block = block.astype(np.float32) / np.float32(65535.0)
        if size is not None and (h, w) != (size, size):
            block = _resize_stack(block, size, progress=False)
        if c == 3 and out_c == 1:
            block = (block.sum(axis=1, dtype=np.uint16, keepdims=True) if block.dtype == np.uint8
                     else block.mean(axis=1, keepdims=True, dtype=np.float32))
        out[lo:lo + len(block)] = block
        bar.update(len(block))
    bar.close()
    meta = {"layout": lay, "source_dtype": str(arr.dtype),
            "resize": "PIL bicubic" if (size is not None and (h, w) != (size, size)) else None,
            "gray": "RGB mean" if (c == 3 and out_c == 1) else None}
    return RawImages(out, scale, None, meta)


def read_array_raw(path: str | os.PathLike, key: str | None = None, channels: int | None = 1,
                   size: int | None = None, *, layout: str | None = None,
                   factory: ArrayFactory | None = None, progress: bool = True) -> RawImages:
    """An image stack from ``.npy``/``.npz`` in stored form.

    Accepted shapes: (N, H, W), (N, H, W, C), (N, C, H, W) with C in {1, 3}; the channel
    axis is found by :func:`array_layout`. dtypes: uint8 (0..255, kept as uint8), uint16
    (/65535, stored float32), float in [0, 1] (stored float32; overshoot up to
    ``FLOAT_TOLERANCE`` is clipped, more is an error, NaN/inf are errors). ``channels=1``
    averages RGB to gray, ``None`` keeps the array's channels, 3 refuses gray input.
    """
    path = Path(path).expanduser()
    arr = load_array(path, key)
    raw = _array_to_raw(arr, path, channels=channels, layout=layout, size=size, factory=factory,
                        progress=progress)
    raw.names = [f"{path.name}[{i}]" for i in range(len(raw))]
    return raw


def read_array(path: str | os.PathLike, key: str | None = None, channels: int | None = 1,
               size: int | None = None, *, layout: str | None = None) -> torch.Tensor:
    """Image stack from ``.npy``/``.npz`` as float32 (N, C, H, W) in [0, 1] (see :func:`read_array_raw`)."""
    return read_array_raw(path, key, channels, size, layout=layout, progress=False).to_tensor()


# ------------------------------------------------------------------------------------------------
# Resizing stored stacks


def _resize_stack(block: np.ndarray, size: int, *, progress: bool = False, desc: str = "resize") -> np.ndarray:
    """PIL bicubic resize of every channel of (B, C, H, W) uint8 or float32 to size x size.

    Resizing channel by channel equals Pillow's RGB resize (it treats bands independently).
    Float results are clipped to [0, 1] because bicubic overshoots near edges; uint8 results are
    clipped by Pillow itself.
    """
    b, c = block.shape[:2]
    out = np.empty((b, c, size, size), dtype=block.dtype)
    is_u8 = block.dtype == np.uint8
    for i in tqdm(range(b), desc=desc, unit="img", disable=not progress):
        for k in range(c):
            # uint8 2-D arrays become 'L' images, float32 ones 'F' images
            src = np.ascontiguousarray(block[i, k] if is_u8 else block[i, k].astype(np.float32))
            out[i, k] = np.asarray(Image.fromarray(src).resize((size, size), _BICUBIC))
    if not is_u8:
        np.clip(out, 0.0, 1.0, out=out)
    return out


def iter_chunks(n: int, chunk: int) -> Iterable[tuple[int, int]]:
    for lo in range(0, n, chunk):
        yield lo, min(lo + chunk, n)
