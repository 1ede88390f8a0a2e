"""The training loop: learning, metrics, release files, resume rules, input checks."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from gahb.models import ModelConfig
from gahb.training import load_denoiser, load_state, make_config, read_metrics, train
from gahb.training.checkpoint import CONFIG_NAME, EMA_WEIGHTS_NAME, WEIGHTS_NAME
from gahb.training.loop import METRICS_NAME, STATE_NAME
from gahb.utils.io import CorruptFileError


def smooth_images(n: int, seed: int, size: int = 16) -> torch.Tensor:
    """Smooth random images in [0, 1]: denoisable, unlike i.i.d. pixels."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 1, 4, 4, generator=g), size=size, mode="bilinear", align_corners=False)


TINY = ModelConfig(arch="unet", num_blocks=2, width=8)


def tiny_cfg(**kw):
    base = dict(model=TINY, steps=40, batch_size=16, images_per_epoch=160, lr=1e-2, eval_images=16,
                eval_every=10, eval_unit="step", checkpoint_every=0, ema_halflife_kimg=0.1, ema_rampup_ratio=0.25,
                ema_bn_batches=4)
    base.update(kw)
    return make_config("quick", **base)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    x, xt = smooth_images(32, 0), smooth_images(16, 1)
    info = {"dataset": "synthetic-smooth", "n": 32, "subset": "s1", "seed": 0}
    res = train(tiny_cfg(), x, xt, out, progress=False, data_info=info)
    return out, res, x, xt


def test_loss_decreases_and_denoiser_beats_identity(trained_run):
    out, res, _, _ = trained_run
    recs = read_metrics(out)
    assert [r["step"] for r in recs] == [0, 10, 20, 30, 40]
    first, last = recs[0], recs[-1]
    assert last["test_loss"] < 0.4 * first["test_loss"]
    assert last["train_loss_fixed"] < 0.4 * first["train_loss_fixed"]
    assert recs[-1]["train_loss"] < 0.5 * recs[1]["train_loss"]
    # The untrained net is ~ the identity (BF-BN gains ~0.003): output PSNR ~ input PSNR (20 dB at 0.1).
    assert abs(first["test_psnr"]["0.1"] - 20.0) < 0.5
    assert last["test_psnr"]["0.1"] > first["test_psnr"]["0.1"] + 1.0
    assert res.finished and res.step == 40 and not res.already_finished


def test_metrics_jsonl_fields(trained_run):
    out, _, _, _ = trained_run
    recs = [json.loads(line) for line in (out / METRICS_NAME).read_text().splitlines()]
    keys = {"step", "epoch", "images_seen", "lr", "train_loss", "test_loss", "train_loss_fixed", "train_psnr",
            "test_psnr", "images_per_s", "wall_time"}
    for r in recs:
        assert keys <= set(r)
        assert set(r["test_psnr"]) == {"0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1"}
    # 160 images/epoch, batch 16: 10 steps per epoch.
    assert [r["epoch"] for r in recs] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [r["images_seen"] for r in recs] == [0, 160, 320, 480, 640]
    assert recs[0]["train_loss"] is None and recs[0]["images_per_s"] is None
    assert all(r["images_per_s"] > 0 for r in recs[1:])
    assert recs[-1]["wall_time"] >= recs[1]["wall_time"] > 0
    # quick preset halves after epoch 2 (steps 20..): the logged lr is the last step's.
    assert [r["lr"] for r in recs] == [1e-2, 1e-2, 1e-2, 5e-3, 5e-3]


