"""``gahb sample`` and ``gahb restore`` on tiny checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_tiny

from gahb.cli import main
from gahb.models import ModelConfig
from gahb.training.checkpoint import save_release




def _release(path, model, cfg, **extra):
    save_release(model, path, {"model": cfg.to_dict(), **extra})
    return path


@pytest.fixture
def random_run(tmp_path):
    """A random tiny UNet with realistic BN statistics (it is no denoiser: its samples diverge)."""
    return _release(tmp_path / "random", make_tiny("unet", width=8),
                    ModelConfig(arch="unet", num_blocks=2, width=8), image_shape=[1, 16, 16])


@pytest.fixture
def identity_run(tmp_path):
    """A UNet whose output layer is zero: f(y) = y, so sigma_t = 0 and every sample stops at once."""
    net = make_tiny("unet", width=8)
    with torch.no_grad():
        net.decoder[-1][-1].weight.zero_()
    return _release(tmp_path / "identity", net, ModelConfig(arch="unet", num_blocks=2, width=8))


def test_sample_cli_writes_grid_array_and_record(random_run, tmp_path, capsys):
    out = tmp_path / "s"
    rc = main(["sample", "--checkpoint", str(random_run), "--num", "3", "--seed", "5", "--preset", "fast",
               "--max-steps", "6", "--out", str(out), "--no-progress"])
    assert rc == 1  # every sample failed: the command says so and exits non-zero, after writing
    text = capsys.readouterr()
    assert "denoiser evaluations per sample" in text.out and "failed: 3 of 3 samples" in text.out
    assert "every sample failed" in text.err  # failures are reported, not hidden
    arr = np.load(out / "samples.npy")
    assert arr.shape == (3, 1, 16, 16) and arr.dtype == np.float32
    assert (out / "samples.png").stat().st_size > 0
    rec = json.loads((out / "sampling.json").read_text())
    assert [s["seed"] for s in rec["samples"]] == [5, 6, 7]
    assert all(s["status"] in ("diverged", "max_steps") for s in rec["samples"])
    assert rec["config"]["h0"] == 0.05 and rec["config"]["max_steps"] == 6
    assert rec["num_failed"] == 3


def test_sample_cli_is_seed_reproducible_and_converges(identity_run, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--checkpoint", str(identity_run), "--size", "12x16", "--no-progress", "--no-optimize"]
    assert main(["sample", *common, "--seeds", "3,4", "--out", str(a)]) == 0
    assert main(["sample", *common, "--seeds", "4", "--out", str(b), "--batch-size", "1"]) == 0
    out = capsys.readouterr().out
    assert "mean 1.0" in out  # one evaluation: sigma_t = 0 < sigma_final
    assert "failed: 0 of 2 samples" in out
    xa, xb = np.load(a / "samples.npy"), np.load(b / "samples.npy")
    assert xa.shape == (2, 1, 12, 16)
    np.testing.assert_array_equal(xa[1], xb[0])
    # f = identity, so the sample is x_0 = 0.5 + z_0 from Generator(seed).
    z0 = torch.randn((1, 12, 16), generator=torch.Generator().manual_seed(4))
    np.testing.assert_allclose(xb[0], (0.5 + z0).numpy(), rtol=0, atol=1e-6)
    rec = json.loads((a / "sampling.json").read_text())
    assert rec["samples"][0]["status"] == "converged"


def test_sample_cli_errors(identity_run, tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(identity_run), "--out", str(tmp_path / "x"), "--no-progress"]) == 1
    assert "--size" in capsys.readouterr().err  # no image_shape recorded
    assert main(["sample", "--checkpoint", str(tmp_path / "missing"), "--size", "8",
                 "--out", str(tmp_path / "x")]) == 1
    assert main(["sample", "--checkpoint", str(identity_run), "--size", "8", "--beta", "2",
                 "--out", str(tmp_path / "x")]) == 1
    assert "beta" in capsys.readouterr().err


@pytest.mark.parametrize("task,extra", [("inpaint", ["--block", "4x6"]), ("pixels", ["--fraction", "0.3"]),
                                        ("superres", ["--factor", "2"]), ("cs", ["--fraction", "0.2"])])
def test_restore_cli(identity_run, tmp_path, capsys, task, extra):
    from gahb.data import save_image

    img = torch.rand((1, 16, 16), generator=torch.Generator().manual_seed(0))
    save_image(tmp_path / "img.png", img)
    out = tmp_path / task
    rc = main(["restore", "--checkpoint", str(identity_run), "--image", str(tmp_path / "img.png"), "--task", task,
               *extra, "--num", "2", "--out", str(out), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "PSNR vs original" in text
    rec = json.loads((out / "restore.json").read_text())
    assert rec["task"] == task and len(rec["psnr_restored"]) == 2
    assert rec["max_measurement_error"] < 1e-5  # re-projected onto the measurements
    for name in ("original.png", "measured.png", "restored.png", "comparison.png"):
        assert (out / name).exists()
    assert np.load(out / "restored.npy").shape == (2, 1, 16, 16)


def test_restore_cli_bad_task_arguments(identity_run, tmp_path, capsys):
    from gahb.data import save_image

    save_image(tmp_path / "img.png", torch.rand((1, 9, 9)))
    rc = main(["restore", "--checkpoint", str(identity_run), "--image", str(tmp_path / "img.png"),
               "--task", "superres", "--factor", "2", "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 1 and "divide" in capsys.readouterr().err
