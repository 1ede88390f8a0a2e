"""``gahb jacobian`` end to end on tiny checkpoints, and the analysis driver's numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_tiny
from gahb.analysis.adaptive_basis import JacobianAnalysisConfig, analyze_image
from gahb.cli import main
from gahb.models import ModelConfig
from gahb.training.checkpoint import save_release


def _release(path, seed):
    save_release(make_tiny("unet", seed=seed), path, {"model": ModelConfig(arch="unet", num_blocks=2, width=8).to_dict()})
    return path


def _image(size=12):
    x = torch.full((1, size, size), 0.15)
    x[:, 3:9, 4:8] = 0.85
    return x


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("jac")
    from gahb.data import save_image

    save_image(root / "img.png", _image())
    rng = np.random.default_rng(0)
    np.save(root / "pool.npy", rng.random((3, 12, 12)).astype(np.float32))
    return root, _release(root / "small", 0), _release(root / "large", 1)


def test_cli_dense_writes_json_and_figures(runs, capsys):
    root, small, _ = runs
    out = root / "dense"
    rc = main(["jacobian", "--checkpoint", str(small), "--image", str(root / "img.png"), "--sigma", "0.1", "0.3",
               "--svd", "--probes", "16", "--count", "6", "--out", str(out), "--quiet"])
    assert rc == 0
    summary = json.loads((out / "jacobian.json").read_text())
    (entry,) = summary["models"]
    assert summary["config"]["method"] == "dense"
    assert [r["sigma"] for r in entry["results"]] == [0.1, 0.3]
    for r in entry["results"]:
        assert len(r["eigenvalues"]) == 144
        assert np.all(np.diff(r["eigenvalues"]) <= 1e-9)
        assert sum(r["eigenvalues"]) == pytest.approx(r["trace"]["exact"], rel=1e-6)
        ident = r["identities"]
        assert ident["linear"] < 1e-5 and ident["sym_plus_antisym"] < 1e-5 and ident["svd"] < 1e-5
        assert ident["sym_only"] == pytest.approx(ident["antisymmetric_part"], rel=1e-5)
        h = r["trace"]["hutchinson"]
        assert abs(h["value"] - r["trace"]["exact"]) < 5 * h["stderr"]
        d = r["d"]
        # SURE as written in eq. 7 from the stored numbers.
        sure = r["sure"]["mse_sure"]
        assert np.isfinite(sure) and r["mse_true"] > 0
        assert r["oracle"]["optimal"] <= r["oracle"]["threshold_bound"] <= 2 * r["oracle"]["optimal"] + 1e-12
        assert d == 144
    for name in ["eigenvectors_sigma0.1.png", "coefficients_sigma0.3.png", "spectrum.png", "effective_dimension.png"]:
        assert (out / name).stat().st_size > 1000, name
    arrays = np.load(out / "arrays.npz")
    assert arrays["sigma0.1/eigenvectors"].shape == (144, 1, 12, 12)
    assert "tr J" in capsys.readouterr().out


def test_cli_topk_compare_and_dataset(runs, monkeypatch):
    root, small, large = runs
    monkeypatch.setenv("GAHB_CACHE", str(root / "cache"))
    out = root / "topk"
    rc = main(["jacobian", "--checkpoint", str(small), "--compare", str(large), "--labels", "N=1", "N=big",
               "--dataset", f"npy:{root / 'pool.npy'}", "--split", "pool", "--index", "1", "--sigma", "0.2",
               "--method", "topk", "--k", "6", "--exact-trace", "--probes", "16", "--out", str(out), "--quiet"])
    assert rc == 0
    summary = json.loads((out / "jacobian.json").read_text())
    assert [m["label"] for m in summary["models"]] == ["N=1", "N=big"]
    for m in summary["models"]:
        assert m["source"]["pool_row"] == 1
        (r,) = m["results"]
        assert len(r["eigenvalues"]) == 6 and r["lanczos"]["converged"]
        assert r["identities"]["linear"] < 1e-5
        tr = r["trace"]
        assert tr["effective_dimension"] == tr["exact"]
        for key in ("hutchinson", "hutchinson_deflated"):
            assert abs(tr[key]["value"] - tr["exact"]) < 5 * tr[key]["stderr"]
    assert (out / "comparison_sigma0.2.png").stat().st_size > 1000
    assert (out / "compare_spectrum.png").exists()


def test_cli_errors(runs, capsys):
    root, small, _ = runs
    rc = main(["jacobian", "--checkpoint", str(small), "--image", str(root / "missing.png"), "--out", str(root / "e")])
    assert rc == 1 and "does not exist" in capsys.readouterr().err
    rc = main(["jacobian", "--checkpoint", str(small), "--image", str(root / "img.png"), "--sigma", "-1",
               "--out", str(root / "e")])
    assert rc == 1 and "sigmas must be positive" in capsys.readouterr().err
    rc = main(["jacobian", "--checkpoint", str(small), "--image", str(root / "img.png"), "--method", "topk",
               "--k", "500", "--out", str(root / "e")])
    assert rc == 1 and "smaller than the number of pixels" in capsys.readouterr().err


def test_topk_and_dense_analyses_agree():
    model = make_tiny("bfcnn", seed=2)
    x = _image(10)
    dense = analyze_image(model, x, JacobianAnalysisConfig(sigmas=[0.2], method="dense", probes=8))
    top = analyze_image(model, x, JacobianAnalysisConfig(sigmas=[0.2], method="topk", k=8, tol=1e-6, probes=8,
                                                         exact_trace=True))
    rd, rt = dense.results[0], top.results[0]
    assert np.allclose(rt.basis.eigenvalues, rd.basis.eigenvalues[:8], rtol=1e-5)
    assert rt.numbers["trace"]["exact"] == pytest.approx(rd.numbers["trace"]["exact"], rel=1e-5)
    assert rt.numbers["mse_true"] == pytest.approx(rd.numbers["mse_true"])
    # The estimated asymmetry tracks the exact one (64-probe estimate; loose but not vacuous).
    assert rt.numbers["asymmetry"] == pytest.approx(rd.numbers["asymmetry"], rel=0.25)


def test_effective_dimension_curve_matches_dense_trace():
    from gahb.analysis.adaptive_basis import effective_dimension_curve

    model = make_tiny("unet", seed=4)
    x = _image(8)
    exact = effective_dimension_curve(model, x, [0.05, 0.3], exact=True)
    hutch = effective_dimension_curve(model, x, [0.05, 0.3], probes=32)
    dense = analyze_image(model, x, JacobianAnalysisConfig(sigmas=[0.05, 0.3], probes=4))
    for e, h, r in zip(exact, hutch, dense.results):
        assert e["trace"] == pytest.approx(r.numbers["trace"]["exact"], rel=1e-5)
        assert e["mse_sure"] == pytest.approx(r.numbers["sure"]["mse_sure"], rel=1e-5)
        assert abs(h["trace"] - e["trace"]) < 4 * h["trace_stderr"]