def test_config_json_and_release_weights(trained_run):
    out, res, x, xt = trained_run
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == TINY.to_dict()
    assert cfg["train"] == tiny_cfg().to_dict()
    assert cfg["N"] == 32 and cfg["subset"] == "s1" and cfg["dataset"] == "synthetic-smooth" and cfg["seed"] == 0
    assert cfg["data"]["n"] == 32 and cfg["image_shape"] == [1, 16, 16] and cfg["n_test"] == 16
    assert cfg["progress"] == {"step": 40, "total_steps": 40, "epoch": 4.0, "finished": True}
    assert {"gahb", "torch", "python"} <= set(cfg["versions"]) and cfg["device"] == "cpu"
    assert cfg["metrics"]["step"] == 40 and cfg["schedule"]["tiles"] == 5
    # The safetensors release reproduces the training state's networks exactly: the raw one on
    # request, the EMA one (with its recalibrated running_sd) by default.
    model, loaded = load_denoiser(out, weights="raw")
    state = load_state(out)
    assert not model.training and loaded["weights"] == "raw"
    for k, v in model.state_dict().items():
        assert torch.equal(v, state["model"][k]), k
    ema, loaded = load_denoiser(out)
    assert loaded["weights"] == "ema" and loaded["weights_file"].endswith("model_ema.safetensors")
    for k, v in ema.state_dict().items():
        assert torch.equal(v, state["ema"][k]), k
    from gahb.models import build_model

    ref = build_model(TINY)
    ref.load_state_dict(state["model"])
    ref.eval()
    y = xt[:4] + 0.1 * torch.randn(xt[:4].shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(y), ref(y))
        # And its PSNR at sigma=0.1 on fixed test images is the logged kind of number.
        assert model(y).sub(xt[:4]).pow(2).mean() < y.sub(xt[:4]).pow(2).mean()


def test_finished_run_is_a_noop_and_mismatches_are_refused(trained_run, tmp_path):
    out, res, x, xt = trained_run
    before = (out / STATE_NAME).stat().st_mtime_ns
    again = train(tiny_cfg(), x, xt, out, progress=False)
    assert again.already_finished and again.finished and again.step == 40
    assert (out / STATE_NAME).stat().st_mtime_ns == before
    assert len(read_metrics(out)) == 5
    with pytest.raises(ValueError, match="different configuration.*lr"):
        train(tiny_cfg(lr=3e-3), x, xt, out, progress=False)
    with pytest.raises(ValueError, match="N=32.*N=31"):
        train(tiny_cfg(), x[:31], xt, out, progress=False)
    x2 = x.clone()
    x2[0, 0, 0, 0] = 0.5
    with pytest.raises(ValueError, match="different images"):
        train(tiny_cfg(), x2, xt, out, progress=False)
    with pytest.raises(FileExistsError, match="already holds"):
        train(tiny_cfg(), x, xt, out, progress=False, resume="never")
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(tiny_cfg(), x, xt, tmp_path / "empty", progress=False, resume="require")


def test_runs_saved_before_a_field_existed_stay_reusable(trained_run, tmp_path):
    import shutil

    out, _, x, xt = trained_run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    # Rewrite the saved config as an older version wrote it: without the loss-weight fields.
    st = load_state(old)
    for k in ("loss_weight", "loss_sigma_floor"):
        st["train_config"].pop(k)
    torch.save(st, old / STATE_NAME)
    again = train(tiny_cfg(), x, xt, old, progress=False)
    assert again.already_finished
    # The missing field counts as its default, so a non-default value is still a mismatch.
    with pytest.raises(ValueError, match="different configuration.*loss_weight"):
        train(tiny_cfg(loss_weight="eps"), x, xt, old, progress=False)


@pytest.mark.parametrize("name", [STATE_NAME, CONFIG_NAME, WEIGHTS_NAME, EMA_WEIGHTS_NAME])
def test_a_truncated_run_file_is_named_and_nothing_is_retrained_over_it(trained_run, tmp_path, name):
    """Half of one file of a finished run: resuming (state) or loading (release) fails with an error that
    names the file, and no file of the run is rewritten (a torn config.json is repaired from state.pt by
    the resume protocol, so it is checked by loading)."""
    import re
    import shutil

    out, _, x, xt = trained_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    torn = run / name
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(CorruptFileError, match=re.escape(str(torn))):
        if name == STATE_NAME:
            train(tiny_cfg(), x, xt, run, progress=False)
        else:
            load_denoiser(run, weights="raw" if name == WEIGHTS_NAME else "ema")
    assert {k: (run / k).read_bytes() for k in before} == before


