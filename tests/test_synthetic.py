"""Tests of gahb.data.synthetic: determinism, ranges, disk tangent spaces, pixel permutations,
rescalings, sinusoids, spec strings and configs (C^alpha geometry and spectra: test_synthetic_calpha.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gahb.data import synthetic as S


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
