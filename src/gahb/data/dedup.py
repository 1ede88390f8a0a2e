"""Near-duplicate removal, as in the paper ("filtered for duplicates", captions of Figs 2 and 6).

The paper's rule [P Fig 2 and Fig 6 captions; C:quality_metrics_func.py ``remove_repeats``]:

1. average-pool every image to 20x20;
2. subtract each image's mean;
3. take normalised inner products (correlations) of all pairs;
4. in the strict lower triangle, find the pairs with ``|corr| > 0.95``;
5. delete the later image of each pair.

Step 5 applied to *every* pair means: **image j is removed iff some image i < j has
|corr(i, j)| > threshold**, whether or not i itself is removed. (So in a chain a ~ b ~ c where
a and c are not similar, both b and c go.) We implement exactly that rule.

Differences from the official code, all deliberate:

* the correlation matrix is never formed; it is computed in (chunk x chunk) blocks of the lower
  triangle, so memory is O(N * 400 + chunk^2) instead of O(N^2) (about 160 GB for CelebA);
* the pooling is adaptive (``adaptive_avg_pool2d`` to 20x20), equal to the paper's fixed pooling
  when the size is a multiple of 20 (80 -> 4x4 windows); images smaller than 20 on a side are used
  at their own resolution on that side;
* constant images (zero variance after pooling) have an undefined correlation; the official
  code's NaN compares false, so they are never flagged, and neither are they here (they are
  counted in ``DedupResult.n_constant``).

The correlation uses the absolute value, as the paper does, so a contrast-inverted copy counts
as a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gahb.utils.device import no_tf32

DEDUP_THRESHOLD = 0.95
DEDUP_POOL = 20


@dataclass
class DedupResult:
    """Outcome of :func:`deduplicate`; all index arrays are int64 into the input order.

    ``nearest_earlier[j]`` is max_{i<j} |corr(i, j)| (0 for j = 0) and ``partner[j]`` the i
    attaining it (-1 for j = 0), for every image, so the similarity distribution can be inspected.
    """

    kept: np.ndarray
    removed: np.ndarray
    nearest_earlier: np.ndarray
    partner: np.ndarray
    n_constant: int
    threshold: float
    pool_size: int

    @property
    def n_before(self) -> int:
        return int(self.nearest_earlier.shape[0])

    @property
    def n_removed(self) -> int:
        return int(self.removed.shape[0])

    def pairs(self) -> list[tuple[int, int, float]]:
        """(earlier i, removed j, |corr|) for every removed image, i its most similar predecessor."""
        return [(int(self.partner[j]), int(j), float(self.nearest_earlier[j])) for j in self.removed]

    def summary(self) -> dict:
        return {"threshold": self.threshold, "pool_size": self.pool_size, "n_before": self.n_before,
                "n_after": int(self.kept.shape[0]), "n_removed": self.n_removed,
                "n_constant": self.n_constant}


def _as_nchw(images) -> tuple[int, tuple[int, ...]]:
    shape = tuple(images.shape)
    if len(shape) == 3:
        return shape[0], (1,) + shape[1:]
    if len(shape) != 4:
        raise ValueError(f"deduplication expects (N, H, W) or (N, C, H, W) images, got shape {shape}")
    return shape[0], shape[1:]


def dedup_features(images, pool_size: int = DEDUP_POOL, chunk: int = 2048,
                   progress: bool = False) -> torch.Tensor:
    """Pooled, mean-subtracted, unit-norm feature vectors (N, C*h*w), float32 (steps 1-2).

    ``images`` is any (N, C, H, W) or (N, H, W) numpy array (uint8/uint16/float, memmap fine) or
    tensor; the stored scale does not matter since correlations are scale invariant. Constant
    images give all-zero rows (correlation 0 with everything). Converted ``chunk`` rows at a time.
    """
    n, (c, h, w) = _as_nchw(images)
    out_hw = (min(h, pool_size), min(w, pool_size))
    feats = torch.empty((n, c * out_hw[0] * out_hw[1]), dtype=torch.float32)
    for lo in tqdm(range(0, n, chunk), desc="dedup features", unit="chunk", disable=not progress):
        block = images[lo:lo + chunk]
        block = (block.detach().cpu() if isinstance(block, torch.Tensor)
                 else torch.from_numpy(np.asarray(block, dtype=np.float32)))
        # float64 pooling and centring: a constant image then centres to (almost) exact zeros
        block = block.to(torch.float64).reshape(-1, c, h, w)
        pooled = F.adaptive_avg_pool2d(block, out_hw).reshape(block.shape[0], -1)
        level = pooled.abs().amax(dim=1, keepdim=True)
        pooled -= pooled.mean(dim=1, keepdim=True)
        norm = pooled.norm(dim=1, keepdim=True)
        flat = norm <= 1e-9 * level  # rounding residue only: treat as constant
        feats[lo:lo + block.shape[0]] = torch.where(flat, torch.zeros_like(pooled),
                                                    pooled / norm.clamp_min(1e-300)).to(torch.float32)
    return feats


def nearest_earlier(features: torch.Tensor, chunk: int = 4096, progress: bool = True,
                    device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """For each row j: max_{i<j} |<f_i, f_j>| and its argmax i, over blocks of the lower triangle.

    Peak extra memory is two (chunk x chunk) float32 blocks (2 x 64 MB at chunk 4096); the
    N x N matrix is never formed. ``device`` may be a GPU (TF32 is switched off meanwhile: its
    ~1e-3 error would move pairs across the threshold).
    """

    device = torch.device(device)
    features = features.to(device)
    n = features.shape[0]
    best = torch.zeros(n, dtype=torch.float32, device=device)
    arg = torch.full((n,), -1, dtype=torch.int64, device=device)
    with no_tf32():
        _pairs_pass(features, best, arg, chunk, progress)
    arg[0] = -1
    return best.cpu().numpy(), arg.cpu().numpy()



def _pairs_pass(features: torch.Tensor, best: torch.Tensor, arg: torch.Tensor, chunk: int,
                progress: bool) -> None:
    n = features.shape[0]
    total = n * (n - 1) // 2
    bar = tqdm(total=total, desc="dedup pairs", unit="pair", unit_scale=True, disable=not progress)
    for r0 in range(0, n, chunk):
        r1 = min(r0 + chunk, n)
        rows = features[r0:r1]
        for c0 in range(0, r1, chunk):
            c1 = min(c0 + chunk, r1)
            sim = (rows @ features[c0:c1].T).abs_()
            if c0 == r0:  # diagonal block: keep the strict lower triangle (i < j) only
                sim = sim.tril_(-1)
            val, idx = sim.max(dim=1)
            better = val > best[r0:r1]
            best[r0:r1] = torch.where(better, val, best[r0:r1])
            arg[r0:r1] = torch.where(better, idx + c0, arg[r0:r1])
            bar.update((r1 - r0) * (c1 - c0) if c0 != r0 else (r1 - r0) * (r1 - r0 - 1) // 2)
    bar.close()


def deduplicate(images, threshold: float = DEDUP_THRESHOLD, pool_size: int = DEDUP_POOL,
                chunk: int = 4096, progress: bool = True, device: str | torch.device = "cpu") -> DedupResult:
    """Indices to keep after removing near-duplicates (the paper's rule, see module docstring).

    An image is removed iff an earlier image has |corr| > ``threshold`` with it after
    ``pool_size`` x ``pool_size`` average pooling and mean removal.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    feats = dedup_features(images, pool_size, progress=progress)
    n_constant = int((feats.abs().sum(dim=1) == 0).sum())
    best, arg = nearest_earlier(feats, chunk=chunk, progress=progress, device=device)
    dup = best > threshold
    return DedupResult(kept=np.flatnonzero(~dup).astype(np.int64), removed=np.flatnonzero(dup).astype(np.int64),
                       nearest_earlier=best, partner=arg.astype(np.int64), n_constant=n_constant,
                       threshold=float(threshold), pool_size=int(pool_size))


def deduplicate_dense(images, threshold: float = DEDUP_THRESHOLD, pool_size: int = DEDUP_POOL) -> np.ndarray:
    """Reference implementation with the full N x N matrix, as the official code does (small N
    only; used to test :func:`deduplicate`). Returns the kept indices."""
    x = images.detach().cpu().double() if isinstance(images, torch.Tensor) else torch.from_numpy(
        np.asarray(images, dtype=np.float64))
    n, (c, h, w) = _as_nchw(x)
    x = F.adaptive_avg_pool2d(x.reshape(n, c, h, w), (min(h, pool_size), min(w, pool_size))).reshape(n, -1)
    x = x - x.mean(dim=1, keepdim=True)
    corr = (x @ x.T) / (x.norm(dim=1)[:, None] * x.norm(dim=1)[None, :])  # NaN for constant images
    pairs = torch.nonzero(torch.tril(corr.abs() > threshold, diagonal=-1))
    removed = set(pairs[:, 0].tolist())  # row index = the later image of each pair
    return np.array([j for j in range(n) if j not in removed], dtype=np.int64)
