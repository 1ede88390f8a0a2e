"""Image files: single images (load, save, crop), folders of images, CelebA and LSUN.

Files are decoded with Pillow one at a time into a preallocated array (optionally a disk memmap),
so only the output is ever held, never the full-size source images.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .arrays import _array_to_raw, _load_npy
from .stored import _BICUBIC, ArrayFactory, RawImages, _check_channels, _numpy_factory, to_float

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

CELEBA_SHAPE = (218, 178)  # (H, W) of img_align_celeba
CELEBA_CROP = (29, 9)  # rows, cols removed on each side -> 160 x 160 [C:dataloader_func.py]
LSUN_CROP = 256  # top-left crop im[0:256, 0:256] [C:dataloader_func.py load_bedrooms_dataset]

# Pillow modes holding more than 8 bits per sample; gahb's folder readers are 8-bit only.
_DEEP_MODES = {"I", "F", "I;16", "I;16B", "I;16L", "I;16N", "I;32", "I;32B", "I;32L"}


class ImageReadError(ValueError):
    """An image file exists but cannot be decoded or does not fit the dataset (message names it)."""


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
    image. A ``.npy`` holding (H, W), (C, H, W) or (H, W, C) follows :func:`read_array_raw` rules:
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
    """CelebA ``img_align_celeba`` with the paper's preprocessing (paper section 2).

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
    """LSUN (bedroom) images from a folder, paper preprocessing (paper section 2): top-left
    ``crop`` x ``crop`` (256) crop, PIL bicubic resize to ``size``, RGB mean to gray."""
    channels = _check_channels(channels)
    root = Path(folder).expanduser()
    paths = list_images(root, recursive=True)
    data = _stream(paths, _image_loader(channels, _lsun_crop(crop), size), factory=factory,
                   progress=progress, desc="LSUN", workers=workers)
    meta = {"crop": f"top-left {crop}x{crop}", "resize": "PIL bicubic",
            "gray": "RGB mean" if channels == 1 else None}
    return RawImages(data, _stored_scale(channels), [p.relative_to(root).as_posix() for p in paths], meta)
