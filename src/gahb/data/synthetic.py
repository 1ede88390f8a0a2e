"""Synthetic image datasets of the paper (spec section 8): C^alpha images, disks, sinusoids, rescalings.

Every generator is seeded, vectorised over images and returns float32 tensors (N, 1, H, W) on the
pixel scale [0, 1] (the gahb denoiser contract). Randomness is drawn in fixed blocks of
:data:`BLOCK` images, each block from its own child of ``numpy.random.SeedSequence(seed)``, so

* the same seed gives the same images, whatever the chunking, thread or progress settings;
* a dataset is a prefix of a larger one with the same seed (``calpha_images(10, seed=s)`` equals
  ``calpha_images(1000, seed=s)[:10]``), which makes nested training sets cheap;
* working memory beyond the returned tensor is bounded by one block (~50 MB at 80x80), and
  :func:`iter_synthetic` streams datasets too large to hold in memory.

Generators
----------
* :func:`calpha_images`: geometric C^alpha images, two variants (spec 8.1, paper App. E, Alg. 2).
* :func:`disk_images`, :func:`sample_disk_params`, :func:`disk_tangent_space`: the 5-dimensional
  manifold of disks (spec 8.2, paper Fig. 5) and its tangent space.
* :func:`sinusoid_images`, :func:`sample_sinusoid_params`: unit-frequency sinusoids (spec 8.3,
  paper Fig. 20).
* :func:`rescaled_image_dataset`: one image and its positive rescalings (spec 8.3, paper Fig. 19).
* :class:`PixelShuffle`: one fixed pixel permutation for "shuffled" datasets (spec 8.4, Fig. 21).
* :func:`synthetic_dataset`, :class:`SyntheticConfig`, :func:`parse_synthetic_spec`: a uniform
  entry point, a JSON-able config and the ``"calpha:alpha=2,size=80"`` spec-string parser.
"""

from __future__ import annotations

import inspect
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gahb.models.base import as_single_image

__all__ = [
    "BLOCK",
    "SYNTHETIC_NAMES",
    "CalphaParts",
    "DiskTangent",
    "PixelShuffle",
    "SyntheticConfig",
    "calpha_backgrounds",
    "calpha_contour_rows",
    "calpha_contours",
    "calpha_images",
    "disk_images",
    "disk_tangent_space",
    "iter_synthetic",
    "parse_synthetic_spec",
    "rescaled_image_dataset",
    "sample_disk_params",
    "sample_sinusoid_params",
    "sinusoid_images",
    "smooth_mask_2x2",
    "synthetic_dataset",
]

BLOCK = 256
"""Images per random block. Part of the seeding scheme: changing it changes every dataset.
(256 keeps a block's 80x80 arrays ~13 MB, small enough for the allocator to reuse them; 1024
was ~1.5x slower in CPU time on the development machine.)"""

Size = int | Sequence[int]


# ----------------------------------------------------------------------------------------------
# Seeding and bookkeeping helpers


def _hw(size: Size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        size = tuple(int(s) for s in size)
        if len(size) != 2:
            raise ValueError(f"size must be an int or (H, W), got {size!r}")
        h, w = size
    if h < 2 or w < 2:
        raise ValueError(f"image size must be at least 2x2, got {h}x{w}")
    return h, w


def _check_n(n: int) -> int:
    if int(n) != n or n < 0:
        raise ValueError(f"number of images must be a non-negative integer, got {n!r}")
    return int(n)


def _block_rngs(seed: int, n: int, salt: int = 0) -> Iterator[tuple[int, int, np.random.Generator]]:
    """Yield (start, stop, rng) for consecutive blocks of BLOCK images.

    Block b draws from SeedSequence([seed, salt, b]); ``salt`` separates generators that would
    otherwise share streams (e.g. disk parameters and sinusoid parameters with the same seed).
    """
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for b, start in enumerate(range(0, n, BLOCK)):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(salt), b]))
        yield start, min(start + BLOCK, n), rng


def _uniform(rng: np.random.Generator, n: int, shape: tuple[int, ...] = (),
             dtype: type = np.float64) -> np.ndarray:
    """U[0, 1) draws for the first n images of a block.

    Always draws a whole block (and drops the tail) so that every draw of a block starts at the
    same point of the stream whatever n is: this is what makes datasets prefixes of each other.
    """
    return rng.random((BLOCK, *shape), dtype=dtype)[:n]


@contextmanager
def _torch_threads(threads: int | None):
    """Temporarily run torch (and the scipy FFTs, which follow it) on ``threads`` threads.

    The generators are memory-bound elementwise work on ~1e6-element blocks. On the shared
    2-core development machine (load ~5) two OpenMP threads were 3-12x *slower* than one
    (spin-waiting when oversubscribed), so the generators default to one thread; ``None`` keeps
    torch's current setting. The previous setting is restored on exit.
    """
    old = torch.get_num_threads()
    if threads is None or int(threads) == old:
        yield
        return
    if int(threads) < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="img", leave=False)


# ----------------------------------------------------------------------------------------------
# C^alpha images (spec 8.1; paper App. E, Algorithm 2)

CALPHA_VARIANTS = ("code", "paper")
CONTRAST_MODES = ("random", "minmax")


def _inverse_power_filter(freqs: torch.Tensor, exponent: float) -> torch.Tensor:
    """|k|^-exponent with the DC entry set to 1.

    The paper's |omega|^-alpha is undefined at omega = 0; the released generator replaces the
    infinite DC value by its neighbour's (|k| = 1, i.e. weight 1). We keep that convention for
    both variants, so an image's mean is as random as its lowest frequency.
    """
    mag = freqs.abs()
    filt = torch.ones_like(mag)
    nz = mag > 0
    filt[nz] = mag[nz].pow(-float(exponent))
    return filt


def _contour_filter(width: int, alpha: float) -> torch.Tensor:
    # Integer frequencies along the columns, in rfft layout; 1/(N|f|) of the code is 1/|k|.
    k = torch.fft.rfftfreq(width, dtype=torch.float64) * width
    return _inverse_power_filter(k, alpha)


