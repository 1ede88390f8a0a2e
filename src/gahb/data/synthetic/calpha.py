"""Geometric C^alpha images (paper section 4, Fig. 4; App. E, Algorithm 2).

Two C^beta regions separated by the graph of a C^alpha contour: white noise filtered by
|k|^-alpha along the columns gives the contour, 2-D white noise filtered by |k|^-beta the two
backgrounds. Two variants: ``"code"`` reproduces the released generator, ``"paper"`` follows
Algorithm 2 (see :func:`calpha_images`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .seeding import Size, _block_rngs, _check_n, _hw, _progress, _torch_threads, _uniform

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
    import scipy.fft as sfft  # scipy's pocketfft is faster than torch.fft here

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
    almost the whole column; clamping to [0, H] makes every contour outside the image
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
    """Geometric C^alpha images (paper App. E, Algorithm 2): two C^beta regions
    separated by the graph of a C^alpha contour.

    Args:
        n: number of images.
        size: image size, int or (H, W). The contour is a function of the column.
        alpha: contour regularity; white noise along the W columns filtered by |k|^-alpha.
        beta: background regularity (2-D filter |k|^-beta); ``None`` means beta = alpha, the
            setting of the released models. Fig. 17 uses alpha in {1.5, 2, 4} with beta = 8.
        seed: random seed (see :mod:`gahb.data.synthetic.seeding` for the seeding contract).
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

    Contours are clamped to the image: a contour above the top makes the column all region 1,
    one below the bottom all region 2. Only rough contours (small alpha) leave the image at all.

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
