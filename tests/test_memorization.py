"""Memorization analysis (paper section 2, Figs 1, 2 and 15): exact neighbours, Fig 2 similarities,
denoising curves, distance to the empirical denoiser, patch collages, and their figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gahb.analysis import memorization as mem
from gahb.report import memorization_figures as mem_figures


def _brute(q, db, metric, center=False):
    q = q.reshape(q.shape[0], -1).double()
    db = db.reshape(db.shape[0], -1).double()
    if center:
        q = q - q.mean(1, keepdim=True)
        db = db - db.mean(1, keepdim=True)
    if metric == "cosine":
        return (q / q.norm(dim=1, keepdim=True)) @ (db / db.norm(dim=1, keepdim=True)).T
    return -torch.cdist(q, db)  # larger is better


# ------------------------------------------------------------------------------------------------
# 1. nearest neighbours


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("k,chunk", [(1, 7), (3, 7), (5, 64), (4, 1)])
def test_nearest_neighbors_equals_brute_force(metric, center, k, chunk):
    g = torch.Generator().manual_seed(0)
    q = torch.rand(9, 1, 4, 5, generator=g)
    db = torch.rand(40, 1, 4, 5, generator=g)  # 40 rows: chunk 7 does not divide N
    vals, idx = mem.nearest_neighbors(q, db, k=k, metric=metric, center=center, chunk=chunk,
                                      dtype=torch.float64)
    ref = _brute(q, db, metric, center)
    ref_vals, ref_idx = torch.sort(ref, dim=1, descending=True, stable=True)
    assert idx.shape == (9, k) and vals.shape == (9, k)
    assert torch.equal(idx, ref_idx[:, :k])
    expect = ref_vals[:, :k] if metric == "cosine" else -ref_vals[:, :k]
    torch.testing.assert_close(vals, expect, rtol=0, atol=1e-10)


def test_nearest_neighbors_float32_default_close_to_brute_force():
    g = torch.Generator().manual_seed(1)
    q, db = torch.rand(6, 30, generator=g), torch.rand(50, 30, generator=g)
    vals, idx = mem.nearest_neighbors(q, db, k=2, chunk=16)
    ref = _brute(q, db, "cosine")
    torch.testing.assert_close(vals.double(), ref.gather(1, idx), rtol=0, atol=1e-6)
    assert torch.equal(idx[:, 0], ref.argmax(1))


def test_nearest_neighbors_ties_go_to_lower_index_whatever_the_chunk():
    # Scores must tie *exactly* in floating point whatever the summation order: 0/1 vectors with
    # four ones (norm 2, normalised entries 0.5) give exact cosines and exact L2 distances.
    q = torch.zeros(1, 16)
    q[0, :4] = 1.0
    db = torch.zeros(11, 16)
    db[:, 10:14] = 1.0                  # orthogonal rows: cosine 0
    for r in (1, 4, 9):
        db[r] = q[0]                    # copies
    db[6] = db[8] = 2 * q[0]            # scaled copies: same cosine, L2 distance 2
    db[2] = 0.0
    db[2, [0, 1, 4, 5]] = 1.0           # half overlap: cosine 1/2, L2 distance 2
    for chunk in (1, 2, 3, 5, 11, 100):
        for dtype in (torch.float32, torch.float64):
            v, idx = mem.nearest_neighbors(q, db, k=6, chunk=chunk, dtype=dtype)
            assert idx[0].tolist() == [1, 4, 6, 8, 9, 2]
            assert v[0].tolist() == [1, 1, 1, 1, 1, 0.5]
            d, idx = mem.nearest_neighbors(q, db, k=6, metric="l2", chunk=chunk, dtype=dtype)
            assert idx[0].tolist() == [1, 4, 9, 2, 6, 8]
            assert d[0].tolist() == [0, 0, 0, 2, 2, 2]


def test_nearest_neighbors_database_forms_agree():
    g = torch.Generator().manual_seed(3)
    q, db = torch.rand(4, 1, 3, 3, generator=g), torch.rand(23, 1, 3, 3, generator=g)
    ref = mem.nearest_neighbors(q, db, k=3, chunk=5, dtype=torch.float64)

    class FakePool:  # the gahb.data Pool interface: len + get(indices)
        def __len__(self):
            return 23

        def get(self, i):
            return db[torch.as_tensor(i)]

    chunks = [db[:4], db[4:15], db[15:]]
    forms = [db.numpy(), FakePool(), lambda: iter(chunks), chunks]
    for form in forms:
        out = mem.nearest_neighbors(q, form, k=3, chunk=5, dtype=torch.float64)
        assert torch.equal(out[1], ref[1])
        torch.testing.assert_close(out[0], ref[0])


def test_nearest_neighbors_errors():
    q = torch.rand(2, 4)
    with pytest.raises(ValueError, match="metric"):
        mem.nearest_neighbors(q, torch.rand(3, 4), metric="dot")
    with pytest.raises(ValueError, match="holds 3"):
        mem.nearest_neighbors(q, torch.rand(3, 4), k=4)
    with pytest.raises(ValueError, match="values"):
        mem.nearest_neighbors(q, torch.rand(3, 5))
    with pytest.raises(TypeError):
        mem.nearest_neighbors(q, 3.0)


# ------------------------------------------------------------------------------------------------
# 2. Fig 2 similarities


def test_paired_cosine_known_pairs():
    g = torch.Generator().manual_seed(4)
    a = torch.rand(3, 1, 4, 4, generator=g) + 0.1
    b = a.clone()
    b[1] = 3.7 * a[1]          # scaled copy: cosine 1 (no mean removal)
    b[2] = -a[2]               # negated: -1
    c = mem.paired_cosine(a, b)
    torch.testing.assert_close(c, torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    e = torch.zeros(2, 1, 2, 2)
    e[0, 0, 0, 0] = 1.0
    e[1, 0, 1, 1] = 1.0
    assert mem.paired_cosine(e[:1], e[1:]).item() == 0.0  # orthogonal
    # Centering: an affine copy a + const is not a scaled copy, but has centred cosine 1.
    assert mem.paired_cosine(a[:1], a[:1] + 0.5).item() < 1 - 1e-4
    torch.testing.assert_close(mem.paired_cosine(a[:1], a[:1] + 0.5, center=True),
                               torch.ones(1, dtype=torch.float64))
    assert c.dtype == torch.float64
    with pytest.raises(ValueError, match="equal shapes"):
        mem.paired_cosine(a, b[:2])


def test_nearest_train_cosine_finds_the_copy():
    g = torch.Generator().manual_seed(5)
    train = torch.rand(30, 1, 5, 5, generator=g)
    samples = torch.stack([train[7], 2.0 * train[21], torch.rand(1, 5, 5, generator=g)])
    vals, idx = mem.nearest_train_cosine(samples, train, chunk=8)
    assert idx[:2].tolist() == [7, 21]
    torch.testing.assert_close(vals[:2], torch.ones(2), atol=1e-6, rtol=0)
    assert vals[2] < 1 - 1e-3
    ref = _brute(samples, train, "cosine").max(1)
    torch.testing.assert_close(vals.double(), ref.values, atol=1e-6, rtol=0)


def test_summary_statistics_and_histogram():
    v = torch.tensor([0.05, 0.15, 0.5, 0.96, 1.0, -0.2])
    s = mem.summarize_similarities(v, bins=10)
    assert s.n == 6 and sum(s.counts) == 6
    # -0.2 clipped into bin 0 with 0.05; 1.0 in the last bin (closed) with 0.96.
    assert s.counts == [2, 1, 0, 0, 0, 1, 0, 0, 0, 2]
    assert s.bin_edges[0] == 0.0 and s.bin_edges[-1] == 1.0 and len(s.bin_edges) == 11
    assert s.median == pytest.approx(float(np.median(v.numpy())))
    assert s.mean == pytest.approx(float(v.double().mean()))
    assert s.fraction_above["0.95"] == pytest.approx(2 / 6)
    assert s.min == pytest.approx(-0.2) and s.max == 1.0
    m = mem.memorization_summary(paired=v, nearest_train=v[:3], n_train=10, bins=10)
    d = m.to_dict()
    assert d["n_train"] == 10 and d["paired"]["n"] == 6 and d["nearest_train"]["n"] == 3
    import json

    json.dumps(d)  # JSON-able for the study record
    with pytest.raises(ValueError):
        mem.summarize_similarities(torch.tensor([0.5, float("nan")]))
    with pytest.raises(ValueError):
        mem.memorization_summary()


def test_similarity_histograms_figure(tmp_path):
    g = torch.Generator().manual_seed(6)
    per_n = {10: {"paired": torch.rand(20, generator=g) * 0.5, "nearest_train": 0.9 + 0.1 * torch.rand(20, generator=g)},
             1000: mem.memorization_summary(paired=torch.rand(20, generator=g), nearest_train=torch.rand(20, generator=g),
                                             n_train=1000, bins=20)}
    fig = mem_figures.similarity_histograms_figure(per_n, bins=20, path=tmp_path / "fig2.png")
    assert (tmp_path / "fig2.png").stat().st_size > 1000
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2 and axes[0].get_xlim() == (0.0, 1.0)
    assert axes[1].get_title() == "N = $10^{3}$"


# ------------------------------------------------------------------------------------------------
# 3. denoising curves (Fig 1, Fig 15)


class Identity(torch.nn.Module):
    def forward(self, y):
        return y


class ShrinkTo(torch.nn.Module):
    """f(y) = a y + (1 - a) x0: keeps a fraction a of the noise around x0 (slope-1 memorisation)."""

    def __init__(self, x0, a):
        super().__init__()
        self.register_buffer("x0", x0)
        self.a = a

    def forward(self, y):
        return self.a * y + (1 - self.a) * self.x0


class TwoSetShrink(torch.nn.Module):
    """Keeps a fraction a_own of the noise around the image of ``own`` the batch is near, a_other
    around ``other``: a network better on its own training images (batches are whole sets)."""

    def __init__(self, own, other, a_own, a_other):
        super().__init__()
        self.register_buffer("own", own)
        self.register_buffer("other", other)
        self.a_own, self.a_other = a_own, a_other

    def forward(self, y):
        mine = (y - self.own).pow(2).sum() < (y - self.other).pow(2).sum()
        x0, a = (self.own, self.a_own) if mine else (self.other, self.a_other)
        return a * y + (1 - a) * x0


def test_fixed_noise_is_per_image_and_seeded():
    z = mem.fixed_noise((1, 4, 4), range(5), seed=3)
    torch.testing.assert_close(mem.fixed_noise((1, 4, 4), [3, 1], seed=3), z[[3, 1]], rtol=0, atol=0)
    assert not torch.equal(mem.fixed_noise((1, 4, 4), range(5), seed=4), z)
    assert not torch.equal(z[0], z[1])


def test_identity_denoiser_curve_follows_identity_line():
    g = torch.Generator().manual_seed(7)
    images = torch.rand(12, 1, 8, 8, generator=g)
    curve = mem.denoising_curve(Identity(), images, seed=1, batch=5)
    assert curve["input_psnr"] == [float(p) for p in range(0, 43, 3)]
    # f(y) = y: the output PSNR is the realised noisy PSNR, exactly, and close to the nominal one.
    assert curve["output_psnr"] == curve["noisy_psnr"]
    np.testing.assert_allclose(curve["noisy_psnr"], curve["input_psnr"], atol=1.0)
    # Same unit noise at every level: the realised offset from nominal is the same at all levels.
    off = np.asarray(curve["noisy_psnr"]) - np.asarray(curve["input_psnr"])
    np.testing.assert_allclose(off, off[0], atol=1e-4)
    # Batch size does not change the noise.
    again = mem.denoising_curve(Identity(), images, seed=1, batch=12)
    np.testing.assert_allclose(again["output_psnr"], curve["output_psnr"], rtol=0, atol=1e-9)


def test_memorising_denoiser_curves_and_gap():
    from gahb.analysis.empirical import EmpiricalDenoiser

    g = torch.Generator().manual_seed(8)
    x1 = torch.rand(1, 1, 8, 8, generator=g)
    test = torch.rand(6, 1, 8, 8, generator=g)
    emp = EmpiricalDenoiser(x1)  # N = 1: maps everything to x1
    test_curve = mem.denoising_curve(emp, test, seed=0)
    # Test PSNR is flat: PSNR(x1, x_test), whatever the noise (paper Fig 1, N = 1).
    from gahb.analysis.metrics import psnr

    flat = psnr(x1.expand_as(test), test).item()
    np.testing.assert_allclose(test_curve["output_psnr"], flat, atol=1e-4)
    # A memoriser that keeps 10% of the noise around x1: train curve has unit slope, 20 dB above.
    shrink = ShrinkTo(x1, 0.1)
    train_curve = mem.denoising_curve(shrink, x1, seed=0)
    out, noisy = np.asarray(train_curve["output_psnr"]), np.asarray(train_curve["noisy_psnr"])
    np.testing.assert_allclose(out - noisy, 20.0, atol=1e-3)
    np.testing.assert_allclose(np.diff(out), 3.0, atol=1e-3)
    shrink_test = mem.denoising_curve(shrink, test, seed=0)
    gap = mem.psnr_gap(train_curve, shrink_test)
    sel = np.asarray(train_curve["sigma"]) <= 1.0
    assert gap == pytest.approx(float((out - np.asarray(shrink_test["output_psnr"]))[sel].mean()))
    assert gap > 20.0
    # Only levels with sigma <= sigma_max count: 6 dB is sigma = 0.501, so sigma_max 0.6 keeps 6-42 dB.
    assert mem.psnr_gap(train_curve, shrink_test, sigma_max=0.6) == pytest.approx(
        float((out - np.asarray(shrink_test["output_psnr"]))[2:].mean()))
    other = mem.denoising_curve(shrink, test, input_psnrs=[0, 10], seed=0)
    with pytest.raises(ValueError, match="different input PSNRs"):
        mem.psnr_gap(train_curve, other)


def test_denoising_curve_on_network_and_errors(tiny_unet):
    g = torch.Generator().manual_seed(9)
    images = torch.rand(3, 1, 16, 16, generator=g)
    curve = mem.denoising_curve(tiny_unet, images, input_psnrs=[0, 20], batch=2)
    assert np.isfinite(curve["output_psnr"]).all()
    # One image per batch gives the same numbers (per-image noise, per-image PSNR, eval-mode BN).
    ref = mem.denoising_curve(tiny_unet, images, input_psnrs=[0, 20], batch=1)
    np.testing.assert_allclose(curve["output_psnr"], ref["output_psnr"], atol=1e-4)
    assert curve["output_psnr_std"][0] > 0
    tiny_unet.train()
    with pytest.raises(ValueError, match="training mode"):
        mem.denoising_curve(tiny_unet, images)
    tiny_unet.eval()
    with pytest.raises(ValueError, match="N, C, H, W"):
        mem.denoising_curve(tiny_unet, images[0])


def test_curve_figures(tmp_path):
    g = torch.Generator().manual_seed(10)
    images = torch.rand(2, 1, 4, 4, generator=g)
    c = mem.denoising_curve(ShrinkTo(images[:1], 0.5), images, input_psnrs=[0, 3, 6])
    fig = mem_figures.denoising_curves_figure({1: {"train": c, "test": c}, 10: {"test": c}}, path=tmp_path / "fig1.png")
    assert (tmp_path / "fig1.png").stat().st_size > 1000
    assert len([a for a in fig.axes if a.get_visible()]) == 2
    mem_figures.psnr_gap_figure({40: {10: 5.0, 100: 1.0, 1000: -0.1}, 80: {10: 8.0, 100: 3.0}}, path=tmp_path / "fig15.png")
    assert (tmp_path / "fig15.png").stat().st_size > 1000


# ------------------------------------------------------------------------------------------------
# 4. distance to the empirical denoiser


class FixedSigmaEmpirical(torch.nn.Module):
    def __init__(self, train, sigma):
        super().__init__()
        from gahb.analysis.empirical import EmpiricalDenoiser

        self.emp = EmpiricalDenoiser(train)
        self.sigma = sigma

    def forward(self, y):
        return self.emp(y.double(), sigma=self.sigma)


def test_distance_to_empirical_zero_for_itself():
    g = torch.Generator().manual_seed(11)
    train = torch.rand(5, 1, 6, 6, generator=g)
    images = torch.cat([train[:2], torch.rand(2, 1, 6, 6, generator=g)])
    for s in (0.05, 0.3):
        out = mem.distance_to_empirical(FixedSigmaEmpirical(train, s), train, images, [s], batch=3)
        assert out["distance"][0] < 1e-20
        assert out["net_mse"][0] == pytest.approx(out["emp_mse"][0])
        assert out["n_train"] == 5 and out["n_images"] == 4


def test_distance_to_empirical_identity_on_one_image():
    g = torch.Generator().manual_seed(12)
    x1 = torch.rand(1, 1, 6, 6, generator=g)
    sigmas = [0.01, 0.1, 1.0]
    out = mem.distance_to_empirical(Identity(), x1, x1, sigmas, seed=5)
    # f_emp = x1 exactly for N = 1, so ||y - x1||^2 / d = sigma^2 mean(z^2) with the fixed noise z.
    z2 = mem.fixed_noise((1, 6, 6), [0], seed=5).double().pow(2).mean().item()
    np.testing.assert_allclose(out["distance"], [s * s * z2 for s in sigmas], rtol=1e-5)
    np.testing.assert_allclose(out["emp_mse"], 0.0, atol=1e-20)
    np.testing.assert_allclose(out["net_mse"], out["distance"], rtol=1e-6)
    with pytest.raises(ValueError, match="positive"):
        mem.distance_to_empirical(Identity(), x1, x1, [0.0])
    with pytest.raises(ValueError, match="train images"):
        mem.distance_to_empirical(Identity(), x1, torch.rand(1, 1, 5, 5), [0.1])


# ------------------------------------------------------------------------------------------------
# 5. patch collages (section 2)


def test_to_patches_layout():
    from gahb.analysis.patches import to_patches

    x = torch.arange(2 * 1 * 4 * 6, dtype=torch.float32).reshape(2, 1, 4, 6)
    p = to_patches(x, 2)
    assert p.shape == (2, 2, 3, 4)
    torch.testing.assert_close(p[1, 1, 2], x[1, 0, 2:4, 4:6].flatten())
    assert to_patches(torch.zeros(1, 1, 5, 5), 2).shape == (1, 2, 2, 4)  # partial patches dropped
    with pytest.raises(ValueError):
        to_patches(x, 5)


def test_patch_matches_brute_force_and_collage():
    from gahb.analysis.patches import classify_patches, patch_matches, to_patches

    g = torch.Generator().manual_seed(13)
    train = torch.rand(17, 2, 8, 8, generator=g)
    a, b = train[3], train[11]
    collage = a.clone()
    collage[:, :4, 4:] = b[:, :4, 4:]            # top-right patch pasted from image 11
    copy = 0.8 * a + 0.05                        # affine copy: correlation 1 with every patch of a
    novel = torch.rand(2, 8, 8, generator=g)
    flat = torch.full((2, 8, 8), 0.3)
    samples = torch.stack([collage, copy, novel, flat])
    m = patch_matches(samples, train, patch=4, chunk=5, dtype=torch.float64)
    assert m.indices.shape == (4, 2, 2)
    assert m.indices[0].tolist() == [[3, 11], [3, 3]]
    assert m.indices[1].tolist() == [[3, 3], [3, 3]]
    torch.testing.assert_close(m.similarities[:2], torch.ones(2, 2, 2, dtype=torch.float64))
    assert not m.valid[3].any() and m.valid[:3].all()
    # Brute force per location on the novel sample.
    sp, tp = to_patches(samples[2:3].double(), 4)[0], to_patches(train.double(), 4)
    for i in range(2):
        for j in range(2):
            q = sp[i, j] - sp[i, j].mean()
            t = tp[:, i, j] - tp[:, i, j].mean(-1, keepdim=True)
            c = (t @ q) / (t.norm(dim=1) * q.norm())
            assert m.indices[2, i, j].item() == int(c.argmax())
            assert m.similarities[2, i, j].item() == pytest.approx(float(c.max()))
    cls = classify_patches(m)
    assert cls.labels[:2] == ["collage", "copy"] and cls.labels[3] == "flat"
    assert cls.n_sources[:2] == [2, 1] and cls.dominant[:2] == [3, 3]
    assert cls.dominant_fraction[0] == 0.75
    strict = classify_patches(m, min_similarity=0.99)
    assert strict.labels[:3] == ["collage", "copy", "novel"]
    d = strict.to_dict()
    assert d["counts"] == {"copy": 1, "collage": 1, "novel": 1, "flat": 1} and d["fraction_copy"] == 0.25
    # Chunked iterable database gives the same matches.
    m2 = patch_matches(samples, [train[:6], train[6:]], patch=4, dtype=torch.float64)
    assert torch.equal(m2.indices, m.indices)


# ------------------------------------------------------------------------------------------------
# End to end: the memorization regime of Fig 2 with the exact memorising denoiser


def test_fig2_measures_on_empirical_denoisers_memorise():
    from gahb.analysis.empirical import EmpiricalDenoiser
    from gahb.sampling import sample

    g = torch.Generator().manual_seed(14)
    pool = torch.rand(8, 1, 6, 6, generator=g)
    s1, s2 = pool[:4], pool[4:]  # disjoint training sets of size N = 4
    seeds = list(range(6))
    x1 = sample(EmpiricalDenoiser(s1), (1, 6, 6), seeds, config="fast", progress=False).samples
    x2 = sample(EmpiricalDenoiser(s2), (1, 6, 6), seeds, config="fast", progress=False).samples
    near, idx = mem.nearest_train_cosine(x1, s1)
    # Samples of f_emp sit on training images (orange histogram at 1) ...
    assert near.min() > 0.999
    torch.testing.assert_close(x1, s1[idx], atol=1e-3, rtol=0)
    # ... and two memorisers with disjoint sets disagree (blue histogram away from 1).
    paired = mem.paired_cosine(x1, x2)
    cross = mem.nearest_train_cosine(x1, s2)[0]
    assert (paired < 0.999).all() and (paired <= cross.double() + 1e-4).all()
    summary = mem.memorization_summary(paired=paired, nearest_train=near, n_train=4)
    assert summary.nearest_train.median > summary.paired.median


def test_paired_gap_cancels_image_difficulty_and_network_quality():
    """Own network minus the network that never saw the image, on the same images and noise."""
    g = torch.Generator().manual_seed(11)
    s1 = torch.rand(5, 1, 8, 8, generator=g)
    s2 = torch.rand(5, 1, 8, 8, generator=g) * 0.2  # much darker: an unpaired comparison would see this
    # f1 keeps 10% of the noise on S1 and 20% on S2; f2 keeps 20% on S2 and 40% on S1 (a worse net).
    f1, f2 = TwoSetShrink(s1, s2, 0.1, 0.2), TwoSetShrink(s2, s1, 0.2, 0.4)
    curves = {(a, b): mem.denoising_curve(f, x, input_psnrs=[20, 30, 40], seed=0)
              for a, f in (("1", f1), ("2", f2)) for b, x in (("1", s1), ("2", s2))}
    res = mem.paired_psnr_gap(curves["1", "1"], curves["2", "1"], curves["2", "2"], curves["1", "2"])
    # (20 log10(0.4/0.1) + 20 log10(0.2/0.2)) / 2 = 6.02 dB, whatever the images' brightness.
    assert res["gap_db"] == pytest.approx(20 * np.log10(2.0), abs=1e-3)
    assert res["se_db"] == pytest.approx(0.0, abs=1e-3)
    assert len(curves["1", "1"]["image_mean_psnr"]) == 5
    np.testing.assert_allclose(np.mean(curves["1", "1"]["image_mean_psnr"]),
                               np.mean(curves["1", "1"]["output_psnr"]), atol=1e-9)
    assert mem.unpaired_gap_se(curves["1", "1"], curves["1", "2"]) >= 0
    one = {k: dict(c, image_mean_psnr=c["image_mean_psnr"][:1]) for k, c in curves.items()}
    assert mem.paired_psnr_gap(one["1", "1"], one["2", "1"], one["2", "2"], one["1", "2"])["se_db"] is None
    with pytest.raises(ValueError, match="same images"):
        mem.paired_psnr_gap(curves["1", "1"], dict(curves["2", "1"], image_mean_psnr=[30.0, 31.0, 32.0]),
                            curves["2", "2"], curves["1", "2"])