def test_eps_weighted_training_learns(tmp_path):
    x, xt = smooth_images(32, 0), smooth_images(16, 1)
    res = train(tiny_cfg(loss_weight="eps"), x, xt, tmp_path, progress=False)
    recs = read_metrics(tmp_path)
    assert res.finished and json.loads((tmp_path / "config.json").read_text())["train"]["loss_weight"] == "eps"
    # The logged test loss stays the paper's unweighted one; it falls as the net learns.
    assert recs[-1]["test_loss"] < recs[0]["test_loss"]


def test_force_extends_a_finished_run(tmp_path):
    x, xt = smooth_images(32, 0), smooth_images(16, 1)
    train(tiny_cfg(steps=10), x, xt, tmp_path, progress=False)
    res = train(tiny_cfg(steps=20), x, xt, tmp_path, progress=False, force=True)
    assert res.resumed_from == 10 and res.step == 20 and res.finished
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 10, 20]
    with pytest.raises(ValueError, match="architecture"):
        train(tiny_cfg(steps=30, model=ModelConfig(arch="unet", num_blocks=2, width=4)), x, xt, tmp_path,
              progress=False, force=True)


def test_bad_inputs_fail_before_training(tmp_path):
    x, xt = smooth_images(32, 0), smooth_images(16, 1)
    bad = x.clone()
    bad[3, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf.*indices \\[3\\]"):
        train(tiny_cfg(), bad, xt, tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="3 channel.*expects 1"):
        train(tiny_cfg(), x.repeat(1, 3, 1, 1), xt, tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="test_images have 3 channel"):
        train(tiny_cfg(), x, xt.repeat(1, 3, 1, 1), tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="floating point"):
        train(tiny_cfg(), (x * 255).to(torch.uint8), xt, tmp_path / "d", progress=False)
    with pytest.raises(ValueError, match="empty"):
        train(tiny_cfg(), x[:0], xt, tmp_path / "e", progress=False)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        train(tiny_cfg(), x[:, 0], xt, tmp_path / "f", progress=False)
    with pytest.raises(ValueError, match="bf16 .* CUDA"):
        train(tiny_cfg(bf16=True, device="cpu"), x, xt, tmp_path / "g", progress=False)
    with pytest.raises(ValueError, match="compile .* CUDA"):
        train(tiny_cfg(compile=True, device="cpu"), x, xt, tmp_path / "h", progress=False)
    # Nothing was written for any of them.
    assert not any((tmp_path / d / STATE_NAME).exists() for d in "abcdefgh")


def test_model_files_without_state_are_not_overwritten(tmp_path):
    x, xt = smooth_images(32, 0), smooth_images(16, 1)
    (tmp_path / "model.safetensors").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="no training state"):
        train(tiny_cfg(steps=2), x, xt, tmp_path, progress=False)
    assert (tmp_path / "model.safetensors").read_bytes() == b"precious"
    res = train(tiny_cfg(steps=2), x, xt, tmp_path, progress=False, resume="overwrite")
    assert res.finished and load_denoiser(tmp_path)[0] is not None


def test_channels_last_and_bfcnn_train_on_cpu(tmp_path):
    x = smooth_images(16, 0, size=12)
    cfg = tiny_cfg(model=ModelConfig(arch="bfcnn", num_layers=4, width=8), steps=6, channels_last=True,
                   noise="uniform", eval_every=3)
    res = train(cfg, x, None, tmp_path, progress=False)
    recs = read_metrics(tmp_path)
    assert res.finished and [r["step"] for r in recs] == [0, 3, 6]
    assert "test_psnr" not in recs[-1] and "train_psnr" in recs[-1]
