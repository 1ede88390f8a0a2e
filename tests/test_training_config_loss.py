"""Training config, schedule, noise laws and the loss (paper eq. 4; spec section 4)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import make_tiny
from gahb.models import ModelConfig
from gahb.training import (PRESETS, TrainConfig, denoising_loss, draw_noise, loss_weights, lr_at, make_config,
                           make_schedule, sample_sigmas)
from gahb.training.distributed import DistContext




def test_quadratic_sigma_law_median_and_density():
    g = torch.Generator().manual_seed(0)
    s = sample_sigmas(200_000, "quadratic", 1.0, generator=g)
    assert s.min() >= 0 and s.max() <= 1
    # sigma = u^2: median 0.25, P(sigma < t) = sqrt(t), mean 1/3.
    assert abs(s.median().item() - 0.25) < 0.005
    for t in (0.01, 0.1, 0.5):
        assert abs((s < t).double().mean().item() - math.sqrt(t)) < 0.005
    assert abs(s.mean().item() - 1 / 3) < 0.003
    s2 = sample_sigmas(200_000, "quadratic", 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(s2, 0.5 * s)


def test_uniform_sigma_law():
    s = sample_sigmas(200_000, "uniform", 2.0, generator=torch.Generator().manual_seed(1))
    assert abs(s.median().item() - 1.0) < 0.01
    assert abs((s < 0.5).double().mean().item() - 0.25) < 0.005
    with pytest.raises(ValueError, match="noise law"):
        sample_sigmas(3, "gaussian")


def test_draw_noise_one_sigma_per_image():
    g = torch.Generator().manual_seed(3)
    sig, z = draw_noise((4000, 1, 8, 8), "uniform", 1.0, generator=g)
    # Each image's empirical std over 64 pixels tracks its own sigma.
    emp = z.flatten(1).std(1)
    rel = (emp - sig).abs() / sig.clamp_min(1e-3)
    assert rel[sig > 0.05].median() < 0.1
    # The same generator state gives the same draw (resume relies on it).
    g2 = torch.Generator().manual_seed(3)
    sig2, z2 = draw_noise((4000, 1, 8, 8), "uniform", 1.0, generator=g2)
    assert torch.equal(sig, sig2) and torch.equal(z, z2)


def test_loss_is_sum_of_squared_denoising_errors_over_batch():
    model = make_tiny("unet", seed=1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 16, 16, generator=g)
    _, z = draw_noise(x.shape, "quadratic", 1.0, generator=g)
    y = x + z
    loss = denoising_loss(model.residual(y), z)
    # ||r(y) - z||^2 = ||f(y) - x||^2 since f = y - r and y = x + z (paper eq. 4).
    direct = sum(((model(y[i : i + 1]) - x[i : i + 1]) ** 2).sum() for i in range(5)) / 5
    assert torch.allclose(loss, direct, rtol=1e-5)
    assert torch.allclose(loss, torch.nn.functional.mse_loss(model(y), x, reduction="sum") / 5, rtol=1e-5)
    # A rank's share with the global batch size: shares add up to the global loss.
    r = model.residual(y)
    parts = denoising_loss(r[:2], z[:2], batch_size=5) + denoising_loss(r[2:], z[2:], batch_size=5)
    assert torch.allclose(parts, loss, rtol=1e-6)


def test_eps_weighted_loss_is_the_noise_prediction_loss():
    model = make_tiny("unet", seed=2)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(6, 1, 16, 16, generator=g)
    sig, z = draw_noise(x.shape, "uniform", 1.0, generator=g)
    r = model.residual(x + z)
    assert loss_weights(sig, "none") is None
    w = loss_weights(sig, "eps", floor=1e-5)
    loss = denoising_loss(r, z, weights=w)
    # ||r - sigma n||^2 / sigma^2 = ||r / sigma - n||^2: DDPM's epsilon loss (floor negligible here).
    n = z / sig.view(-1, 1, 1, 1)
    eps = sum(((r[i] / sig[i] - n[i]) ** 2).sum() for i in range(6)) / 6
    assert torch.allclose(loss, eps, rtol=1e-4)
    # Each image's share is its unweighted error over sigma^2 + floor^2, not a batch-global scale.
    per = torch.stack([denoising_loss(r[i : i + 1], z[i : i + 1]) for i in range(6)])
    assert torch.allclose(loss, (per / (sig ** 2 + 1e-10)).mean(), rtol=1e-5)
    # sigma = 0 stays finite: the floor bounds the weight.
    assert loss_weights(torch.zeros(2), "eps", floor=0.01).tolist() == pytest.approx([1e4, 1e4])
    with pytest.raises(ValueError, match="loss weight"):
        loss_weights(sig, "snr")


def test_eps_small_weight_is_unweighted_above_its_sigma_and_noise_prediction_below():
    sig = torch.tensor([1.0, 0.5, 0.1, 0.01, 0.001, 0.0])
    w = loss_weights(sig, "eps-small", floor=0.01, eps_sigma=0.1)
    assert w.tolist() == pytest.approx([1.01, 1.04, 2.0, 101.0, 101.0, 101.0])  # floored at sigma = 0.01
    # well below eps_sigma it is eps_sigma^2 times the eps (noise-prediction) weight
    assert float(w[3]) == pytest.approx(0.1**2 / 0.01**2 + 1)
    with pytest.raises(ValueError, match="loss_eps_sigma"):
        TrainConfig(loss_weight="eps-small", loss_eps_sigma=0.0)


def test_config_json_round_trip_and_validation():
    cfg = make_config("standard", model=ModelConfig(arch="bfcnn", num_layers=7, width=16), steps=123,
                      eval_sigmas=(0.05, 0.1), lr_halve_unit="fraction", lr_halve_every=0.25)
    assert cfg.epochs is None and cfg.steps == 123
    back = TrainConfig.from_json(json.dumps(json.loads(cfg.to_json())))
    assert back == cfg and isinstance(back.model, ModelConfig) and back.eval_sigmas == (0.05, 0.1)
    assert TrainConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    with pytest.raises(ValueError, match="exactly one"):
        TrainConfig(epochs=3, steps=5)
    with pytest.raises(ValueError, match="noise"):
        TrainConfig(noise="cubic")
    with pytest.raises(ValueError, match="loss_weight"):
        TrainConfig(loss_weight="snr")
    with pytest.raises(ValueError, match="loss_sigma_floor"):
        TrainConfig(loss_sigma_floor=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown TrainConfig"):
        TrainConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="preset"):
        make_config("huge")


def test_paper_preset_schedule_matches_official_numbers():
    cfg = make_config("paper")
    assert (cfg.batch_size, cfg.lr, cfg.epochs, cfg.noise) == (512, 1e-3, 1000, "quadratic")
    assert cfg.model.num_blocks == 3 and cfg.model.width == 64
    # N <= 1e4: exactly 250,000 images per epoch, ceil(250000/512) = 489 steps (last batch 144).
    s = make_schedule(cfg, 1000)
    assert (s.tiles, s.epoch_len, s.steps_per_epoch, s.last_batch) == (250, 250_000, 489, 144)
    assert s.total_steps == 489_000
    # N = 99,325 (the paper's "1e5"): n = 2 tiles, 198,650 images, 388 steps.
    s = make_schedule(cfg, 99_325)
    assert (s.tiles, s.epoch_len, s.steps_per_epoch) == (2, 198_650, 388)
    # N = 1: 250,000 copies of one image.
    assert make_schedule(cfg, 1).epoch_len == 250_000
    # lr halves at epochs 100, 200, ..., 900: 1e-3 / 2^9 ~ 1.95e-6 at the end.
    s = make_schedule(cfg, 1000)
    assert lr_at(cfg, s, 0) == 1e-3
    assert lr_at(cfg, s, 100 * 489 - 1) == 1e-3
    assert lr_at(cfg, s, 100 * 489) == 5e-4
    assert lr_at(cfg, s, s.total_steps - 1) == pytest.approx(1e-3 / 512)


def test_lr_units_steps_and_fraction():
    cfg = make_config("quick", steps=1000, lr_halve_every=0.1, lr_halve_unit="fraction")
    s = make_schedule(cfg, 100)
    assert [lr_at(cfg, s, k) for k in (0, 99, 100, 999)] == [1e-3, 1e-3, 5e-4, pytest.approx(1e-3 / 512)]
    cfg = make_config("quick", steps=1000, lr_halve_every=300, lr_halve_unit="step")
    assert [lr_at(cfg, s, k) for k in (299, 300, 600, 900)] == [1e-3, 5e-4, 2.5e-4, 1.25e-4]
    cfg = make_config("quick", steps=50, lr_halve_every=0)
    assert lr_at(cfg, make_schedule(cfg, 10), 49) == 1e-3


def test_scaled_presets_are_documented_sizes():
    for name in ("quick", "standard"):
        cfg = make_config(name)
        assert cfg.model.width == 32 and cfg.model.num_blocks == 2 and cfg.noise == "quadratic"
    assert set(PRESETS) == {"paper", "standard", "quick"}
    assert make_schedule(make_config("standard"), 1000).total_steps == 10 * math.ceil(20_000 / 64)


@pytest.mark.parametrize("n,ws", [(64, 2), (7, 2), (5, 3), (1, 1)])
def test_rank_shards_partition_the_global_batch(n, ws):
    parts = [DistContext(rank=r, world_size=ws).shard(n) for r in range(ws)]
    covered = [i for p in parts for i in range(n)[p]]
    assert covered == list(range(n))
    sizes = [len(range(n)[p]) for p in parts]
    assert max(sizes) - min(sizes) <= 1