def _background_filter(h: int, w: int, beta: float) -> torch.Tensor:
    # Radial frequency |k| = L |f| with f in cycles/pixel and L = sqrt(HW): for square images
    # this is the code's 1/(N sqrt(fx^2 + fy^2)) = 1/|k|; for rectangles it stays isotropic.
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    k = math.sqrt(h * w) * torch.sqrt(fy**2 + fx**2)
    return _inverse_power_filter(k, beta)


def _noise_half_width(variant: str) -> float:
    # Released code: U[-1, 1]; paper Algorithm 2: U[-0.5, 0.5].
    return 1.0 if variant == "code" else 0.5


def _check_variant(variant: str) -> str:
    if variant not in CALPHA_VARIANTS:
        raise ValueError(f"variant must be one of {CALPHA_VARIANTS}, got {variant!r}")
    return variant


def _check_exponent(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
    return value


def _np_dtype(dtype: torch.dtype) -> type:
    return np.float64 if dtype == torch.float64 else np.float32


def _fft_workers() -> int:
    return max(1, torch.get_num_threads())


def _filtered_noise_1d(rng: np.random.Generator, n: int, width: int, alpha: float, variant: str,
                       dtype: torch.dtype) -> torch.Tensor:
    import scipy.fft as sfft  # pocketfft via scipy is ~2x faster than torch.fft here

    half = _noise_half_width(variant)
    c = _uniform(rng, n, (width,), np.float32).astype(_np_dtype(dtype), copy=False)
    c = c * (2 * half) - half
    filt = _contour_filter(width, alpha).numpy().astype(_np_dtype(dtype))
    # The filter is even in k, so "real part of the inverse FFT" of the code is exactly irfft.
    out = sfft.irfft(sfft.rfft(c, axis=-1, workers=_fft_workers()) * filt, n=width, axis=-1,
                     workers=_fft_workers(), overwrite_x=True)
    return torch.from_numpy(np.ascontiguousarray(out))


def _filtered_noise_2d(rng: np.random.Generator, n: int, h: int, w: int, beta: float, variant: str,
                       dtype: torch.dtype) -> torch.Tensor:
    import scipy.fft as sfft

    half = _noise_half_width(variant)
    b = _uniform(rng, n, (2, h, w), np.float32).astype(_np_dtype(dtype), copy=False)
    spec = sfft.rfft2(b, workers=_fft_workers())
    # U[-half, half] = 2 half U[0, 1) - half: scale every coefficient, shift only the DC one
    # (one pass over the spectrum instead of two over the noise).
    filt = _background_filter(h, w, beta).numpy()
    spec *= (2 * half * filt).astype(_np_dtype(dtype))
    spec[..., 0, 0] -= half * h * w * filt[0, 0]
    out = sfft.irfft2(spec, s=(h, w), workers=_fft_workers(), overwrite_x=True)
    return torch.from_numpy(np.ascontiguousarray(out))


def calpha_contour_rows(contour: torch.Tensor, height: int, variant: str = "code") -> torch.Tensor:
    """Per-column index of the first row *below* the contour, clamped to [0, height].

    The mask is 1 on rows ``>= index`` and 0 above (row 0 is the top of the image).

    * ``"code"``: ``round(c * H) + H // 2`` as in the released generator.
    * ``"paper"``: M = 1[y > C(x)] with pixel-centre heights y_i = (i + 1/2)/H - 1/2 on the unit
      square centred at 0 (the frame in which Algorithm 2 draws c ~ U[-1/2, 1/2]), i.e. the first
      row with i > H (C + 1/2) - 1/2.

    The released code used the unclamped index as a slice bound, so a negative value blanked
    almost the whole column (spec 10.4); clamping to [0, H] makes every contour outside the image
    mean "all one region", and non-finite values (never produced by the generator) are mapped to
    the nearest border.
    """
    _check_variant(variant)
    height = int(height)
    c = torch.nan_to_num(contour.to(torch.float64), nan=0.0, posinf=1e6, neginf=-1e6)
    c = c.clamp(-1e6, 1e6)  # keeps the integer conversion defined for absurd inputs
    if variant == "code":
        rows = torch.round(c * height) + height // 2
    else:
        rows = torch.floor(height * (c + 0.5) - 0.5) + 1
    return rows.clamp(0, height).to(torch.long)


def calpha_contours(n: int, size: Size = 80, alpha: float = 2.0, seed: int = 0,
                    variant: str = "code") -> torch.Tensor:
    """The raw C^alpha contours C (n, W) in image-height units (before conversion to rows).

    Step 1 of Algorithm 2: white noise filtered by |k|^-alpha ("integrated" alpha times).
    Drawn from the same random stream as :func:`calpha_images` with the same arguments.
    """
    n, (_, w) = _check_n(n), _hw(size)
    _check_variant(variant)
    alpha = _check_exponent("alpha", alpha)
    out = torch.empty(n, w, dtype=torch.float64)
    for lo, hi, rng in _block_rngs(seed, n):
        out[lo:hi] = _filtered_noise_1d(rng, hi - lo, w, alpha, variant, torch.float64)
    return out


def calpha_backgrounds(n: int, size: Size = 80, beta: float = 2.0, seed: int = 0,
                       variant: str = "code", dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Raw C^beta backgrounds (n, 2, H, W): white noise filtered by |k|^-beta in 2-D.

    Step 2 of Algorithm 2, before any intensity rescaling; their expected power spectrum is
    exactly |k|^(-2 beta) (DC aside). The same random stream as :func:`calpha_images`.
    """
    n, (h, w) = _check_n(n), _hw(size)
    _check_variant(variant)
    beta = _check_exponent("beta", beta)
    out = torch.empty(n, 2, h, w, dtype=dtype)
    for lo, hi, rng in _block_rngs(seed, n):
        _filtered_noise_1d(rng, hi - lo, w, 0.0, variant, dtype)  # keep the stream aligned
        out[lo:hi] = _filtered_noise_2d(rng, hi - lo, h, w, beta, variant, dtype)
    return out


def smooth_mask_2x2(mask: torch.Tensor) -> torch.Tensor:
    """Anti-alias a hard mask (N, H, W) with a 2x2 box filter, reflect padding, same size.

    This is the released "blurredx2" step: a stride-1 2x2 average over each pixel and its
    upper/left neighbours, with the missing row/column -1 reflected (row -1 := row 1). Values
    are in {0, 1/4, 1/2, 3/4, 1}; the edge becomes a one-pixel ramp.
    """
    p = F.pad(mask.unsqueeze(1), (1, 0, 1, 0), mode="reflect").squeeze(1)
    return 0.25 * (p[:, :-1, :-1] + p[:, 1:, :-1] + p[:, :-1, 1:] + p[:, 1:, 1:])


def _hard_mask(rows: torch.Tensor, h: int, dtype: torch.dtype) -> torch.Tensor:
    """(N, H, W) mask, 1 on rows >= rows[:, col] (below the contour), 0 above."""
    return (torch.arange(h)[None, :, None] >= rows[:, None, :]).to(dtype)


def _smooth_mask_from_rows(rows: torch.Tensor, h: int, dtype: torch.dtype) -> torch.Tensor:
    """``smooth_mask_2x2(_hard_mask(rows, h))`` in a few passes (the generator's hot path).

    The 2x2 box is separable. Down a column, 0.5 (m[i-1] + m[i]) = clamp(i - r + 1/2, 0, 1);
    row -1 reflects to row 1, so row 0 equals row 1. Across columns the same averaging with
    column -1 := column 1 makes column 0 equal column 1.
    """
    i = torch.arange(h, dtype=dtype).clamp_min(1)[None, :, None] + 0.5
    v = (i - rows[:, None, :].to(dtype)).clamp_(0.0, 1.0)
    out = torch.empty_like(v)
    torch.add(v[..., :-1], v[..., 1:], alpha=1.0, out=out[..., 1:])
    out[..., 1:] *= 0.5
    out[..., 0] = out[..., 1]
    return out


def _minmax(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Affinely map each image of x (N, H, W) onto [lo, hi] (per-image bounds, shape (N,))."""
    mn = x.amin(dim=(-2, -1))
    mx = x.amax(dim=(-2, -1))
    gain = (hi - lo) / (mx - mn).clamp_min(1e-12)
    offset = lo - mn * gain
    return torch.addcmul(offset[:, None, None], x, gain[:, None, None])


class CalphaParts(NamedTuple):
    """Intermediate quantities of :func:`calpha_images` (``return_parts=True``)."""

    images: torch.Tensor  # (N, 1, H, W) float32
    contour: torch.Tensor  # (N, W) raw contour C, image-height units
    rows: torch.Tensor  # (N, W) long, first row of region 1 per column, in [0, H]
    mask: torch.Tensor  # (N, H, W) hard mask, 1 below the contour
    smooth_mask: torch.Tensor  # (N, H, W) mask actually used for composition
    background1: torch.Tensor  # (N, H, W) after intensity rescaling (shown where mask = 1)
    background2: torch.Tensor  # (N, H, W) after intensity rescaling (shown where mask = 0)


def _calpha_resolve(variant: str, contrast: str | None, antialias: bool | None) -> tuple[str, bool]:
    _check_variant(variant)
    if contrast is None:
        contrast = "random" if variant == "code" else "minmax"
    if contrast not in CONTRAST_MODES:
        raise ValueError(f"contrast must be one of {CONTRAST_MODES} or None, got {contrast!r}")
    if antialias is None:
        antialias = variant == "code"
    return contrast, bool(antialias)


def _calpha_block(rng: np.random.Generator, n: int, h: int, w: int, alpha: float, beta: float,
                  variant: str, contrast: str, antialias: bool, dtype: torch.dtype,
                  parts: bool = False):
    # Draw order is part of the seeding contract: contour, backgrounds, then contrast variables.
    contour = _filtered_noise_1d(rng, n, w, alpha, variant, dtype)
    bgs = _filtered_noise_2d(rng, n, h, w, beta, variant, dtype)
    a = torch.from_numpy(_uniform(rng, n)).to(dtype)
    b = torch.from_numpy(_uniform(rng, n)).to(dtype)
    swap = torch.from_numpy(_uniform(rng, n) < 0.5)

    rows = calpha_contour_rows(contour, h, variant)
    mask = _hard_mask(rows, h, dtype) if (parts or not antialias) else None
    soft = _smooth_mask_from_rows(rows, h, dtype) if antialias else mask

    if contrast == "random":
        # One region to [a, 1], the other to [0, b]: on average a contrast across the contour.
        one, zero = torch.ones_like(a), torch.zeros_like(a)
        lo1, hi1 = torch.where(swap, zero, a), torch.where(swap, b, one)
        lo2, hi2 = torch.where(swap, a, zero), torch.where(swap, one, b)
        b1 = _minmax(bgs[:, 0], lo1, hi1)
        b2 = _minmax(bgs[:, 1], lo2, hi2)
    else:
        # Algorithm 2 composes the raw backgrounds; one affine map per image puts x in [0, 1].
        # Applying that same map to both backgrounds keeps x = b1 M + b2 (1 - M) exact.
        raw = bgs[:, 0] * soft + bgs[:, 1] * (1 - soft)
        off = raw.amin(dim=(-2, -1), keepdim=True)
        scale = (raw.amax(dim=(-2, -1), keepdim=True) - off).clamp_min(1e-12)
        b1 = (bgs[:, 0] - off) / scale
        b2 = (bgs[:, 1] - off) / scale
    img = torch.addcmul(b2, soft, b1 - b2)  # b1 M + b2 (1 - M)
    img = img.clamp(0.0, 1.0).to(torch.float32).unsqueeze(1)
    if not parts:
        return img
    return CalphaParts(img, contour.to(torch.float64), rows, mask, soft, b1, b2)


def calpha_images(n: int, size: Size = 80, alpha: float = 2.0, beta: float | None = None,
                  seed: int = 0, variant: str = "code", contrast: str | None = None,
                  antialias: bool | None = None, dtype: torch.dtype = torch.float32,
                  progress: bool = False, return_parts: bool = False, threads: int | None = 1):
    """Geometric C^alpha images (spec 8.1; paper App. E, Algorithm 2): two C^beta regions
    separated by the graph of a C^alpha contour.

    Args:
        n: number of images.
        size: image size, int or (H, W). The contour is a function of the column.
        alpha: contour regularity; white noise along the W columns filtered by |k|^-alpha.
        beta: background regularity (2-D filter |k|^-beta); ``None`` means beta = alpha, the
            setting of the released models. Fig. 17 uses alpha in {1.5, 2, 4} with beta = 8.
        seed: random seed (see the module docstring for the seeding contract).
        variant: ``"code"`` (default) reproduces the released generator: U[-1, 1] noise, contour
            rows ``round(C H) + H//2``, random contrast and 2x2 anti-aliasing. ``"paper"`` follows
            Algorithm 2: U[-1/2, 1/2] noise, M = 1[y > C(x)] on the centred unit square, hard
            mask, and the composed image mapped affinely onto [0, 1].
        contrast: ``"random"``: with probability 1/2 each way, one background is min-max rescaled
            to [a, 1] and the other to [0, b], a, b ~ U(0, 1) (released code); ``"minmax"``: raw
            composition, then one per-image affine map onto [0, 1]. ``None``: variant default.
        antialias: smooth the mask with :func:`smooth_mask_2x2` ("blurredx2"); ``None``: variant
            default (True for "code", False for "paper").
        dtype: computation dtype of the filtering. float32 is plenty for images; use float64 to
            study spectra below ~1e-7 of the peak amplitude (large beta).
        progress: tqdm bar over blocks.
        return_parts: return a :class:`CalphaParts` with the contour, mask and backgrounds.
        threads: torch/FFT threads while generating (1 by default, see :func:`_torch_threads`;
            ``None`` keeps torch's setting). The images do not depend on it.

    Contours are clamped to the image (spec 10.4): a contour above the top makes the column all
    region 1, one below the bottom all region 2. Measured at 80x80 (4000 contours): the contour
    row has a standard deviation of 9-11 rows for alpha >= 1 ("code"; 4.5-5.3 for "paper") and
    16 rows at alpha = 0.5, where 0.3% of the columns would leave the image unclamped.

    Returns:
        float32 (n, 1, H, W) in [0, 1], or a :class:`CalphaParts`.
    """
    n, (h, w) = _check_n(n), _hw(size)
    alpha = _check_exponent("alpha", alpha)
    beta = alpha if beta is None else _check_exponent("beta", beta)
    contrast, antialias = _calpha_resolve(variant, contrast, antialias)
    with _torch_threads(threads):
        if not return_parts:
            out = torch.empty(n, 1, h, w, dtype=torch.float32)
            with _progress(n, progress, "C^alpha images") as bar:
                for lo, hi, rng in _block_rngs(seed, n):
                    out[lo:hi] = _calpha_block(rng, hi - lo, h, w, alpha, beta, variant, contrast,
                                               antialias, dtype)
                    bar.update(hi - lo)
            return out
        pieces = [_calpha_block(rng, hi - lo, h, w, alpha, beta, variant, contrast, antialias,
                                dtype, parts=True) for lo, hi, rng in _block_rngs(seed, n)]
        if not pieces:
            return _calpha_block(np.random.default_rng(0), 0, h, w, alpha, beta, variant,
                                 contrast, antialias, dtype, parts=True)
        return CalphaParts(*(torch.cat(p) for p in zip(*pieces)))


# ----------------------------------------------------------------------------------------------
# Disks: a 5-dimensional manifold (spec 8.2; paper Fig. 5)

DISK_PARAM_NAMES = ("cx", "cy", "r", "fg", "bg")


def _edge_profile(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Coverage phi(t) and phi'(t) of a pixel at signed distance t = r - rho inside the edge.

    A cubic smoothstep over one pixel, t in [-1/2, 1/2]: phi = u^2 (3 - 2u), u = t + 1/2. It is
    C^1 (so the image is differentiable in the parameters and the tangent space is defined
    everywhere) and odd-symmetric about t = 0 (phi(t) + phi(-t) = 1), so the rendered area
    equals pi r^2 up to O(1/r) curvature and lattice terms.
    """
    u = (t + 0.5).clamp(0.0, 1.0)
    return u * u * (3 - 2 * u), 6 * u * (1 - u)


def _as_params(params, dtype: torch.dtype) -> torch.Tensor:
    p = torch.as_tensor(params, dtype=dtype)
    if p.ndim == 1:
        p = p.unsqueeze(0)
    if p.ndim != 2 or p.shape[1] != 5:
        raise ValueError(f"disk parameters must have shape (N, 5) = (cx, cy, r, fg, bg), got "
                         f"{tuple(p.shape)}")
    if not torch.isfinite(p).all():
        raise ValueError("disk parameters must be finite")
    if (p[:, 2] <= 0).any():
        raise ValueError("disk radii must be positive")
    return p


def _pixel_grid(h: int, w: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # Pixel (i, j) covers [j, j+1] x [i, i+1] of the continuous domain [0, W] x [0, H].
    y = torch.arange(h, dtype=dtype)[:, None] + 0.5
    x = torch.arange(w, dtype=dtype)[None, :] + 0.5
    return x, y


def _disk_pixels(cx, cy, r, fg, bg, x, y, derivs: bool = False):
    """Disk image values at points (x, y); every argument broadcasts elementwise."""
    dx, dy = x - cx, y - cy
    # The 1e-12 keeps d rho / d c finite at rho = 0 (autograd would give 0 * inf = nan there).
    rho = torch.sqrt(dx * dx + dy * dy + 1e-12)
    phi, dphi = _edge_profile(r - rho)
    img = bg + (fg - bg) * phi
    if not derivs:
        return img
    contrast = (fg - bg) * dphi
    # d phi(r - rho) / d cx = phi' * dx / rho, since d rho / d cx = -dx / rho.
    d = torch.stack(torch.broadcast_tensors(contrast * dx / rho, contrast * dy / rho, contrast,
                                            phi, 1 - phi), dim=-1)
    return img, d


def _render_disks(p: torch.Tensor, h: int, w: int, derivs: bool = False):
    x, y = _pixel_grid(h, w, p.dtype)
    return _disk_pixels(*(p[:, i, None, None] for i in range(5)), x, y, derivs=derivs)


def _autograd_disk_jacobian(p: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(H W, 5) Jacobian by one reverse-mode pass: each pixel gets its own leaf copy of the
    parameters, so the gradient of the pixel sum w.r.t. copy k is the k-th Jacobian row."""
    x, y = _pixel_grid(h, w, p.dtype)
    copies = p.reshape(1, 5).repeat(h * w, 1).requires_grad_(True)
    xs, ys = x.expand(h, w).reshape(-1), y.expand(h, w).reshape(-1)
    vals = _disk_pixels(*copies.unbind(1), xs, ys)
    (jac,) = torch.autograd.grad(vals.sum(), copies)
    return jac


def sample_disk_params(n: int, size: Size = 80, seed: int = 0, min_radius: float = 3.0) -> torch.Tensor:
    """Random disk parameters (n, 5) = (cx, cy, r, fg, bg), float64, ranges of the released
    ``circle_dataset`` (translate, scale, foreground, background, continuous; spec 8.2):

    * r ~ U(min_radius, (min(H, W) - min_radius) // 2), i.e. U(3, 38) at 80x80;
    * cx ~ U(r, W - r), cy ~ U(r, H - r) in continuous pixel units (domain [0, W] x [0, H], pixel
      (i, j) centred at (j + 1/2, i + 1/2)), so the whole disk lies in the image;
    * fg, bg ~ U(0, 1) independently (the contrast fg - bg may be small or negative).
    """
    n, (h, w) = _check_n(n), _hw(size)
    r_max = (min(h, w) - min_radius) // 2
    if not 0 < min_radius < r_max:
        raise ValueError(f"need 0 < min_radius < (min(H, W) - min_radius) // 2; got min_radius="
                         f"{min_radius} for a {h}x{w} image")
    out = torch.empty(n, 5, dtype=torch.float64)
    for lo, hi, rng in _block_rngs(seed, n, salt=1):
        u = torch.from_numpy(_uniform(rng, hi - lo, (5,)))
        r = min_radius + (r_max - min_radius) * u[:, 2]
        out[lo:hi, 0] = r + (w - 2 * r) * u[:, 0]
        out[lo:hi, 1] = r + (h - 2 * r) * u[:, 1]
        out[lo:hi, 2] = r
        out[lo:hi, 3:] = u[:, 3:]
    return out


def disk_images(params, size: Size = 80, dtype: torch.dtype = torch.float32, chunk: int = BLOCK,
                progress: bool = False, threads: int | None = 1) -> torch.Tensor:
    """Render disks from parameters (N, 5) = (cx, cy, r, fg, bg) as (N, 1, H, W) images.

    image(x) = bg + (fg - bg) phi(r - |x - c|) with the one-pixel C^1 edge of
    :func:`_edge_profile` evaluated at pixel centres (anti-aliasing that is differentiable in
    all five parameters). Deterministic: the randomness is in :func:`sample_disk_params`.
    Values stay in [min(fg, bg), max(fg, bg)], so in [0, 1] for intensities in [0, 1].
    ``threads`` as in :func:`calpha_images`.
    """
    h, w = _hw(size)
    p = _as_params(params, torch.float64)
    out = torch.empty(p.shape[0], 1, h, w, dtype=dtype)
    with _torch_threads(threads), _progress(p.shape[0], progress, "disks") as bar:
        for lo in range(0, p.shape[0], chunk):
            work = p[lo:lo + chunk]
            if dtype != torch.float64:
                work = work.to(torch.float32)
            out[lo:lo + chunk, 0] = _render_disks(work, h, w).to(dtype)
            bar.update(work.shape[0])
    return out


class DiskTangent(NamedTuple):
    basis: torch.Tensor  # (d, 5) orthonormal columns spanning the tangent space (QR of derivatives)
    derivatives: torch.Tensor  # (d, 5) d image / d (cx, cy, r, fg, bg), flattened images


def disk_tangent_space(params, size: Size = 80, method: str = "analytic", step: float = 1e-4,
                       rank_tol: float = 1e-8) -> DiskTangent:
    """Tangent space of the disk manifold at one disk (spec 8.2, paper Fig. 5).

    Args:
        params: (5,) = (cx, cy, r, fg, bg).
        size: image size.
        method: ``"analytic"`` (closed-form derivatives of :func:`disk_images`), ``"autograd"``
            (reverse-mode autodiff through the renderer, one pass) or ``"fd"`` (central finite differences with
            ``step``, in the parameters' own units: pixels and intensity).
        rank_tol: a derivative column whose QR residual is below ``rank_tol`` times its norm is
            (numerically) dependent on the previous ones; that happens when fg == bg, where the
            geometric directions vanish, and raises ValueError.

    Returns:
        :class:`DiskTangent` ``(basis, derivatives)``, both (d, 5) float64 with d = H * W; the
        basis is the Q of a QR (Gram-Schmidt order: cx, cy, r, fg, bg), signs fixed so that
        ``basis[:, k] . derivatives[:, k] > 0``.
    """
    h, w = _hw(size)
    p = _as_params(params, torch.float64)
    if p.shape[0] != 1:
        raise ValueError("disk_tangent_space takes the parameters of a single disk, shape (5,)")
    if method == "analytic":
        _, d = _render_disks(p, h, w, derivs=True)
        jac = d[0].reshape(h * w, 5)
    elif method == "autograd":
        jac = _autograd_disk_jacobian(p[0], h, w)
    elif method == "fd":
        cols = []
        for k in range(5):
            e = torch.zeros(5, dtype=torch.float64)
            e[k] = step
            plus = _render_disks(p + e, h, w)[0].reshape(-1)
            minus = _render_disks(p - e, h, w)[0].reshape(-1)
            cols.append((plus - minus) / (2 * step))
        jac = torch.stack(cols, dim=1)
    else:
        raise ValueError(f"method must be 'analytic', 'autograd' or 'fd', got {method!r}")
    q, rmat = torch.linalg.qr(jac)
    diag = rmat.diagonal()
    norms = jac.norm(dim=0)
    if (diag.abs() <= rank_tol * norms.clamp_min(1e-300)).any() or (norms == 0).any():
        raise ValueError("disk tangent space is degenerate (rank < 5), e.g. fg == bg or a disk "
                         f"outside the image: params={p[0].tolist()}")
    q = q * torch.sign(diag)[None, :]
    return DiskTangent(q, jac)


# ----------------------------------------------------------------------------------------------
# Sinusoids of unit frequency (spec 8.3; paper Fig. 20)


def sample_sinusoid_params(n: int, seed: int = 0, max_amplitude: float = 0.5) -> torch.Tensor:
    """(n, 2) float64 = (amplitude ~ U(0, max_amplitude), phase ~ U(0, 2 pi))."""
    n = _check_n(n)
    if not 0 < max_amplitude <= 0.5:
        raise ValueError(f"max_amplitude must be in (0, 0.5] to keep images in [0, 1], got "
                         f"{max_amplitude}")
    out = torch.empty(n, 2, dtype=torch.float64)
    for lo, hi, rng in _block_rngs(seed, n, salt=2):
        u = torch.from_numpy(_uniform(rng, hi - lo, (2,)))
        out[lo:hi, 0] = max_amplitude * u[:, 0]
        out[lo:hi, 1] = 2 * math.pi * u[:, 1]
    return out


def sinusoid_images(params, size: Size = 80, axis: str = "x") -> torch.Tensor:
    """x[i, j] = 1/2 + A sin(2 pi j / W + phase) (axis "x"; axis "y" uses i / H).

    One period across the image, so the DFT is supported on the frequencies 0 and +-1 of the
    chosen axis only. The orientation is fixed (varying along the columns by default): the set
    {1/2 + A sin(. + phase)} = {1/2 + a cos + b sin} is then a 2-D cone whose tangent space is
    spanned by the unit-frequency sine and cosine (the optimal basis of spec 8.3).
    """
    h, w = _hw(size)
    p = torch.as_tensor(params, dtype=torch.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"sinusoid parameters must have shape (N, 2) = (amplitude, phase), got "
                         f"{tuple(p.shape)}")
    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
    length = w if axis == "x" else h
    t = (2 * math.pi / length) * torch.arange(length, dtype=torch.float64)
    # The 1-D profile in float64, then one float32 broadcast: no (N, H, W) float64 temporary.
    prof = (0.5 + p[:, 0, None] * torch.sin(t[None, :] + p[:, 1, None])).clamp(0, 1).float()
    view = prof[:, None, None, :] if axis == "x" else prof[:, None, :, None]
    return view.expand(p.shape[0], 1, h, w).contiguous()


# ----------------------------------------------------------------------------------------------
# One image and its positive rescalings (spec 8.3; paper Fig. 19)


def _as_image(image) -> torch.Tensor:
    x = as_single_image(image, "base image").to(torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError("base image contains non-finite values")
    return x


def rescaled_image_dataset(image, n: int, seed: int = 0, scale_range: tuple[float, float] = (0.0, 1.0),
                           return_scales: bool = False):
    """n copies s * x of one image with s ~ U(lo, hi] (default (0, 1], the official ``rescale``).

    The set {s x : s > 0} is a ray, so the optimal denoiser projects onto x / ||x|| (spec 8.3).
    s = hi - (hi - lo) u with u ~ U[0, 1), so s > lo >= 0 strictly: every image is a *positive*
    multiple of x. Returns (n, C, H, W) float32 (and the scales (n,) float64 if asked).
    """
    n = _check_n(n)
    lo, hi = (float(v) for v in scale_range)
    if not 0 <= lo < hi:
        raise ValueError(f"scale_range must satisfy 0 <= lo < hi, got {scale_range!r}")
    x = _as_image(image)
    s = torch.empty(n, dtype=torch.float64)
    for a, b, rng in _block_rngs(seed, n, salt=3):
        s[a:b] = hi - (hi - lo) * torch.from_numpy(_uniform(rng, b - a))
    out = (s.to(torch.float32)[:, None, None, None] * x[None]).contiguous()
    return (out, s) if return_scales else out


def _load_base_image(base, size: Size, seed: int) -> torch.Tensor:
    """A base image for the "rescaled" dataset: tensor/array, a generator name or a file."""
    h, w = _hw(size)
    if isinstance(base, str) and base in ("calpha", "disks", "sinusoids"):
        x = synthetic_dataset(base, 1, (h, w), seed)[0]
    elif isinstance(base, (str, Path)):
        path = Path(base).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"base image {path} does not exist (or name a generator: "
                                    "calpha, disks, sinusoids)")
        if path.suffix in (".pt", ".pth"):
            t = torch.load(path, map_location="cpu", weights_only=True)
            x = t[0] if torch.is_tensor(t) and t.ndim == 4 else t
        else:
            from PIL import Image

            with Image.open(path) as im:
                x = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        x = _as_image(x)
    else:
        x = _as_image(base)
    if tuple(x.shape[-2:]) != (h, w):
        raise ValueError(f"base image is {tuple(x.shape[-2:])}, but size={h}x{w} was requested")
    return x


# ----------------------------------------------------------------------------------------------
# Fixed pixel permutation (spec 8.4; paper Fig. 21)


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


# ----------------------------------------------------------------------------------------------
# Sparse bright strokes on black (a test set of the character of handwriting-like data)


def sample_stroke_params(n: int, max_strokes: int = 3, seed: int = 0) -> torch.Tensor:
    """(n, max_strokes, 9) float64: per stroke a 0/1 presence flag, three Bezier control points
    (x0, y0, x1, y1, x2, y2) in [0.1, 0.9] of the image side, a half-width in [0.6, 1.6] px and a
    brightness in [0.6, 1]. Every image has at least one stroke (1 to ``max_strokes``, uniform)."""
    n = _check_n(n)
    if max_strokes < 1:
        raise ValueError(f"max_strokes must be >= 1, got {max_strokes}")
    out = torch.empty(n, max_strokes, 9, dtype=torch.float64)
    for lo, hi, rng in _block_rngs(seed, n, salt=4):
        u = torch.from_numpy(_uniform(rng, hi - lo, (max_strokes, 9)))
        count = 1 + (u[:, 0, 0] * max_strokes).floor().clamp(max=max_strokes - 1)
        out[lo:hi, :, 0] = (torch.arange(max_strokes)[None, :] < count[:, None]).double()
        out[lo:hi, :, 1:7] = 0.1 + 0.8 * u[:, :, 1:7]
        out[lo:hi, :, 7] = 0.6 + 1.0 * u[:, :, 7]
        out[lo:hi, :, 8] = 0.6 + 0.4 * u[:, :, 8]
    return out


def stroke_images(params, size: Size = 28, samples: int = 48, chunk: int = 64) -> torch.Tensor:
    """Render strokes: each a quadratic Bezier curve drawn with an anti-aliased round pen.

    A pixel at distance r from the curve (its nearest of ``samples`` points) gets
    brightness * clamp(half_width + 1/2 - r, 0, 1); strokes combine by their maximum; the
    background is 0. Mostly black images with thin bright strokes, float32 (n, 1, H, W) in [0, 1].
    """
    h, w = _hw(size)
    p = torch.as_tensor(params, dtype=torch.float64)
    if p.ndim != 3 or p.shape[2] != 9:
        raise ValueError(f"stroke parameters must have shape (N, strokes, 9), got {tuple(p.shape)}")
    t = torch.linspace(0, 1, samples, dtype=torch.float64)[:, None]
    gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                            indexing="ij")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)  # (HW, 2) in pixels
    scale = torch.tensor([w, h], dtype=torch.float64)
    out = torch.empty(p.shape[0], 1, h, w, dtype=torch.float32)
    for lo in range(0, p.shape[0], chunk):
        q = p[lo:lo + chunk]
        c0, c1, c2 = (q[..., 1 + 2 * i:3 + 2 * i] * scale for i in range(3))  # (B, S, 2)
        pts = ((1 - t) ** 2)[None, None] * c0[:, :, None] + (2 * t * (1 - t))[None, None] * c1[:, :, None] \
            + (t**2)[None, None] * c2[:, :, None]  # (B, S, T, 2)
        dist = torch.cdist(pts.reshape(-1, samples, 2), grid[None].expand(pts.shape[0] * pts.shape[1], -1, -1))
        r = dist.min(dim=1).values.reshape(q.shape[0], q.shape[1], h * w)
        ink = (q[..., 7:8] + 0.5 - r).clamp(0, 1) * q[..., 8:9] * q[..., 0:1]
        out[lo:lo + chunk, 0] = ink.max(dim=1).values.reshape(-1, h, w).float()
    return out


# ----------------------------------------------------------------------------------------------
# Uniform entry point, config and spec strings

SYNTHETIC_NAMES = ("calpha", "disks", "sinusoids", "rescaled", "strokes")


def _gen_calpha(n, size, seed, alpha=2.0, beta=None, variant="code", contrast=None,
                antialias=None, progress=False, threads=1):
    return calpha_images(n, size, alpha=alpha, beta=beta, seed=seed, variant=variant,
                         contrast=contrast, antialias=antialias, progress=progress, threads=threads)


def _gen_disks(n, size, seed, min_radius=3.0, progress=False, threads=1):
    return disk_images(sample_disk_params(n, size, seed, min_radius=min_radius), size,
                       progress=progress, threads=threads)


def _gen_sinusoids(n, size, seed, axis="x", max_amplitude=0.5, progress=False, threads=1):
    return sinusoid_images(sample_sinusoid_params(n, seed, max_amplitude), size, axis=axis)


def _gen_strokes(n, size, seed, max_strokes=3, progress=False, threads=1):
    return stroke_images(sample_stroke_params(n, max_strokes, seed), size)


def _gen_rescaled(n, size, seed, base="calpha", base_seed=None, scale_min=0.0, scale_max=1.0,
                  progress=False, threads=1):
    x = _load_base_image(base, size, seed if base_seed is None else base_seed)
    return rescaled_image_dataset(x, n, seed, scale_range=(scale_min, scale_max))


_GENERATORS: dict[str, Callable[..., torch.Tensor]] = {
    "calpha": _gen_calpha,
    "disks": _gen_disks,
    "sinusoids": _gen_sinusoids,
    "rescaled": _gen_rescaled,
    "strokes": _gen_strokes,
}


def _allowed_kwargs(name: str) -> list[str]:
    sig = inspect.signature(_GENERATORS[name])
    return [p for p in sig.parameters if p not in ("n", "size", "seed", "progress", "threads")]


def _check_name(name: str) -> str:
    if name not in _GENERATORS:
        raise ValueError(f"unknown synthetic dataset {name!r}; choose from {SYNTHETIC_NAMES}")
    return name


def synthetic_dataset(name: str, n: int, size: Size = 80, seed: int = 0, progress: bool = False,
                      threads: int | None = 1, **kw) -> torch.Tensor:
    """Generate ``n`` images of a named synthetic dataset: float32 (n, C, H, W) in [0, 1].

    Names and their keyword arguments (defaults in brackets):

    * ``calpha``: alpha [2.0], beta [None = alpha], variant ["code"], contrast [variant default],
      antialias [variant default]. See :func:`calpha_images`.
    * ``disks``: min_radius [3.0]. See :func:`sample_disk_params`, :func:`disk_images`.
    * ``sinusoids``: axis ["x"], max_amplitude [0.5]. See :func:`sinusoid_images`.
    * ``strokes``: max_strokes [3]. Sparse bright anti-aliased curves on black (:func:`stroke_images`).
    * ``rescaled``: base ["calpha": one image of that generator drawn with base_seed; or a
      tensor/array, or a .pt/.png path], base_seed [None = seed], scale_min [0.0],
      scale_max [1.0]. See :func:`rescaled_image_dataset`.

    ``threads``: torch threads while generating (default 1, see :func:`_torch_threads`).
    """
    _check_name(name)
    allowed = _allowed_kwargs(name)
    bad = sorted(set(kw) - set(allowed))
    if bad:
        raise ValueError(f"unknown option(s) {bad} for synthetic dataset {name!r}; allowed: {allowed}")
    with _torch_threads(threads):
        return _GENERATORS[name](_check_n(n), size, seed, progress=progress, threads=threads, **kw)


def iter_synthetic(name: str, n: int, size: Size = 80, seed: int = 0, chunk: int = 64 * BLOCK,
                   threads: int | None = 1, **kw) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start, images)`` chunks equal to ``synthetic_dataset(name, n, ...)[start:...]``.

    For streaming very large datasets to disk with bounded memory (one chunk, ``chunk`` rounded
    down to a multiple of BLOCK). The chunks are identical to slices of the whole dataset
    because each random block is seeded on its own.
    """
    n = _check_n(n)
    chunk = max(BLOCK, (int(chunk) // BLOCK) * BLOCK)
    _check_name(name)
    if name == "calpha":
        opts = dict(kw)
        alpha = _check_exponent("alpha", opts.pop("alpha", 2.0))
        beta = opts.pop("beta", None)
        beta = alpha if beta is None else _check_exponent("beta", beta)
        variant = opts.pop("variant", "code")
        contrast, antialias = _calpha_resolve(variant, opts.pop("contrast", None),
                                              opts.pop("antialias", None))
        if opts:
            raise ValueError(f"unknown option(s) {sorted(opts)} for synthetic dataset 'calpha'")
        h, w = _hw(size)
        buf: list[torch.Tensor] = []
        start = 0
        for lo, hi, rng in _block_rngs(seed, n):
            with _torch_threads(threads):
                buf.append(_calpha_block(rng, hi - lo, h, w, alpha, beta, variant, contrast,
                                         antialias, torch.float32))
            if hi - start >= chunk or hi == n:
                yield start, torch.cat(buf)
                buf, start = [], hi
        return
    # The other generators draw few random numbers per image: draw them all, render per chunk.
    allowed = _allowed_kwargs(name)
    bad = sorted(set(kw) - set(allowed))
    if bad:
        raise ValueError(f"unknown option(s) {bad} for synthetic dataset {name!r}; allowed: {allowed}")
    if name == "disks":
        params = sample_disk_params(n, size, seed, **kw)
        render = lambda lo, hi: disk_images(params[lo:hi], size, threads=threads)  # noqa: E731
    elif name == "strokes":
        params = sample_stroke_params(n, kw.get("max_strokes", 3), seed)
        render = lambda lo, hi: stroke_images(params[lo:hi], size)  # noqa: E731
    elif name == "sinusoids":
        axis = kw.pop("axis", "x")
        params = sample_sinusoid_params(n, seed, **kw)
        render = lambda lo, hi: sinusoid_images(params[lo:hi], size, axis=axis)  # noqa: E731
    else:
        base = _load_base_image(kw.get("base", "calpha"), size,
                                seed if kw.get("base_seed") is None else kw["base_seed"])
        _, scales = rescaled_image_dataset(base, n, seed, (kw.get("scale_min", 0.0),
                                                           kw.get("scale_max", 1.0)), True)
        render = lambda lo, hi: (scales[lo:hi].to(torch.float32)[:, None, None, None]  # noqa: E731
                                 * base[None]).contiguous()
    for lo in range(0, n, chunk):
        with _torch_threads(threads):
            images = render(lo, min(lo + chunk, n))
        yield lo, images


def _parse_value(text: str) -> Any:
    t = text.strip()
    low = t.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    parts = low.split("x")
    if len(parts) == 2 and all(p.isdigit() for p in parts):  # "40x80" -> (40, 80) = (H, W)
        return (int(parts[0]), int(parts[1]))
    return t


def parse_synthetic_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Parse ``"name:key=value,key=value"`` into ``(name, kwargs)``.

    Values become bool (true/false), None (none), int, float, an (H, W) tuple ("40x80") or stay
    strings. Keys are checked against the generator's options plus ``size``, ``n`` and ``seed``,
    e.g. ``parse_synthetic_spec("calpha:alpha=2,size=80") == ("calpha", {"alpha": 2, "size": 80})``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty synthetic spec {spec!r}; expected e.g. 'calpha:alpha=2,size=80'")
    name, _, rest = spec.strip().partition(":")
    name = name.strip().lower()
    _check_name(name)
    allowed = set(_allowed_kwargs(name)) | {"size", "n", "seed"}
    kwargs: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"bad item {item!r} in synthetic spec {spec!r}; expected key=value")
        if key not in allowed:
            raise ValueError(f"unknown option {key!r} for synthetic dataset {name!r} in {spec!r}; "
                             f"allowed: {sorted(allowed)}")
        if key in kwargs:
            raise ValueError(f"option {key!r} given twice in synthetic spec {spec!r}")
        kwargs[key] = _parse_value(value)
    return name, kwargs


@dataclass
class SyntheticConfig:
    """A synthetic dataset, fully specified and JSON-able (dump it next to what it produced)."""

    name: str = "calpha"
    n: int = 1000
    size: int | tuple[int, int] = 80
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        _check_name(self.name)
        _check_n(self.n)
        if not isinstance(self.size, int):
            self.size = tuple(int(s) for s in self.size)
        _hw(self.size)
        bad = sorted(set(self.params) - set(_allowed_kwargs(self.name)))
        if bad:
            raise ValueError(f"unknown option(s) {bad} for synthetic dataset {self.name!r}")

    @classmethod
    def from_spec(cls, spec: str, n: int | None = None, seed: int | None = None,
                  size: Size | None = None) -> "SyntheticConfig":
        """Build from ``"calpha:alpha=2,size=80"``; explicit arguments override the string."""
        name, kw = parse_synthetic_spec(spec)
        spec_n, spec_seed, spec_size = kw.pop("n", 1000), kw.pop("seed", 0), kw.pop("size", 80)
        return cls(name=name, n=int(spec_n if n is None else n),
                   size=spec_size if size is None else size,
                   seed=int(spec_seed if seed is None else seed), params=kw)

    def generate(self, progress: bool = False) -> torch.Tensor:
        return synthetic_dataset(self.name, self.n, self.size, self.seed, progress=progress,
                                 **self.params)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(self.size, tuple):
            d["size"] = list(self.size)
        if not all(isinstance(v, (str, int, float, bool, type(None), list, tuple))
                   for v in self.params.values()):
            raise TypeError("SyntheticConfig.params holds a value that is not JSON-able (pass "
                            "file paths, not tensors, to make the config reproducible)")
        d["params"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SyntheticConfig":
        return cls(name=d["name"], n=int(d["n"]), size=d["size"], seed=int(d["seed"]),
                   params=dict(d.get("params", {})))

    def to_spec(self) -> str:
        """The inverse of :meth:`from_spec` (for JSON-able scalar params)."""
        def fmt(v):
            if isinstance(v, (tuple, list)):
                return "x".join(str(int(s)) for s in v)
            return str(v)

        items = [f"size={fmt(self.size)}", f"n={self.n}", f"seed={self.seed}"]
        items += [f"{k}={fmt(v)}" for k, v in self.params.items()]
        return f"{self.name}:" + ",".join(items)
