"""Checks on the images handed to :func:`gahb.training.train`, and their fingerprint.

The training loop expects float tensors (N, C, H, W) on the pixel scale [0, 1] (the noise levels
are in those units); anything else is refused with a message that says how to fix it, before any
work is done. The fingerprint ties a saved run to its data, so that a resume cannot silently
continue on other images.
"""

from __future__ import annotations

import hashlib
import warnings

import torch


def validate_images(train: torch.Tensor, test: torch.Tensor | None, channels: int) -> None:
    """Clear errors for inputs that would train garbage or fail deep inside the loop."""
    for name, x in (("train_images", train), ("test_images", test)):
        if x is None:
            if name == "train_images":
                raise ValueError("train_images is required")
            continue
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(f"{name} must have shape (N, C, H, W); got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating point on the pixel scale [0, 1]; got dtype {x.dtype} "
                             "(divide uint8 images by 255)")
        if len(x) == 0:
            if name == "train_images":
                raise ValueError("train_images is empty (N = 0)")
            continue
        if x.shape[1] != channels:
            raise ValueError(f"{name} have {x.shape[1]} channel(s) but the model expects {channels} "
                             "(ModelConfig.channels); build the model with matching channels or convert the images")
        bad = ~torch.isfinite(x).flatten(1).all(1)
        if bool(bad.any()):
            idx = bad.nonzero().flatten()[:5].tolist()
            raise ValueError(f"{name} contain NaN or Inf values (in {int(bad.sum())} image(s), e.g. indices {idx}); "
                             "clean the data before training")
        lo, hi = float(x.min()), float(x.max())
        if lo < -0.5 or hi > 1.5:
            warnings.warn(f"{name} range [{lo:.3g}, {hi:.3g}] is far from the pixel scale [0, 1] the noise levels assume",
                          stacklevel=3)
    if test is not None and len(test) and test.shape[1:] != train.shape[1:]:
        warnings.warn(f"test images {tuple(test.shape[1:])} differ in size from training images {tuple(train.shape[1:])}",
                      stacklevel=3)


def data_fingerprint(x: torch.Tensor) -> str:
    """sha256 of the training tensor's float32 bytes: a resumed run must see the same data."""
    arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
    return hashlib.sha256(memoryview(arr).cast("B")).hexdigest()
