"""One fixed pixel permutation for "shuffled" datasets (paper App. C.3, Fig. 21)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch


class PixelShuffle:
    """One fixed random permutation of pixel positions, the same for every image.

    ``shape`` is (H, W) or (C, H, W); positions are permuted jointly over the H * W grid and all
    channels move together (for colour images the permutation acts on pixel locations, not on
    colour components). ``apply`` and ``invert`` accept tensors or arrays (..., H, W) and are
    exact inverses of each other. Not to be confused with ``torch.nn.PixelShuffle``.
    """

    def __init__(self, shape: Sequence[int], seed: int = 0):
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (2, 3):
            raise ValueError(f"shape must be (H, W) or (C, H, W), got {shape!r}")
        self.shape = shape
        self.seed = int(seed)
        self.h, self.w = shape[-2:]
        g = torch.Generator().manual_seed(self.seed)
        self.perm = torch.randperm(self.h * self.w, generator=g)
        self.inverse_perm = torch.argsort(self.perm)

    def _permute(self, images, index: torch.Tensor):
        if tuple(images.shape[-2:]) != (self.h, self.w):
            raise ValueError(f"images must end in ({self.h}, {self.w}), got {tuple(images.shape)}")
        lead = tuple(images.shape[:-2])
        flat = images.reshape(*lead, self.h * self.w)
        if isinstance(images, np.ndarray):
            out = flat[..., index.numpy()]
        else:
            out = flat[..., index.to(images.device)]
        return out.reshape(*lead, self.h, self.w)

    def apply(self, images):
        """Shuffle: output pixel p takes the value of input pixel ``perm[p]``."""
        return self._permute(images, self.perm)

    def invert(self, images):
        """Unshuffle: ``invert(apply(x)) == x`` exactly."""
        return self._permute(images, self.inverse_perm)

    __call__ = apply

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PixelShuffle":
        return cls(d["shape"], d["seed"])

    def __repr__(self) -> str:
        return f"PixelShuffle(shape={self.shape}, seed={self.seed})"
