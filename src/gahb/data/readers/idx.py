"""IDX files (MNIST, Fashion-MNIST) and the Fashion-MNIST pool."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .stored import RawImages, _resize_stack

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# Pool order: the 60k training images, then the 10k test images (the paper's own split is not
# used; gahb draws its disjoint subsets and test set from the pooled images, see splits.py).
FASHION_MNIST_PARTS = ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
FASHION_MNIST_INSTALL_HINT = (
    "install the Debian package with `sudo apt-get install dataset-fashion-mnist` "
    f"(it puts the IDX files in {FASHION_MNIST_DIR}), or pass the folder holding "
    "train-images-idx3-ubyte[.gz] and t10k-images-idx3-ubyte[.gz] as 'fashion-mnist:/path/to/folder'"
)

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
