"""Memorization analysis (paper section 6; spec 6.1-6.3, 11.1): exact neighbours, Fig 2 similarities,
denoising curves, distance to the empirical denoiser, patch collages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gahb.analysis import memorization as mem


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
    c = paired_cosine_vals = mem.paired_cosine(a, b)
    torch.testing.assert_close(c, torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    e = torch.zeros(2, 1, 2, 2)
    e[0, 0, 0, 0] = 1.0
    e[1, 0, 1, 1] = 1.0
    assert mem.paired_cosine(e[:1], e[1:]).item() == 0.0  # orthogonal
    # Centering: an affine copy a + const is not a scaled copy, but has centred cosine 1.
    assert mem.paired_cosine(a[:1], a[:1] + 0.5).item() < 1 - 1e-4
    torch.testing.assert_close(mem.paired_cosine(a[:1], a[:1] + 0.5, center=True),
                               torch.ones(1, dtype=torch.float64))
    assert paired_cosine_vals.dtype == torch.float64
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
    fig = mem.similarity_histograms_figure(per_n, bins=20, path=tmp_path / "fig2.png")
    assert (tmp_path / "fig2.png").stat().st_size > 1000
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2 and axes[0].get_xlim() == (0.0, 1.0)
    assert axes[1].get_title() == "N = $10^{3}$"
