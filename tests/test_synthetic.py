"""Tests of gahb.data.synthetic: determinism, ranges, C^alpha geometry and spectra, disk tangent
spaces, pixel permutations, rescalings, sinusoids, spec strings and configs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gahb.data import synthetic as S
from gahb.data.synthetic import calpha

ALPHAS = [0.5, 1.0, 2.0, 3.0, 5.0]
VARIANTS = ["code", "paper"]


# ----------------------------------------------------------------------------------------------
# Every generator: determinism, shape, range


@pytest.mark.parametrize("name,kw", [("calpha", {"alpha": 2.0}), ("calpha", {"alpha": 1.0, "variant": "paper"}),
                                     ("disks", {}), ("sinusoids", {}), ("rescaled", {})])
@pytest.mark.parametrize("size", [32, (24, 40)])
def test_generators_deterministic_sized_and_in_range(name, kw, size):
    a = S.synthetic_dataset(name, 12, size, seed=3, **kw)
    b = S.synthetic_dataset(name, 12, size, seed=3, **kw)
    c = S.synthetic_dataset(name, 12, size, seed=4, **kw)
    h, w = (size, size) if isinstance(size, int) else size
    assert a.shape == (12, 1, h, w) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.isfinite(a).all()
    assert a.min() >= 0 and a.max() <= 1
    # Images of one dataset differ from each other (the seed is not reused per image).
    flat = a.reshape(12, -1)
    assert torch.cdist(flat, flat).add(torch.eye(12) * 1e9).min() > 1e-3


@pytest.mark.parametrize("name", ["calpha", "disks", "sinusoids", "rescaled"])
def test_prefix_property_and_streaming(name):
    n = S.BLOCK + 37  # crosses a random-block boundary
    full = S.synthetic_dataset(name, n, 16, seed=11)
    assert torch.equal(S.synthetic_dataset(name, 5, 16, seed=11), full[:5])
    chunks = list(S.iter_synthetic(name, n, 16, seed=11, chunk=S.BLOCK))
    assert [lo for lo, _ in chunks] == [0, S.BLOCK]
    assert torch.equal(torch.cat([c for _, c in chunks]), full)


def test_calpha_progress_and_parts_agree():
    plain = S.calpha_images(20, 24, alpha=2.0, seed=5, progress=True)
    parts = S.calpha_images(20, 24, alpha=2.0, seed=5, return_parts=True)
    assert torch.equal(plain, parts.images)
    assert S.calpha_images(0, 24).shape == (0, 1, 24, 24)


# ----------------------------------------------------------------------------------------------
# C^alpha: contours stay in the image, mask geometry, contrast, anti-aliasing, spectra


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_calpha_contour_rows_inside_image(alpha, variant):
    h = 40
    c = S.calpha_contours(3000, (h, 48), alpha=alpha, seed=1, variant=variant)
    rows = S.calpha_contour_rows(c, h, variant)
    assert rows.dtype == torch.long and rows.shape == (3000, 48)
    assert rows.min() >= 0 and rows.max() <= h
    if variant == "code":
        raw = torch.round(c * h) + h // 2
        inside = (raw >= 0) & (raw <= h)
        assert torch.equal(rows[inside], raw[inside].long())  # unchanged where no clamping is needed
        if alpha == 0.5:
            # Rough contours do leave the image: the clamp (spec 10.4) is exercised, not vacuous.
            assert (~inside).any()
    else:
        # M = 1[y > C] with pixel-centre heights y_i = (i + 1/2)/H - 1/2.
        y = (torch.arange(h, dtype=torch.float64) + 0.5) / h - 0.5
        mask = (torch.arange(h)[None, :, None] >= rows[:100, None, :])
        assert torch.equal(mask, y[None, :, None] > c[:100, None, :])


@pytest.mark.parametrize("variant", VARIANTS)
def test_calpha_contour_rows_forced_extremes(variant):
    h = 80
    c = torch.tensor([-1e30, -1e6, -3.0, -0.5, -0.4999, 0.0, 0.4999, 0.5, 3.0, 1e6, 1e30,
                      float("inf"), -float("inf"), float("nan")], dtype=torch.float64)
    rows = S.calpha_contour_rows(c, h, variant)
    assert rows.min() >= 0 and rows.max() <= h
    assert rows[0] == 0 and rows[1] == 0 and rows[2] == 0 and rows[12] == 0  # far above: all region 1
    assert rows[8] == h and rows[9] == h and rows[10] == h and rows[11] == h  # far below: all region 2
    finite = rows[:11]
    assert (finite[1:] >= finite[:-1]).all()  # monotone in the contour height
    # Float32 input and 2-D batches are accepted.
    r32 = S.calpha_contour_rows(torch.full((3, 5), 7.0), h, variant)
    assert (r32 == h).all()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_calpha_mask_zero_above_one_below(alpha, variant):
    p = S.calpha_images(64, (30, 36), alpha=alpha, seed=2, variant=variant, return_parts=True)
    i = torch.arange(30)[None, :, None]
    expected = (i >= p.rows[:, None, :]).float()
    assert torch.equal(p.mask, expected)
    # Per column: zeros then ones, switching exactly at the contour row.
    assert (p.mask.diff(dim=1) >= 0).all()
    assert torch.equal(p.mask.sum(dim=1), (30 - p.rows).float())
    # The image is the composition x = b1 M + b2 (1 - M) of the documented parts.
    comp = p.background1 * p.smooth_mask + p.background2 * (1 - p.smooth_mask)
    torch.testing.assert_close(p.images[:, 0], comp.clamp(0, 1).float(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_raw_contours_and_backgrounds_are_those_of_the_images(variant):
    """calpha_contours / calpha_backgrounds (used by the spectral tests) draw the same streams."""
    p = S.calpha_images(S.BLOCK + 3, 20, alpha=1.5, beta=2.5, seed=8, variant=variant,
                        return_parts=True, dtype=torch.float64)
    c = S.calpha_contours(S.BLOCK + 3, 20, alpha=1.5, seed=8, variant=variant)
    torch.testing.assert_close(p.contour, c, atol=1e-12, rtol=0)
    raw = S.calpha_backgrounds(S.BLOCK + 3, 20, beta=2.5, seed=8, variant=variant)

    def unit(x):
        mn, mx = x.amin(dim=(-2, -1), keepdim=True), x.amax(dim=(-2, -1), keepdim=True)
        return (x - mn) / (mx - mn)

    torch.testing.assert_close(unit(p.background1), unit(raw[:, 0]), atol=1e-9, rtol=0)
    torch.testing.assert_close(unit(p.background2), unit(raw[:, 1]), atol=1e-9, rtol=0)


def test_smooth_mask_matches_released_box_filter():
    """The "blurredx2" step: conv with a 2x2 box, reflect padding 1, last row/column cropped."""
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(-5, 30, (50, 20), generator=g).clamp(0, 24)
    mask = calpha._hard_mask(rows, 24, torch.float64)
    padded = F.pad(mask[:, None], (1, 1, 1, 1), mode="reflect")
    ref = F.conv2d(padded, torch.full((1, 1, 2, 2), 0.25, dtype=torch.float64))[:, 0, :-1, :-1]
    torch.testing.assert_close(S.smooth_mask_2x2(mask), ref, atol=0, rtol=0)
    torch.testing.assert_close(calpha._smooth_mask_from_rows(rows, 24, torch.float64), ref, atol=0, rtol=0)
    # The generator uses it for the code variant, not for the paper variant.
    p = S.calpha_images(8, 24, alpha=2.0, seed=1, return_parts=True)
    torch.testing.assert_close(p.smooth_mask, S.smooth_mask_2x2(p.mask))
    q = S.calpha_images(8, 24, alpha=2.0, seed=1, variant="paper", return_parts=True)
    assert torch.equal(q.smooth_mask, q.mask)


def test_calpha_random_contrast_rescaling():
    n = 600
    p = S.calpha_images(n, 24, alpha=2.0, seed=7, return_parts=True)
    b1, b2 = p.background1, p.background2
    mx1, mn1 = b1.amax(dim=(1, 2)), b1.amin(dim=(1, 2))
    mx2, mn2 = b2.amax(dim=(1, 2)), b2.amin(dim=(1, 2))
    first_bright = (mx1 - 1).abs() < 1e-5
    second_bright = (mx2 - 1).abs() < 1e-5
    # Exactly one region is the bright one ([a, 1]) and the other the dark one ([0, b]).
    assert torch.equal(first_bright, ~second_bright)
    assert (mn2[first_bright].abs() < 1e-5).all() and (mn1[second_bright].abs() < 1e-5).all()
    # a and b are U(0, 1): their means are 1/2, and the side is a fair coin.
    a = torch.where(first_bright, mn1, mn2)
    b = torch.where(first_bright, mx2, mx1)
    assert abs(a.mean().item() - 0.5) < 0.05 and abs(b.mean().item() - 0.5) < 0.05
    assert abs(first_bright.float().mean().item() - 0.5) < 0.08  # ~4 standard deviations


@pytest.mark.parametrize("variant", VARIANTS)
def test_calpha_contour_variance_known_answer(variant):
    """Var C = (1 / (3 W)) sum_k filt(k)^2 (half-width)^2 for U[-hw, hw] noise filtered by filt."""
    w, alpha = 64, 1.0
    c = S.calpha_contours(6000, (32, w), alpha=alpha, seed=3, variant=variant)
    k = torch.fft.fftfreq(w, dtype=torch.float64).abs() * w
    filt = torch.where(k > 0, k.clamp_min(1).pow(-alpha), torch.ones_like(k))
    half = 1.0 if variant == "code" else 0.5
    var = half**2 / 3 * filt.pow(2).sum().item() / w
    assert abs(c.var().item() / var - 1) < 0.05


def _radial_slope(images: torch.Tensor, kmin: float, kmax: float) -> float:
    """Log-log slope of the radially averaged power spectrum of (N, H, W) images.

    Per-frequency powers are averaged over images, then log power and log |k| are averaged over
    rings of integer radius; a pure power law lies exactly on a line in these coordinates.
    """
    n, h, w = images.shape
    x = images - images.mean(dim=(1, 2), keepdim=True)
    power = torch.fft.fft2(x).abs().pow(2).mean(0)
    ky = torch.fft.fftfreq(h, dtype=torch.float64)[:, None] * h
    kx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :] * w
    k = torch.sqrt(ky**2 + kx**2)
    ring = torch.round(k)
    xs, ys = [], []
    for r in range(int(kmin), int(kmax) + 1):
        sel = (ring == r) & (k > 0)
        xs.append(k[sel].log().mean().item())
        ys.append(power[sel].log().mean().item())
    return float(np.polyfit(xs, ys, 1)[0])


@pytest.mark.parametrize("beta", [1.0, 2.0, 3.0, 5.0])
def test_calpha_background_power_spectrum_slope(beta):
    """Background power ~ |k|^(-2 beta): slope within 0.15 of -2 beta (+-1 in beta is +-2)."""
    bg = S.calpha_backgrounds(32, 48, beta=beta, seed=0, dtype=torch.float64).reshape(-1, 48, 48)
    slope = _radial_slope(bg, 2, 20)
    assert abs(slope + 2 * beta) < 0.15, slope
    # The check can fail: it rejects the slope of a background one step more/less regular.
    for wrong in (beta - 1, beta + 1):
        assert abs(slope + 2 * wrong) > 1.5


def test_calpha_separate_beta_and_rescaled_backgrounds_keep_slope():
    # Fig. 17 setting alpha = 1.5, beta = 8 would need float64; the rescaled backgrounds of the
    # float32 generator keep their slope over the usable range for beta = 3 != alpha.
    p = S.calpha_images(32, 48, alpha=1.5, beta=3.0, seed=4, return_parts=True)
    slope = _radial_slope(torch.cat([p.background1, p.background2]).double(), 2, 12)
    assert abs(slope + 6.0) < 0.2, slope
    q = S.calpha_images(4, 48, alpha=1.5, seed=4, return_parts=True)  # beta defaults to alpha
    r = S.calpha_images(4, 48, alpha=1.5, beta=1.5, seed=4, return_parts=True)
    assert torch.equal(q.images, r.images)


@pytest.mark.parametrize("alpha", [1.0, 3.0])
def test_calpha_contour_spectrum_slope(alpha):
    c = S.calpha_contours(2000, (32, 64), alpha=alpha, seed=5)
    power = torch.fft.rfft(c).abs().pow(2).mean(0)[1:31]
    k = torch.arange(1, 31, dtype=torch.float64)
    slope = np.polyfit(k.log().numpy(), power.log().numpy(), 1)[0]
    assert abs(slope + 2 * alpha) < 0.15, slope


def test_calpha_rejects_bad_arguments():
    with pytest.raises(ValueError, match="variant"):
        S.calpha_images(2, 16, variant="bogus")
    with pytest.raises(ValueError, match="alpha"):
        S.calpha_images(2, 16, alpha=-1)
    with pytest.raises(ValueError, match="contrast"):
        S.calpha_images(2, 16, contrast="x")
    with pytest.raises(ValueError, match="size"):
        S.calpha_images(2, (16, 16, 3))
    with pytest.raises(ValueError, match="seed"):
        S.calpha_images(2, 16, seed=-1)


# ----------------------------------------------------------------------------------------------
# Disks


def test_disk_params_ranges():
    p = S.sample_disk_params(4000, 80, seed=0)
    cx, cy, r, fg, bg = p.T
    assert p.dtype == torch.float64 and p.shape == (4000, 5)
    assert r.min() >= 3 and r.max() < 38 and r.max() > 36 and r.min() < 3.1
    assert (cx >= r).all() and (cx <= 80 - r).all() and (cy >= r).all() and (cy <= 80 - r).all()
    assert fg.min() >= 0 and fg.max() < 1 and bg.min() >= 0 and bg.max() < 1
    rect = S.sample_disk_params(500, (40, 64), seed=0)
    assert (rect[:, 2] < (40 - 3) // 2).all() and (rect[:, 0] <= 64 - rect[:, 2]).all()
    assert (rect[:, 1] <= 40 - rect[:, 2]).all()


@pytest.mark.parametrize("r", [3.0, 5.3, 11.7, 20.25])
def test_disk_area_and_intensities(r):
    size, n = 64, 100
    g = torch.Generator().manual_seed(int(r * 100))
    centres = 24 + 16 * torch.rand(n, 2, generator=g, dtype=torch.float64)
    params = torch.cat([centres, torch.full((n, 1), r), torch.ones(n, 1), torch.zeros(n, 1)], 1)
    ind = S.disk_images(params, size, dtype=torch.float64)[:, 0]
    # Sum of the anti-aliased indicator ~ pi r^2. The edge profile is odd-symmetric, which leaves
    # a curvature term 2 pi int u (phi(-u) - 1[u < 0]) du = pi / 20 for the smoothstep, plus a
    # lattice error of zero mean over random centres (std < 0.6 px here). A half-pixel shift of
    # the edge would add pi r >= 9.4.
    err = ind.sum(dim=(1, 2)) - math.pi * r * r
    assert (err.abs() < 1.5).all(), err
    assert abs(err.mean().item() - math.pi / 20) < 0.15, err.mean()
    # Exact intensities away from the one-pixel edge; values between bg and fg everywhere.
    fg, bg = 0.8, 0.3
    params, n = params[:8], 8
    params[:, 3], params[:, 4] = fg, bg
    img = S.disk_images(params, size, dtype=torch.float64)[:, 0]
    x = torch.arange(size, dtype=torch.float64) + 0.5
    rho = torch.sqrt((x[None, None, :] - params[:, 0, None, None]) ** 2
                     + (x[None, :, None] - params[:, 1, None, None]) ** 2)
    assert torch.equal(img[rho <= r - 0.5], torch.full_like(img[rho <= r - 0.5], fg))
    assert torch.equal(img[rho >= r + 0.5], torch.full_like(img[rho >= r + 0.5], bg))
    assert img.min() >= bg and img.max() <= fg
    assert (img[(rho > r - 0.5) & (rho < r + 0.5)] < fg).all()


def test_disk_images_float32_matches_float64():
    p = S.sample_disk_params(10, 40, seed=1)
    a = S.disk_images(p, 40)
    b = S.disk_images(p, 40, dtype=torch.float64)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a.double(), b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_disk_tangent_analytic_matches_fd_and_autograd(seed):
    p = S.sample_disk_params(1, 48, seed=seed)[0]
    p[3], p[4] = 0.9, 0.2  # clear contrast so the geometric directions are well conditioned
    ta = S.disk_tangent_space(p, 48, method="analytic")
    tf = S.disk_tangent_space(p, 48, method="fd", step=1e-4)
    tg = S.disk_tangent_space(p, 48, method="autograd")
    for other in (tf, tg):
        rel = (ta.derivatives - other.derivatives).norm(dim=0) / ta.derivatives.norm(dim=0)
        assert (rel < 1e-3).all(), rel
        torch.testing.assert_close(ta.basis, other.basis, atol=1e-3, rtol=0)
    q, jac = ta
    assert q.shape == (48 * 48, 5) and jac.shape == (48 * 48, 5)
    torch.testing.assert_close(q.T @ q, torch.eye(5, dtype=torch.float64), atol=1e-10, rtol=0)
    # Same span as the derivatives, and Gram-Schmidt order: column k only uses derivatives <= k.
    torch.testing.assert_close(q @ (q.T @ jac), jac, atol=1e-10, rtol=0)
    assert ((q * jac).sum(0) > 0).all()
    # A fg step really moves the image along the fg derivative (known answer: d x / d fg = phi).
    torch.testing.assert_close(jac[:, 3] + jac[:, 4], torch.ones(48 * 48, dtype=torch.float64))


def test_disk_tangent_coarse_fd_is_close():
    p = torch.tensor([20.3, 17.6, 9.4, 0.7, 0.1], dtype=torch.float64)
    ta = S.disk_tangent_space(p, 40)
    tf = S.disk_tangent_space(p, 40, method="fd", step=1e-2)
    rel = (ta.derivatives - tf.derivatives).norm(dim=0) / ta.derivatives.norm(dim=0)
    assert (rel < 1e-2).all(), rel


def test_disk_tangent_degenerate_and_bad_input():
    with pytest.raises(ValueError, match="degenerate"):
        S.disk_tangent_space([20.0, 20.0, 8.0, 0.5, 0.5], 40)
    with pytest.raises(ValueError, match="single disk"):
        S.disk_tangent_space(torch.zeros(2, 5) + 10, 40)
    with pytest.raises(ValueError, match="method"):
        S.disk_tangent_space([20.0, 20.0, 8.0, 0.9, 0.1], 40, method="magic")
    with pytest.raises(ValueError, match="shape"):
        S.disk_images(torch.zeros(3, 4), 40)
    with pytest.raises(ValueError, match="radii"):
        S.disk_images([[20.0, 20.0, -1.0, 0.9, 0.1]], 40)


# ----------------------------------------------------------------------------------------------
# Pixel permutation


def test_pixel_shuffle_is_a_fixed_invertible_permutation():
    x = torch.rand(6, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    ps = S.PixelShuffle((3, 12, 10), seed=5)
    assert torch.equal(torch.sort(ps.perm).values, torch.arange(120))
    y = ps.apply(x)
    assert torch.equal(ps.invert(y), x) and torch.equal(ps.apply(ps.invert(x)), x)
    assert not torch.equal(y, x)
    # Fixed by the seed; a different seed gives a different permutation.
    assert torch.equal(S.PixelShuffle((12, 10), seed=5).apply(x), y)
    assert not torch.equal(S.PixelShuffle((12, 10), seed=6).apply(x), y)
    # The same permutation for every image and channel; a known answer on an index image.
    assert torch.equal(ps.apply(x[2:3]), y[2:3])
    idx = torch.arange(120).reshape(12, 10)
    assert torch.equal(ps.apply(idx).reshape(-1), ps.perm)
    assert torch.equal(y[:, 0].reshape(6, -1), x[:, 0].reshape(6, -1)[:, ps.perm])
    assert torch.equal(y[:, 2].reshape(6, -1), x[:, 2].reshape(6, -1)[:, ps.perm])
    # Pixel values are moved, not changed: the multiset of values per image is preserved.
    assert torch.equal(y.reshape(6, -1).sort(1).values, x.reshape(6, -1).sort(1).values)
    # numpy arrays, JSON round trip, shape errors.
    xn = x.numpy()
    assert np.array_equal(ps.invert(ps.apply(xn)), xn)
    assert np.array_equal(ps.apply(xn), y.numpy())
    ps2 = S.PixelShuffle.from_dict(json.loads(json.dumps(ps.to_dict())))
    assert torch.equal(ps2.perm, ps.perm)
    with pytest.raises(ValueError, match="end in"):
        ps.apply(torch.zeros(2, 12, 11))


# ----------------------------------------------------------------------------------------------
# Rescalings and sinusoids


def test_rescaled_images_are_positive_multiples():
    base = S.calpha_images(1, 20, alpha=2.0, seed=1)[0]
    imgs, s = S.rescaled_image_dataset(base, 500, seed=2, return_scales=True)
    assert imgs.shape == (500, 1, 20, 20)
    assert (s > 0).all() and (s <= 1).all() and s.min() < 0.01 and s.max() > 0.99
    assert torch.equal(imgs, s.float()[:, None, None, None] * base[None])
    # Every image is a positive multiple of the base: unit cosine with it and norm ratio s.
    flat, b = imgs.reshape(500, -1).double(), base.reshape(-1).double()
    cos = flat @ b / (flat.norm(dim=1) * b.norm())
    torch.testing.assert_close(cos, torch.ones(500, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(flat.norm(dim=1) / b.norm(), s, atol=1e-6, rtol=0)
    lo_hi = S.rescaled_image_dataset(base, 200, seed=2, scale_range=(0.5, 0.75), return_scales=True)[1]
    assert lo_hi.min() > 0.5 and lo_hi.max() <= 0.75
    with pytest.raises(ValueError, match="scale_range"):
        S.rescaled_image_dataset(base, 3, scale_range=(-1, 1))
    # Dataset entry point with an explicit tensor base and with a .pt file base.
    t = S.synthetic_dataset("rescaled", 4, 20, seed=2, base=base)
    assert torch.equal(t, imgs[:4])


def test_rescaled_from_file(tmp_path):
    base = S.disk_images([[10.0, 12.0, 5.0, 0.9, 0.2]], 24)[0]
    torch.save(base[None], tmp_path / "one.pt")
    out = S.synthetic_dataset("rescaled", 3, 24, seed=0, base=str(tmp_path / "one.pt"))
    s = out.reshape(3, -1)[:, 0] / base.reshape(-1)[0]
    torch.testing.assert_close(out, s[:, None, None, None] * base[None])
    with pytest.raises(ValueError, match="size"):
        S.synthetic_dataset("rescaled", 3, 32, seed=0, base=str(tmp_path / "one.pt"))
    with pytest.raises(FileNotFoundError):
        S.synthetic_dataset("rescaled", 3, 24, seed=0, base=str(tmp_path / "missing.pt"))


@pytest.mark.parametrize("axis", ["x", "y"])
def test_sinusoids_have_unit_frequency(axis):
    h, w = 24, 40
    params = S.sample_sinusoid_params(50, seed=3)
    imgs = S.sinusoid_images(params, (h, w), axis=axis)[:, 0].double()
    spec = torch.fft.fft2(imgs - 0.5).abs()
    peak = torch.zeros(h, w, dtype=torch.bool)
    if axis == "x":
        peak[0, 1] = peak[0, w - 1] = True
        n_axis = w
    else:
        peak[1, 0] = peak[h - 1, 0] = True
        n_axis = h
    # All energy at frequency +-1 along the chosen axis, up to float32 rounding (relative to
    # the energy (H W / 2)^2 of a full-contrast image) ...
    off = spec[:, ~peak].pow(2).sum(1)
    assert (off <= 1e-9 * (h * w / 2) ** 2).all(), off.max()
    big = params[:, 0] > 0.01
    flat = spec.reshape(50, -1)
    flat[:, 0] = 0
    assert peak.reshape(-1)[flat.argmax(1)][big].all()
    # ... and the amplitude is read back from that peak: |X(1)| = A H W / 2.
    amp = spec[:, peak][:, 0] / (h * w / 2)
    torch.testing.assert_close(amp, params[:, 0], atol=1e-5, rtol=0)
    assert params[:, 0].max() <= 0.5 and params[:, 1].min() >= 0 and params[:, 1].max() < 2 * math.pi
    assert n_axis > 1


# ----------------------------------------------------------------------------------------------
# Entry point, spec strings, configs


def test_parse_synthetic_spec():
    assert S.parse_synthetic_spec("calpha:alpha=2,size=80") == ("calpha", {"alpha": 2, "size": 80})
    name, kw = S.parse_synthetic_spec(" calpha : alpha=1.5, beta=8, variant=paper, antialias=false ")
    assert name == "calpha"
    assert kw == {"alpha": 1.5, "beta": 8, "variant": "paper", "antialias": False}
    assert S.parse_synthetic_spec("disks:size=40x64,n=10,seed=3") == ("disks", {"size": (40, 64), "n": 10, "seed": 3})
    assert S.parse_synthetic_spec("sinusoids") == ("sinusoids", {})
    assert S.parse_synthetic_spec("calpha:beta=none")[1] == {"beta": None}
    for bad, msg in [("faces:alpha=2", "unknown synthetic"), ("calpha:radius=2", "unknown option"),
                     ("calpha:alpha", "key=value"), ("calpha:alpha=1,alpha=2", "twice"), ("", "empty")]:
        with pytest.raises(ValueError, match=msg):
            S.parse_synthetic_spec(bad)


def test_synthetic_config_json_round_trip():
    cfg = S.SyntheticConfig.from_spec("calpha:alpha=3,beta=8,size=24x32", n=6, seed=9)
    assert (cfg.name, cfg.n, cfg.size, cfg.seed) == ("calpha", 6, (24, 32), 9)
    d = json.loads(json.dumps(cfg.to_dict()))
    again = S.SyntheticConfig.from_dict(d)
    assert again == cfg
    x = again.generate()
    assert torch.equal(x, S.calpha_images(6, (24, 32), alpha=3, beta=8, seed=9))
    assert S.SyntheticConfig.from_spec(cfg.to_spec()) == cfg
    with pytest.raises(ValueError, match="unknown option"):
        S.SyntheticConfig(name="disks", params={"alpha": 2})
    with pytest.raises(ValueError, match="unknown option"):
        S.synthetic_dataset("disks", 2, 16, seed=0, alpha=2)
    with pytest.raises(TypeError, match="JSON"):
        S.SyntheticConfig(name="rescaled", params={"base": torch.zeros(16, 16)}).to_dict()


def test_thread_setting_is_restored_and_irrelevant_to_results():
    before = torch.get_num_threads()
    a = S.synthetic_dataset("calpha", 6, 24, seed=1)  # threads=1 by default
    assert torch.get_num_threads() == before
    b = S.calpha_images(6, 24, seed=1, threads=None)
    c = S.disk_images(S.sample_disk_params(6, 24, seed=1), 24, threads=2)
    assert torch.get_num_threads() == before
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert torch.equal(c, S.synthetic_dataset("disks", 6, 24, seed=1, threads=None))
    with pytest.raises(ValueError, match="threads"):
        S.calpha_images(2, 16, threads=0)
