"""The lab's published denoisers, through gahb (skipped where ../shared/published/ is absent).

The real files must import exactly (bias-free: f(a y) = a f(y); the right residual/clean
convention: denoising raises PSNR), ``gahb evaluate`` must give the numbers of the committed full
Set68 run (``docs/results/published``) on the images it is given, and ``gahb study published`` must
run end to end at its ``test`` preset, reusing that committed run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = Path(os.environ.get("GAHB_PUBLISHED_DIR", REPO.parent / "shared" / "published"))
COMMITTED = REPO / "docs" / "results" / "published"
FILES = {"uip-bfcnn": ("uip-bfcnn", "uip_bf_cnn_bsd400_gray_0to100.pt"),
         "bfd-dncnn-0-100": ("bfd-dncnn", "bfd_dncnn_bias_free_0-100.pt"),
         "bfd-dncnn-0-10": ("bfd-dncnn", "bfd_dncnn_bias_free_0-10.pt")}

pytestmark = pytest.mark.skipif(
    not (PUBLISHED / "weights").is_dir(),
    reason=f"the published checkpoints and test images are not at {PUBLISHED} (set GAHB_PUBLISHED_DIR): "
           "these tests check gahb against them and are skipped without them")


@pytest.fixture(scope="module")
def imported_runs(tmp_path_factory):
    from gahb.models.importers import import_checkpoint

    base = tmp_path_factory.mktemp("published")
    return {key: import_checkpoint(fmt, PUBLISHED / "weights" / f, base / key)[0] for key, (fmt, f) in FILES.items()}


@pytest.mark.parametrize("key", list(FILES))
def test_real_checkpoint_is_bias_free_and_denoises(key, imported_runs):
    from gahb.analysis.metrics import psnr
    from gahb.data import load_image
    from gahb.training.checkpoint import load_denoiser

    torch.set_num_threads(2)
    model, config = load_denoiser(imported_runs[key])
    assert config["imported"]["source_sha256"] and config["imported"]["output_convention"] in ("residual", "clean")
    x = load_image(PUBLISHED / "images" / "Set12" / "01.png")[None]
    y = x + 25 / 255 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fy = model(y)
        crop = y[..., 96:160, 96:160]
        a = 1.7
        hom = (model(a * crop) - a * model(crop)).abs().max() / (a * model(crop)).abs().max()
    assert hom < 1e-5
    # A wrong residual/clean convention returns the noise instead of the image: a large loss.
    gain = float(psnr(fy.clamp(0, 1), x) - psnr(y, x))
    assert gain >= 5.0, gain


@pytest.mark.parametrize("key", ["bfd-dncnn-0-100", "bfd-dncnn-0-10"])
def test_evaluate_matches_the_committed_set68_run(key, imported_runs, tmp_path, capsys):
    from gahb.cli import main

    committed = json.loads((COMMITTED / f"evaluate_{key}_set68.json").read_text())
    out = tmp_path / "ev.json"
    assert main(["evaluate", "--checkpoint", str(imported_runs[key]), "--images", str(PUBLISHED / "images" / "Set68"),
                 "--sigmas", "50", "--limit", "1", "--threads", "2", "--no-progress", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["images"] == ["test001.png"] and got["imported"]["source_sha256"] == committed["imported"]["source_sha256"]
    j = committed["protocol"]["sigmas"].index(50.0)
    ref = committed["per_image"]["test001.png"]
    mine = got["per_image"]["test001.png"]
    assert abs(mine["psnr"][0] - ref["psnr"][j]) < 1e-3 and abs(mine["ssim"][0] - ref["ssim"][j]) < 1e-5
    assert "gahb PSNR" in capsys.readouterr().out


def test_committed_set68_table_is_within_tolerance_of_the_published_one():
    """The committed full run itself (made by the command in its own record) against the published table."""
    from gahb.models.published import PUBLISHED as KNOWN, by_sha256

    for key in ("bfd-dncnn-0-100", "bfd-dncnn-0-10"):
        rec = json.loads((COMMITTED / f"evaluate_{key}_set68.json").read_text())
        pub = by_sha256(rec["imported"]["source_sha256"])
        assert pub is KNOWN[key] and len(rec["images"]) == 68
        assert rec["protocol"]["sigmas"] == [10.0 * k for k in range(1, 11)]
        for row in rec["per_sigma"]:
            assert abs(row["psnr"] - pub.set68_psnr[f"{row['sigma']:g}"]) <= 0.05, (key, row)


def test_published_study_test_preset_reuses_the_committed_run(tmp_path):
    from gahb.studies import get_config
    from gahb.studies.published import run

    cfg = get_config("published", "test", {"weights_dir": str(PUBLISHED / "weights"),
                                           "images_dir": str(PUBLISHED / "images"), "set68_limit": None,
                                           "evaluations_dir": str(COMMITTED), "runs_dir": str(tmp_path / "runs")})
    torch.set_num_threads(2)
    res = run(cfg, tmp_path / "study", progress=False, preset="test")
    set68 = res["numbers"]["set68"]["models"]
    assert all("reused" in m["how"] for m in set68.values())
    by_name = {c["name"]: c for c in res["claims"]}
    assert by_name["BF-DnCNN 0-100 reproduces its published Set68 table"]["passed"] is True
    assert by_name["imported networks are bias-free: f(a y) = a f(y)"]["passed"] is True
    assert by_name["published BF-CNN: f(y) = J(y) y on natural-image crops (eq. 6)"]["passed"] is True
    for fig in res["figures"]:
        assert (tmp_path / "study" / fig["path"]).is_file()
    dense = res["numbers"]["dense"]["per_crop"]
    assert len(dense) == cfg.n_crops and all(0 < r["asymmetry"] < 2 for r in dense)


def test_a_committed_run_is_reused_only_when_everything_matches():
    from dataclasses import replace

    from gahb.analysis.denoising import DenoisingProtocol
    from gahb.studies.published import find_evaluation

    rec = json.loads((COMMITTED / "evaluate_bfd-dncnn-0-100_set68.json").read_text())
    args = (rec["imported"]["source_sha256"], rec["images"], rec["image_sha256"])
    proto = DenoisingProtocol(sigmas=(10, 50))
    assert find_evaluation(str(COMMITTED), *args, proto) is not None
    assert find_evaluation(str(COMMITTED), *args, replace(proto, seed=1)) is None
    assert find_evaluation(str(COMMITTED), *args, replace(proto, clamp=False)) is None
    assert find_evaluation(str(COMMITTED), *args, DenoisingProtocol(sigmas=(15,))) is None
    assert find_evaluation(str(COMMITTED), "0" * 64, *args[1:], proto) is None
    assert find_evaluation(str(COMMITTED), args[0], args[1][:-1], args[2], proto) is None
    assert find_evaluation(str(COMMITTED), args[0], args[1], {**args[2], "test001.png": "x"}, proto) is None
