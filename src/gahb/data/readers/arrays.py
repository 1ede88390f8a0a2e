"""Image stacks from ``.npy``/``.npz`` arrays: layouts (N, H, W), (N, H, W, C), (N, C, H, W)."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .stored import ArrayFactory, RawImages, _check_channels, _numpy_factory, _resize_stack

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
