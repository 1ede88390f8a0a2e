"""Patch-recombination analysis: are samples copies or collages of training images? (paper section 2)

The paper notes that at N = 100 on LSUN bedrooms samples are "patch collages" of training images
(section 2). To test this, a sample is split into non-overlapping p x p patches (p = 20 for
80x80 images); for each patch the training image whose patch *at the same location* correlates
best (mean-removed cosine by default, like the official ``im_set_corr``) is its source. A sample
all of whose patches share one source is a **copy**; otherwise a **collage**.

Flat patches (zero variance, e.g. the black background of Fashion-MNIST) have no direction after
mean removal and match every training patch equally; they are left out of the decision.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from gahb.utils.device import no_tf32

from .nearest import RunningTopK, as_tensor, database_length, iter_chunks

COPY, COLLAGE, NOVEL, FLAT = "copy", "collage", "novel", "flat"


def to_patches(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, nh, nw, C * patch * patch) non-overlapping patches, row-major locations.

    Rows and columns beyond the last full patch (H or W not a multiple of ``patch``) are dropped.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    if patch < 1 or patch > min(h, w):
        raise ValueError(f"patch size {patch} does not fit {h}x{w} images")
    nh, nw = h // patch, w // patch
    x = images[:, :, : nh * patch, : nw * patch].reshape(b, c, nh, patch, nw, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, nh, nw, c * patch * patch)


def _unit_patches(images: torch.Tensor, patch: int, center: bool, dtype, device, eps: float):
    """Patches as (L, B, D) unit vectors and a (B, L) mask of non-flat patches."""
    p = to_patches(images.to(device=device, dtype=dtype), patch)
    b, nh, nw, d = p.shape
    p = p.reshape(b, nh * nw, d)
    if center:
        p = p - p.mean(-1, keepdim=True)
    norm = p.norm(dim=-1, keepdim=True)
    valid = norm[..., 0] > eps * d ** 0.5
    p = torch.where(valid[..., None], p / norm.clamp_min(1e-30), torch.zeros_like(p))
    return p.transpose(0, 1).contiguous(), valid


@dataclass
class PatchMatches:
    """Best-matching training image for every patch location of every sample.

    ``indices``/``similarities``: (B, nh, nw) source training index and its patch similarity;
    ``valid``: (B, nh, nw) False for flat sample patches (excluded from the classification).
    """

    indices: torch.Tensor
    similarities: torch.Tensor
    valid: torch.Tensor
    patch: int
    center: bool


def patch_matches(samples, train, patch: int = 20, center: bool = True, chunk: int = 1024,
                  dtype: torch.dtype = torch.float32, device: str | torch.device | None = None,
                  flat_eps: float = 1e-6, progress: bool = False) -> PatchMatches:
    """For each sample patch, the training image whose patch at the same location correlates best.

    ``train`` may be a tensor/array, a ``Pool``, a callable returning chunks or an iterable of
    chunks (:func:`gahb.analysis.nearest.iter_chunks`); it is read once, in chunks, and all
    patch locations are matched together with one batched product per chunk. Patches whose
    per-pixel standard deviation (after mean removal, or RMS without it) is below ``flat_eps``
    are flat: marked invalid. Ties go to the lower training index.
    """
    samples = as_tensor(samples)
    device = torch.device(device) if device is not None else samples.device
    q, valid = _unit_patches(samples, patch, center, dtype, device, flat_eps)  # (L, B, D)
    n_loc, b, _ = q.shape
    top = RunningTopK(n_loc * b, 1, dtype, device)

    from tqdm.auto import tqdm

    bar = tqdm(total=database_length(train), desc="patch matches", unit="img", disable=not progress)
    seen = 0
    with no_tf32():
        for offset, rows in iter_chunks(train, chunk):
            if rows.shape[0] == 0:
                continue
            if tuple(rows.shape[1:]) != tuple(samples.shape[1:]):
                raise ValueError(f"training images are {tuple(rows.shape[1:])}, samples are {tuple(samples.shape[1:])}")
            t, _ = _unit_patches(rows, patch, center, dtype, device, flat_eps)  # (L, n, D)
            scores = torch.bmm(q, t.transpose(1, 2))  # (L, B, n): location l of sample vs location l of train
            top.update(scores.reshape(n_loc * b, -1), offset)
            seen = offset + rows.shape[0]
            bar.update(rows.shape[0])
    bar.close()
    if seen == 0:
        raise ValueError("the training set is empty")
    nh, nw = samples.shape[2] // patch, samples.shape[3] // patch
    shape = (n_loc, b)
    to_grid = lambda t: t.reshape(shape).T.reshape(b, nh, nw)  # noqa: E731
    return PatchMatches(indices=to_grid(top.indices[:, 0]), similarities=to_grid(top.values[:, 0]),
                        valid=valid.reshape(b, nh, nw), patch=int(patch), center=bool(center))


@dataclass
class PatchClassification:
    """Per-sample verdicts of :func:`classify_patches`.

    ``labels``: "copy", "collage", "novel" (some patch matched nothing above ``min_similarity``)
    or "flat" (no non-flat patch); ``n_sources``: distinct source images among valid patches;
    ``dominant``: the most frequent source (-1 if none) and ``dominant_fraction`` its share.
    """

    labels: list[str]
    n_sources: list[int]
    dominant: list[int]
    dominant_fraction: list[float]

    def counts(self) -> dict[str, int]:
        c = Counter(self.labels)
        return {k: int(c.get(k, 0)) for k in (COPY, COLLAGE, NOVEL, FLAT)}

    def to_dict(self) -> dict:
        n = len(self.labels)
        return {"n": n, "counts": self.counts(),
                "fraction_copy": self.counts()[COPY] / n if n else float("nan"),
                "fraction_collage": self.counts()[COLLAGE] / n if n else float("nan"),
                "mean_n_sources": float(np.mean(self.n_sources)) if n else float("nan"),
                "labels": list(self.labels), "n_sources": list(self.n_sources),
                "dominant": list(self.dominant), "dominant_fraction": list(self.dominant_fraction)}


def classify_patches(matches: PatchMatches, min_similarity: float | None = None) -> PatchClassification:
    """Copy if every (non-flat) patch comes from the same training image, else collage.

    With ``min_similarity`` (e.g. 0.9), a sample having a valid patch whose best match is below
    it is "novel" rather than a copy or collage: the argmax alone assigns a source to any patch.
    """
    idx = matches.indices.cpu().numpy()
    sim = matches.similarities.double().cpu().numpy()
    valid = matches.valid.cpu().numpy()
    labels, n_src, dom, dom_frac = [], [], [], []
    for i in range(idx.shape[0]):
        v = valid[i]
        src = idx[i][v]
        if src.size == 0:
            labels.append(FLAT), n_src.append(0), dom.append(-1), dom_frac.append(0.0)
            continue
        counts = Counter(src.tolist())
        top, top_n = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        n_src.append(len(counts)), dom.append(int(top)), dom_frac.append(top_n / src.size)
        if min_similarity is not None and (sim[i][v] < min_similarity).any():
            labels.append(NOVEL)
        else:
            labels.append(COPY if len(counts) == 1 else COLLAGE)
    return PatchClassification(labels=labels, n_sources=n_src, dominant=dom, dominant_fraction=dom_frac)
