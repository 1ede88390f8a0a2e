"""Synthetic-data studies (calpha, manifold, shuffled), their analysis code, and synthetic data specs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from gahb.analysis.optimality import (fit_psnr_slope, optimal_calpha_slope, principal_angles,
                                      random_subspace_mean_cos2, subspace_alignment)
from gahb.studies.common import RESULT_KEYS, rejudge, unsupported_claims


def _finite(obj) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_finite(v) for v in obj)
    return True


def _check_results(out, study: str, n_claims: int) -> dict:
    res = json.loads((out / "results.json").read_text())
    assert set(RESULT_KEYS) <= set(res)
    assert res["study"] == study and res["preset"] == "test"
    assert _finite(res["numbers"])
    assert len(res["claims"]) == n_claims
    assert res["figures"]
    for fig in res["figures"]:
        path = out / fig["path"]
        assert path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
    # every judged row names its reference or its uncertainty, and the claims are re-judged from the
    # results file alone
    assert unsupported_claims(res["claims"]) == []
    assert rejudge(study, res) == res["claims"]
    return res


# -- slope fitting and principal angles -----------------------------------------------------------
def test_fit_psnr_slope_recovers_known_slope_inside_window_only():
    x = np.arange(0, 42, 2.0)
    y = 0.7 * x + 3.0
    y[x < 10] = 5.0 + 0.95 * x[x < 10]  # other regimes outside the window must not leak into the fit
    y[x > 30] = y[x <= 30][-1]
    fit = fit_psnr_slope(x, y, (10, 30))
    assert fit["slope"] == pytest.approx(0.7, abs=1e-12)
    assert fit["intercept"] == pytest.approx(3.0, abs=1e-10)
    assert fit["n_points"] == 11 and fit["r2"] == pytest.approx(1.0)
    assert fit_psnr_slope(x, y)["slope"] < 0.65  # the whole curve is not a line of slope 0.7
    noisy = y + np.random.default_rng(0).normal(0, 0.05, y.shape)
    assert fit_psnr_slope(x, noisy, (10, 30))["slope"] == pytest.approx(0.7, abs=0.02)
    with pytest.raises(ValueError, match="fewer than two"):
        fit_psnr_slope(x, y, (11, 11.5))
    assert optimal_calpha_slope(1) == 0.5 and optimal_calpha_slope(5) == pytest.approx(5 / 6)


def test_principal_angles_known_answers():
    th = 0.3
    a = np.array([[1.0, 0, 0], [0, 1, 0]]).T  # the xy-plane
    b = np.array([[1.0, 0, 0], [0, math.cos(th), math.sin(th)]]).T  # tilted by th about the x-axis
    np.testing.assert_allclose(principal_angles(a, b), [0.0, th], atol=1e-12)
    # span, not columns: a scaled and mixed basis of the same plane gives zero angles
    np.testing.assert_allclose(principal_angles(a, a @ np.array([[2.0, 1.0], [0.0, 3.0]])), [0, 0], atol=1e-7)
    assert subspace_alignment(a, np.array([[0, 0, 1.0]]).T)["mean_cos2"] == pytest.approx(0.0, abs=1e-24)
    rng = np.random.default_rng(0)
    d, p = 400, 5
    vals = [subspace_alignment(rng.standard_normal((d, p)), rng.standard_normal((d, p)))["mean_cos2"]
            for _ in range(20)]
    assert np.mean(vals) == pytest.approx(random_subspace_mean_cos2(d, p, p), rel=0.25)


class _Projection(nn.Module):
    """A linear 'denoiser' y -> P y with P the orthogonal projection onto span(Q)."""

    def __init__(self, q: torch.Tensor, shape):
        super().__init__()
        self.register_buffer("P", q @ q.T)
        self.shape = tuple(shape)

    def forward(self, y):
        flat = y.reshape(y.shape[0], -1)
        return (flat @ self.P.to(flat.dtype)).reshape(y.shape)


@pytest.mark.parametrize("dense", [True, False])
def test_manifold_analysis_on_a_known_projection(dense):
    from gahb.studies.manifold import analyze_tangent

    shape = (1, 8, 8)
    d = 64
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(d, 5, generator=g, dtype=torch.float64))
    model = _Projection(q, shape).eval()
    x = torch.rand(shape, generator=g)
    mixed = q @ torch.randn(5, 5, generator=g, dtype=torch.float64)  # the same span, not orthonormal
    res = analyze_tangent(model, x, mixed, 0.04, top_k=8, dense_max=4096 if dense else 0)["numbers"]
    ev = np.asarray(res["eigenvalues"])
    np.testing.assert_allclose(ev[:5], 1.0, atol=1e-5)
    np.testing.assert_allclose(ev[5:], 0.0, atol=1e-5)
    assert res["method"] == ("dense" if dense else "topk")
    np.testing.assert_allclose(res["principal_angles_deg"], 0.0, atol=0.05)
    assert res["mean_cos2"] == pytest.approx(1.0, abs=1e-6)
    assert res["effective_dimension"] == pytest.approx(5.0, abs=1e-4 if dense else 3.0)
    # A tangent space orthogonal to the projection's range must be reported as such.
    comp = torch.linalg.qr(torch.cat([q, torch.randn(d, 5, generator=g, dtype=torch.float64)], 1))[0][:, 5:]
    res2 = analyze_tangent(model, x, comp, 0.04, top_k=8, dense_max=4096 if dense else 0)["numbers"]
    assert res2["mean_cos2"] < 1e-6


# -- synthetic datasets in the data interface -------------------------------------------------------
def test_synthetic_specs_in_load_split():
    from gahb.data import load_split
    from gahb.data.synthetic import calpha_images

    a = load_split("synthetic:calpha:alpha=2,size=16", n=20, n_test=5, progress=False)
    b = load_split("synthetic:calpha?alpha=2&size=16", n=30, n_test=5, progress=False)
    assert a.train.shape == (20, 1, 16, 16) and a.test.shape == (5, 1, 16, 16)
    assert torch.equal(a.train, b.train[:20]) and torch.equal(a.test, b.test)  # prefixes; both forms agree
    assert torch.equal(a.train, calpha_images(20, 16, alpha=2, seed=1))  # stream 3*seed + 1
    s2 = load_split("synthetic:calpha:alpha=2", n=20, size=16, subset="s2", n_test=5, progress=False)
    assert not torch.equal(s2.train, a.train) and torch.equal(s2.test, a.test)
    assert not torch.equal(load_split("synthetic:calpha:alpha=2,size=16", n=20, n_test=5, seed=1).train, a.train)
    assert a.info["synthetic"] == "calpha" and a.info["params"] == {"alpha": 2}
    with pytest.raises(ValueError, match="size"):
        load_split("synthetic:disks:size=16", n=4, size=32)
    with pytest.raises(ValueError, match="data-seed"):
        load_split("synthetic:disks:seed=3", n=4)
    with pytest.raises(ValueError, match="unknown"):
        load_split("synthetic:squares", n=4)


def test_gahb_train_on_a_synthetic_dataset(tmp_path):
    from gahb.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--dataset", "synthetic:disks:size=16", "--n", "32", "--n-test", "8",
               "--model-preset", "unet-tiny", "--preset", "quick", "--steps", "2", "--eval-images", "4",
               "--threads", "1", "--no-progress", "--out", str(out)])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data"]["synthetic"] == "disks" and cfg["data"]["image_shape"] == [1, 16, 16]


# -- the studies end to end (test presets) ----------------------------------------------------------
def test_calpha_study_cli_end_to_end_and_reuse(tmp_path, capsys):
    from gahb.cli import main

    out = tmp_path / "calpha"
    argv = ["study", "calpha", "--preset", "test", "--threads", "1", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    res = _check_results(out, "calpha", 2)
    table = res["numbers"]["table"]
    assert [r["alpha"] for r in table] == [1.0, 5.0]
    assert [r["optimal_slope"] for r in table] == [0.5, pytest.approx(5 / 6, abs=1e-4)]
    per = res["numbers"]["per_alpha"]["1"]
    refit = fit_psnr_slope(per["curve"]["input_psnr"], per["curve"]["output_psnr"], res["config"]["fit_window"])
    assert refit["slope"] == pytest.approx(per["slope"])
    # the interval's point estimate is the same slope (the slope of the mean of the per-image curves)
    assert per["slope_interval"]["estimate"] == pytest.approx(per["slope"], abs=1e-9)
    assert per["slope_interval"]["lo"] <= per["slope"] <= per["slope_interval"]["hi"]
    assert (out / "runs" / "alpha1" / "model.safetensors").is_file()
    # Rerunning reuses the finished runs and measures the same numbers.
    assert main(argv) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["numbers"]["table"] == table
    # The reuse is cheap, but the recorded compute still counts the training it reused.
    first, second = res["numbers"]["compute_s"], again["numbers"]["compute_s"]
    train_s = sum(json.loads((out / "runs" / f"alpha{a}" / "config.json").read_text())["metrics"]["wall_time"]
                  for a in (1, 5))
    assert first["training"] == second["training"] == pytest.approx(train_s, abs=0.1) and train_s > 0
    assert again["numbers"]["timing_s"]["train_alpha1"] < first["training"]
    assert second["total"] == pytest.approx(second["training"] + second["measurement"], abs=0.11)
    assert "PSNR slope, alpha=5" in capsys.readouterr().out


def test_manifold_study_end_to_end(tmp_path):
    from gahb.studies import run_study

    res = run_study("manifold", "test", tmp_path / "m", overrides={"threads": 1}, progress=False)
    _check_results(tmp_path / "m", "manifold", 3)
    n = res["numbers"]
    assert 0.0 <= n["mean_cos2"] <= 1.0 + 1e-9
    assert len(n["per_image"][0]["principal_angles_deg"]) == 5
    assert n["optimal_intercept_db"] == pytest.approx(10 * math.log10(256 / 5))


def test_shuffled_study_end_to_end(tmp_path):
    from gahb.studies import run_study

    out = tmp_path / "s"
    res = run_study("shuffled", "test", out, overrides={"threads": 1, "runs_dir": str(tmp_path / "r")},
                    progress=False)
    _check_results(out, "shuffled", 2)
    assert (tmp_path / "r" / "original" / "model.safetensors").is_file()
    assert (tmp_path / "r" / "shuffled" / "model.safetensors").is_file()
    assert not (out / "runs").exists()
    n = res["numbers"]
    assert len(n["psnr_table"]) == 5
    for row in n["psnr_table"]:  # the paired interval is centred on the difference of the mean curves
        assert row["difference_interval"]["estimate"] == pytest.approx(row["difference"], abs=1e-9)
    cfg = json.loads((tmp_path / "r" / "shuffled" / "config.json").read_text())
    assert cfg["data"]["pixel_shuffle"] == {"shape": [1, 16, 16], "seed": 0}
