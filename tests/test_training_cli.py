"""``gahb train`` and ``gahb denoise`` end to end on a tiny prepared dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gahb.cli import main
from gahb.training import TrainConfig, denoise_image, load_denoiser, read_metrics

pytest.importorskip("gahb.data")




@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    d = tmp_path_factory.mktemp("pool")
    g = torch.Generator().manual_seed(0)
    x = F.interpolate(torch.rand(200, 1, 4, 4, generator=g), size=16, mode="bilinear", align_corners=False)
    np.save(d / "pool.npy", x.numpy())
    return d


def _train_argv(pool, out, *extra):
    return ["train", "--dataset", f"npy:{pool / 'pool.npy'}", "--cache-dir", str(pool / "cache"), "--n", "40",
            "--subset", "s2", "--preset", "quick", "--steps", "12", "--batch-size", "8", "--images-per-epoch", "80",
            "--lr", "5e-3", "--arch", "unet", "--blocks", "2", "--width", "8", "--eval-images", "8",
            "--eval-sigmas", "0.05,0.1", "--out", str(out), "--no-progress", *extra]


def test_train_cli_then_denoise_cli(pool, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_train_argv(pool, run)) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["finished"] and summary["step"] == 12 and summary["resumed_from"] is None
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["N"] == 40 and cfg["subset"] == "s2" and cfg["data"]["subset"] == "s2"
    assert cfg["train"]["steps"] == 12 and cfg["train"]["epochs"] is None and cfg["train"]["lr"] == 5e-3
    assert cfg["model"]["width"] == 8 and cfg["model"]["num_blocks"] == 2
    assert TrainConfig.from_dict(cfg["train"]).eval_sigmas == (0.05, 0.1)
    recs = read_metrics(run)
    assert [r["step"] for r in recs] == [0, 10, 12] and set(recs[-1]["test_psnr"]) == {"0.05", "0.1"}

    # Same command again: the finished run is left alone.
    assert main(_train_argv(pool, run)) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["already_finished"] and again["step"] == 12
    # A different setting is refused with a clear message (exit code 1), --fresh starts over.
    assert main(_train_argv(pool, run, "--seed", "3")) == 1
    assert "different configuration" in capsys.readouterr().err
    assert main(_train_argv(pool, run, "--seed", "3", "--fresh")) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["resumed_from"] is None

    # A folder with weights but no training state is not overwritten silently.
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"x")
    assert main(_train_argv(pool, other)) == 1
    assert "no training state" in capsys.readouterr().err

    # Denoise one image.
    from gahb.data import load_image, save_image

    clean = torch.from_numpy(np.load(pool / "pool.npy")[0])
    save_image(tmp_path / "clean.png", clean)
    out = tmp_path / "den.png"
    argv = ["denoise", "--checkpoint", str(run), "--image", str(tmp_path / "clean.png"), "--sigma", "0.1",
            "--seed", "7", "--out", str(out), "--json"]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert out.exists() and (tmp_path / "den_noisy.png").exists()
    assert load_image(out).shape == (1, 16, 16)
    assert abs(res["psnr_in"] - 20.0) < 1.0  # 256 noisy pixels around the nominal 20 dB
    model, _ = load_denoiser(run)
    ref = denoise_image(model, load_image(tmp_path / "clean.png"), 0.1, seed=7)
    assert res["psnr_in"] == pytest.approx(ref["psnr_in"]) and res["psnr_out"] == pytest.approx(ref["psnr_out"])
    assert main(argv[:-1]) == 0
    text = capsys.readouterr().out
    assert "input  PSNR" in text and "output PSNR" in text

    assert main(["denoise", "--checkpoint", str(tmp_path / "nope"), "--image", str(tmp_path / "clean.png"),
                 "--out", str(out)]) == 1
    assert "no weights" in capsys.readouterr().err


def test_train_cli_dry_run_resolves_presets(capsys):
    assert main(["train", "--out", "unused", "--preset", "paper", "--dry-run"]) == 0
    cfg = TrainConfig.from_json(capsys.readouterr().out)
    assert (cfg.batch_size, cfg.epochs, cfg.images_per_epoch, cfg.lr_halve_every) == (512, 1000, 250_000, 100)
    assert cfg.model.num_blocks == 3 and cfg.model.width == 64
    assert main(["train", "--out", "unused", "--preset", "paper", "--model-preset", "unet-small", "--steps", "500",
                 "--lr-halve-every", "0.2", "--lr-halve-unit", "fraction", "--noise", "uniform", "--dry-run"]) == 0
    cfg = TrainConfig.from_json(capsys.readouterr().out)
    assert cfg.steps == 500 and cfg.epochs is None and cfg.model.width == 32 and cfg.noise == "uniform"
    assert cfg.loss_weight == "none"  # the paper's loss unless asked
    assert main(["train", "--out", "unused", "--loss-weight", "eps", "--dry-run"]) == 0
    assert TrainConfig.from_json(capsys.readouterr().out).loss_weight == "eps"
    assert main(["train", "--out", "unused", "--arch", "bfcnn", "--layers", "9", "--dry-run"]) == 0
    cfg = TrainConfig.from_json(capsys.readouterr().out)
    assert cfg.model.arch == "bfcnn" and cfg.model.num_layers == 9
    # channels_last is on unless turned off (a runtime choice: the same maths in another memory layout)
    assert cfg.channels_last is True
    assert main(["train", "--out", "unused", "--no-channels-last", "--dry-run"]) == 0
    assert TrainConfig.from_json(capsys.readouterr().out).channels_last is False


def test_denoise_image_known_answers():
    clean = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0))

    class Oracle(torch.nn.Module):  # returns the clean image: infinite output PSNR (clamped)
        def forward(self, y):
            return clean[None].expand_as(y)

    class Identity(torch.nn.Module):
        def forward(self, y):
            return y

    r = denoise_image(Identity(), clean, 0.1, seed=1)
    assert r["psnr_out"] == pytest.approx(r["psnr_in"]) and torch.equal(r["noisy"], r["denoised"])
    assert abs(r["psnr_in"] - 20.0) < 1.5 and r["psnr_in_nominal"] == pytest.approx(20.0)
    assert denoise_image(Oracle(), clean, 0.1, seed=1)["psnr_out"] > 150
    r2 = denoise_image(Identity(), clean, 0.1, seed=1)
    assert torch.equal(r["noisy"], r2["noisy"])


@pytest.mark.parametrize("bad, message", [(["--epochs", "-1"], "epochs"), (["--lr", "-1"], "lr must be positive"),
                                          (["--batch-size", "0"], "batch_size")])
def test_train_cli_checks_its_settings_before_reading_any_data(bad, message, tmp_path, monkeypatch, capsys):
    import gahb.data

    def no_data(*a, **k):
        raise AssertionError("the dataset was read before the settings were checked")

    monkeypatch.setattr(gahb.data, "load_split", no_data)
    assert main(["train", "--dataset", "fashion-mnist", "--n", "10", "--out", str(tmp_path / "run"), *bad]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
