"""The stored form of images: a compact array and a scale, ``pixel = stored / scale``.

The prepared-dataset cache keeps this form so that 8-bit sources stay 8-bit on disk and in
memory. Stored representations (all exact, never a lossy float16):

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

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

try:
    _BICUBIC = Image.Resampling.BICUBIC
except AttributeError:  # Pillow < 9.1
    _BICUBIC = Image.BICUBIC


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


def _check_channels(channels: int) -> int:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    return channels


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
