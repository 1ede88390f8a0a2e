"""The EMA of the weights (gahb.training.ema, as EDM's training_loop.py): the update rule, its half-life
and ramp-up, the EMA network's BF-BN statistics, loading, and runs saved before the EMA existed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from gahb.cli import main
from gahb.models import build_model
from gahb.training import load_denoiser, load_state, read_metrics, train
from gahb.training import loop
from gahb.training.bn_stats import recalibrate_bn
from gahb.training.checkpoint import CONFIG_NAME, EMA_WEIGHTS_NAME, WEIGHTS_NAME
from gahb.training.ema import EMA_SEED_OFFSET, WeightEMA, ema_beta
from gahb.training.loop import STATE_NAME
from test_training_loop import TINY, smooth_images, tiny_cfg

# What a run saved before the EMA existed behaved as: no EMA, the other EMA fields at their defaults.
NO_EMA = dict(ema_halflife_kimg=None, ema_rampup_ratio=0.05, ema_bn_batches=16)


class _Param(nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.w = nn.Parameter(torch.full((7,), value))

    def set(self, value: float) -> None:
        with torch.no_grad():
            self.w.fill_(value)


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ema_run")
    x, xt = smooth_images(32, 0), smooth_images(16, 1)
    train(tiny_cfg(steps=20), x, xt, out, progress=False)
    return out, x, xt


# -- the update rule ---------------------------------------------------------------------------------
def test_ema_of_a_constant_parameter_sequence_is_that_constant():
    for rampup in (None, 0.5):
        net = _Param(0.1)
        ema = WeightEMA(net, halflife_kimg=0.05, rampup_ratio=rampup)
        seen = 0
        for b in [7, 16, 3, 16] * 5:
            ema.update(net, b, seen)
            seen += b
        assert torch.equal(ema.model.w, net.w)
    # With a ramp-up the first update copies: a constant sequence after other initial weights is that constant.
    net = _Param(5.0)
    ema = WeightEMA(net, halflife_kimg=500.0, rampup_ratio=0.05)
    net.set(0.1)
    for k in range(20):
        ema.update(net, 16, 16 * k)
    assert torch.equal(ema.model.w, net.w)


def test_half_life_is_counted_in_images():
    assert ema_beta(8, 10_000, 64.0, None) == 0.5 ** (8 / 64)
    net = _Param(1.0)
    ema = WeightEMA(net, halflife_kimg=0.064, rampup_ratio=None)  # 64 images
    net.set(0.0)
    for k in range(8):  # 8 steps of 8 images: one half-life
        ema.update(net, 8, 1000 + 8 * k)
    assert torch.allclose(ema.model.w, torch.full((7,), 0.5), rtol=1e-6, atol=0)
    for k in range(16):  # 64 more images in batches of 4: the old value's weight halves again
        ema.update(net, 4, 2000 + 4 * k)
    assert torch.allclose(ema.model.w, torch.full((7,), 0.25), rtol=1e-6, atol=0)


def test_rampup_caps_the_half_life_at_a_fraction_of_the_images_seen():
    assert ema_beta(16, 0, 5e5, 0.05) == 0.0  # the first update copies the raw weights
    assert ema_beta(16, 1000, 5e5, 0.05) == 0.5 ** (16 / 50)  # H = 0.05 * 1000 images
    assert ema_beta(16, 10**8, 5e5, 0.05) == 0.5 ** (16 / 5e5)  # the half-life caps it
    # A short run (800 images, half-life 500k images): without a ramp-up its EMA is its initial weights.
    results = {}
    for rampup in (None, 0.05):
        net = _Param(0.0)
        ema = WeightEMA(net, halflife_kimg=500.0, rampup_ratio=rampup)
        for k in range(50):
            net.set(1.0 + k / 50)
            ema.update(net, 16, 16 * k)
        results[rampup] = float(ema.model.w[0])
    assert results[None] < 0.01  # ~all weight on the initial 0
    assert 1.8 < results[0.05] < 1.98  # the recent weights (the last is 1.98)


# -- the EMA network in a run --------------------------------------------------------------------------
def test_ema_running_sd_is_recalibrated_for_the_ema_weights(ema_run):
    """The EMA network's running_sd are neither the raw network's nor an average: they are recomputed on
    training batches (seed + 2**21) with the EMA weights."""
    out, x, _ = ema_run
    cfg, st = tiny_cfg(steps=20), load_state(out)
    ema, loaded = load_denoiser(out)
    assert loaded["weights"] == "ema"
    expected = build_model(TINY)  # running_sd at their initial ones
    if cfg.channels_last:  # the run's EMA network computes in the run's memory format (same maths, other rounding)
        expected = expected.to(memory_format=torch.channels_last)
    expected.load_state_dict({k: v for k, v in st["ema"].items() if not k.endswith("running_sd")}, strict=False)
    n = recalibrate_bn(expected, x, batches=cfg.ema_bn_batches, batch_size=cfg.batch_size, noise=cfg.noise,
                       sigma_max=cfg.sigma_max, seed=cfg.seed + EMA_SEED_OFFSET)
    assert n > 0
    sds = {k: v for k, v in ema.state_dict().items() if k.endswith("running_sd")}
    assert len(sds) == n
    for k, v in sds.items():
        assert torch.equal(v, expected.state_dict()[k]), k
        assert not torch.equal(v, st["model"][k]), f"{k} is the raw network's"
    assert not all(torch.equal(st["ema"][k], st["model"][k]) for k in st["model"])  # an average, not a copy


def test_the_ema_does_not_change_training(ema_run, tmp_path):
    out, x, xt = ema_run
    train(tiny_cfg(steps=20, **NO_EMA), x, xt, tmp_path, progress=False)
    with_ema, without = load_state(out), load_state(tmp_path)
    assert "ema" not in without and not (tmp_path / EMA_WEIGHTS_NAME).exists()
    for k, v in without["model"].items():
        assert torch.equal(with_ema["model"][k], v), k
    for a, b in zip(read_metrics(out), read_metrics(tmp_path)):
        assert a["test_psnr"] == b["test_psnr"] and a["train_loss"] == b["train_loss"]
        assert "ema" in a and "ema" not in b
    assert json.loads((tmp_path / CONFIG_NAME).read_text())["ema"] is None
    assert load_denoiser(tmp_path)[1]["weights"] == "raw"


def test_load_denoiser_picks_the_ema_by_default_and_raw_on_request(ema_run, tmp_path):
    out, _, _ = ema_run
    st = load_state(out)
    for kwargs, kind, key in (({}, "ema", "ema"), ({"weights": "raw"}, "raw", "model")):
        model, config = load_denoiser(out, **kwargs)
        assert config["weights"] == kind and not model.training
        assert all(torch.equal(v, st[key][k]) for k, v in model.state_dict().items())
    assert load_denoiser(out / EMA_WEIGHTS_NAME)[1]["weights"] == "ema"
    assert load_denoiser(out / WEIGHTS_NAME)[1]["weights"] == "raw"
    with pytest.raises(ValueError, match="EMA weights"):
        load_denoiser(out / EMA_WEIGHTS_NAME, weights="raw")
    with pytest.raises(ValueError, match="weights must be"):
        load_denoiser(out, weights="average")
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / EMA_WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match="raw-weights"):
        load_denoiser(broken)
    assert load_denoiser(broken, weights="raw")[1]["weights"] == "raw"


def test_ema_flags_of_the_commands(ema_run, tmp_path, capsys):
    out, _, xt = ema_run
    image = tmp_path / "clean.npy"
    np.save(image, xt[0, 0].numpy())
    results = {}
    for extra in ((), ("--raw-weights",)):
        argv = ["denoise", "--checkpoint", str(out), "--image", str(image), "--out", str(tmp_path / "d.png"),
                "--json", "--device", "cpu", *extra]
        assert main(argv) == 0
        results[extra] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert results[()]["weights"] == "ema" and results[("--raw-weights",)]["weights"] == "raw"
    assert results[()]["psnr_out"] != results[("--raw-weights",)]["psnr_out"]
    from gahb.cli import build_parser

    assert main(["train", "--dry-run", "--out", str(tmp_path / "x"), "--ema-halflife-kimg", "2",
                 "--ema-rampup-ratio", "none", "--ema-bn-batches", "3"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert (cfg["ema_halflife_kimg"], cfg["ema_rampup_ratio"], cfg["ema_bn_batches"]) == (2.0, None, 3)
    assert main(["train", "--dry-run", "--out", str(tmp_path / "x"), "--ema-halflife-kimg", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["ema_halflife_kimg"] is None
    parser = build_parser()
    for command in ("evaluate", "sample", "restore", "denoise", "jacobian"):
        sub = parser._subparsers._group_actions[0].choices[command]
        assert "--raw-weights" in sub._option_string_actions, command


# -- runs saved before the EMA existed -----------------------------------------------------------------
class _Stop(Exception):
    pass


def _as_written_before_the_ema(run) -> None:
    """Rewrite a run folder's state.pt and config.json as a version without the EMA wrote them."""
    st = load_state(run)
    for k in NO_EMA:
        st["train_config"].pop(k)
    torch.save(st, run / STATE_NAME)
    cfg = json.loads((run / CONFIG_NAME).read_text())
    cfg.pop("ema")
    for k in NO_EMA:
        cfg["train"].pop(k)
    (run / CONFIG_NAME).write_text(json.dumps(cfg))


def test_runs_from_before_the_ema_load_and_resume_bit_identically(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    x, xt = smooth_images(32, 0), smooth_images(16, 1)
    cfg = tiny_cfg(steps=20, **NO_EMA)
    train(cfg, x, xt, tmp_path / "reference", progress=False)
    old = tmp_path / "old"
    real_step = loop._Trainer._train_step

    def step_then_stop(trainer):
        b = real_step(trainer)
        if trainer.step == 13:
            raise _Stop
        return b

    with monkeypatch.context() as m:
        m.setattr(loop._Trainer, "_train_step", step_then_stop)
        with pytest.raises(_Stop):
            train(cfg, x, xt, old, progress=False)
    assert load_state(old)["step"] == 10
    _as_written_before_the_ema(old)
    # Its only weights load; asking for an EMA on resume is a configuration change.
    assert load_denoiser(old)[1]["weights"] == "raw"
    with pytest.raises(ValueError, match="different configuration.*ema_halflife_kimg"):
        train(tiny_cfg(steps=20), x, xt, old, progress=False)
    res = train(cfg, x, xt, old, progress=False)
    assert res.resumed_from == 10 and res.finished
    ref, st = load_state(tmp_path / "reference"), load_state(old)
    assert all(torch.equal(st["model"][k], v) for k, v in ref["model"].items())
    assert load_denoiser(old)[1]["weights"] == "raw" and not (old / EMA_WEIGHTS_NAME).exists()
