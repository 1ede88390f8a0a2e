"""Importing published checkpoints: exact against reference forward passes, and safe on bad files.

Each reference forward pass below is written from the layer order stated for its format (the
published README for universal_inverse_problem and bias_free_denoising, the official GAHB code's
network layout for its UNet and BF-CNN) with plain ``torch.nn.functional`` calls on the source's own
key names, so it shares nothing with :mod:`gahb.models.importers`.
"""

from __future__ import annotations

import argparse
import builtins

import pytest
import torch
import torch.nn.functional as F

from gahb.models.importers import CheckpointError, import_checkpoint, read_checkpoint
from gahb.training.checkpoint import load_denoiser

G = torch.Generator().manual_seed(0)


def _w(*shape, scale=None):
    fan_in = shape[1] * shape[2] * shape[3] if len(shape) == 4 else 1
    return torch.randn(shape, generator=G) * (scale or (2.0 / fan_in) ** 0.5)


def _pos(c):  # O(1) positive per-channel statistics, as after training
    return 0.5 + torch.rand((1, c, 1, 1), generator=G)


# -- the three BF-CNN layouts -------------------------------------------------------------------------
def uip_state(layers=5, width=8, channels=1):
    sd = {f"conv_layers.{i}.weight": _w(width, channels if i == 0 else width, 3, 3) for i in range(layers - 1)}
    sd[f"conv_layers.{layers - 1}.weight"] = _w(channels, width, 3, 3)
    for j in range(layers - 2):
        sd[f"running_sd.{j}"], sd[f"gammas.{j}"] = _pos(width), _pos(width)
    return sd


def uip_reference(sd, y):
    """README: conv0 -> ReLU; 18 x [conv -> / running_sd -> * gamma -> ReLU]; conv19 = residual."""
    n = sum(k.startswith("conv_layers.") for k in sd)
    x = F.relu(F.conv2d(y, sd["conv_layers.0.weight"], padding=1))
    for i in range(1, n - 1):
        x = F.conv2d(x, sd[f"conv_layers.{i}.weight"], padding=1)
        x = F.relu(x / sd[f"running_sd.{i - 1}"] * sd[f"gammas.{i - 1}"])
    return y - F.conv2d(x, sd[f"conv_layers.{n - 1}.weight"], padding=1)


def gahb_bfcnn_state(layers=5, width=8):
    sd = {f"module.conv_layers.{i}.weight": _w(width, 1 if i == 0 else width, 3, 3) for i in range(layers - 1)}
    sd[f"module.conv_layers.{layers - 1}.weight"] = _w(1, width, 3, 3)
    for j in range(layers - 2):
        sd[f"module.BN_layers.{j}.running_sd"], sd[f"module.BN_layers.{j}.gammas"] = _pos(width), _pos(width)
    return sd


def gahb_bfcnn_reference(sd, y, first_layer_linear):
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    n = sum(k.startswith("conv_layers.") for k in sd)
    x = F.conv2d(y, sd["conv_layers.0.weight"], padding=1)
    if not first_layer_linear:
        x = F.relu(x)
    for i in range(1, n - 1):
        x = F.conv2d(x, sd[f"conv_layers.{i}.weight"], padding=1)
        x = F.relu(x / sd[f"BN_layers.{i - 1}.running_sd"] * sd[f"BN_layers.{i - 1}.gammas"])
    return y - F.conv2d(x, sd[f"conv_layers.{n - 1}.weight"], padding=1)


def bfd_state(hidden=3, width=8):
    sd = {"first_layer.weight": _w(width, 1, 3, 3), "last_layer.weight": _w(1, width, 3, 3)}
    for i in range(hidden):
        sd[f"hidden_layer_list.{i}.weight"] = _w(width, width, 3, 3)
        sd[f"bn_layer_list.{i}.weight"] = 0.5 + torch.rand(width, generator=G)
        sd[f"bn_layer_list.{i}.bias"] = torch.zeros(width)
        sd[f"bn_layer_list.{i}.running_mean"] = torch.randn(width, generator=G)  # unused by the BF-BN
        sd[f"bn_layer_list.{i}.running_var"] = 0.2 + torch.rand(width, generator=G)
        sd[f"bn_layer_list.{i}.num_batches_tracked"] = torch.tensor(100)
    return sd


def bfd_checkpoint(sd, **args):
    ns = argparse.Namespace(model="dncnn", bias=False, min_noise=100, max_noise=0, num_layers=len(sd), **args)
    return {"step": None, "score": None, "last_step": None, "best_step": None, "best_score": None,
            "model": [sd], "optimizer": None, "scheduler": None, "args": ns}


def bfd_reference(sd, y):
    """README: first_layer -> ReLU; [conv -> weight * x / (sqrt(running_var) + 1e-5) -> ReLU]; last; y - out."""
    n = sum(k.startswith("hidden_layer_list.") for k in sd)
    x = F.relu(F.conv2d(y, sd["first_layer.weight"], padding=1))
    for i in range(n):
        x = F.conv2d(x, sd[f"hidden_layer_list.{i}.weight"], padding=1)
        scale = sd[f"bn_layer_list.{i}.weight"] / (sd[f"bn_layer_list.{i}.running_var"].sqrt() + 1e-5)
        x = F.relu(x * scale.view(1, -1, 1, 1))
    return y - F.conv2d(x, sd["last_layer.weight"], padding=1)


# -- the official UNet layout ---------------------------------------------------------------------------
def gahb_unet_state(blocks=2, k=4, enc=2, mid=2, dec=2, prefix="module."):
    """Keys and shapes of the official UNet: encoder.{b}, mid_block, upsample.{b}, decoder.{b} Sequentials."""
    sd, w = {}, [k * 2**b for b in range(blocks + 1)]

    def triples(name, start, cin, cout, n):
        for t in range(n):
            sd[f"{prefix}{name}.{start + 3 * t}.weight"] = _w(cout, cin if t == 0 else cout, 3, 3)
            sd[f"{prefix}{name}.{start + 3 * t + 1}.running_sd"] = _pos(cout)
            sd[f"{prefix}{name}.{start + 3 * t + 1}.gammas"] = _pos(cout)

    sd[f"{prefix}encoder.0.0.weight"] = _w(k, 1, 3, 3)
    triples("encoder.0", 2, k, k, enc - 1)
    for b in range(1, blocks):
        triples(f"encoder.{b}", 0, w[b - 1], w[b], enc)
    triples("mid_block", 0, w[blocks - 1], w[blocks], mid)
    for b in range(blocks - 1, -1, -1):
        sd[f"{prefix}upsample.{b}.weight"] = _w(w[b + 1], w[b], 2, 2)
        if b > 0:
            triples(f"decoder.{b}", 0, w[b + 1], w[b], dec)
        else:
            triples("decoder.0", 0, w[1], w[0], dec - 1)
            sd[f"{prefix}decoder.0.{3 * (dec - 1)}.weight"] = _w(1, k, 3, 3)
    return sd


def gahb_unet_reference(sd, y, blocks, enc=2, mid=2, dec=2, pool_window=2):
    """The official forward: encoder blocks (kept for the skips, average-pooled), mid block, then per
    block upsample, concatenate [upsampled, skip], decoder block; the output is the residual."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}

    def run(name, x, start, n, last_linear=False):
        for t in range(n):
            i = start + 3 * t
            x = F.conv2d(x, sd[f"{name}.{i}.weight"], padding=1)
            x = F.relu(x / sd[f"{name}.{i + 1}.running_sd"] * sd[f"{name}.{i + 1}.gammas"])
        return x

    x, skips = y, []
    for b in range(blocks):
        if b == 0:
            x = F.relu(F.conv2d(x, sd["encoder.0.0.weight"], padding=1))
            x = run("encoder.0", x, 2, enc - 1)
        else:
            x = run(f"encoder.{b}", x, 0, enc)
        skips.append(x)
        x = F.avg_pool2d(x, pool_window, stride=2, padding=(pool_window - 1) // 2)
    x = run("mid_block", x, 0, mid)
    for b in range(blocks - 1, -1, -1):
        x = torch.cat([F.conv_transpose2d(x, sd[f"upsample.{b}.weight"], stride=2), skips[b]], dim=1)
        if b > 0:
            x = run(f"decoder.{b}", x, 0, dec)
        else:
            x = run("decoder.0", x, 0, dec - 1)
            x = F.conv2d(x, sd[f"decoder.0.{3 * (dec - 1)}.weight"], padding=1)
    return y - x


# -- exactness ------------------------------------------------------------------------------------------
CASES = {
    "uip-bfcnn": (lambda: uip_state(), lambda sd: sd, uip_reference, {}),
    "bfd-dncnn": (lambda: bfd_state(), bfd_checkpoint, bfd_reference, {}),
    "gahb-bfcnn": (lambda: gahb_bfcnn_state(), lambda sd: sd,
                   lambda sd, y: gahb_bfcnn_reference(sd, y, False), {}),
    "gahb-bfcnn-linear-first": (lambda: gahb_bfcnn_state(), lambda sd: sd,
                                lambda sd, y: gahb_bfcnn_reference(sd, y, True), {"first_layer_linear": True}),
    "gahb-unet": (lambda: gahb_unet_state(), lambda sd: sd, lambda sd, y: gahb_unet_reference(sd, y, 2), {}),
    "gahb-unet-3convs-pool3": (lambda: gahb_unet_state(blocks=2, enc=3, mid=1, dec=3), lambda sd: sd,
                               lambda sd, y: gahb_unet_reference(sd, y, 2, 3, 1, 3, pool_window=3),
                               {"pool_window": 3}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_imported_network_equals_reference_forward(case, tmp_path):
    make_state, wrap, reference, options = CASES[case]
    fmt = "gahb-bfcnn" if case.startswith("gahb-bfcnn") else "gahb-unet" if case.startswith("gahb-unet") else case
    sd = make_state()
    path = tmp_path / "model.pt"
    torch.save(wrap(sd), path)
    out, config = import_checkpoint(fmt, path, tmp_path / "run", **options)
    model, _ = load_denoiser(out)  # the run folder every --checkpoint command reads
    y = torch.rand((2, 1, 16, 16), generator=G)
    with torch.no_grad():
        ref, got = reference(sd, y), model(y)
    assert (ref - y).abs().max() > 0.1  # a non-trivial residual: the comparison means something
    assert (got - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max().item())
    assert config["imported"]["format"] == fmt and len(config["imported"]["source_sha256"]) == 64
    for key, value in options.items():
        assert config["imported"]["architecture"][key] == value


def test_unet_convolution_counts_come_from_the_keys_and_are_checked(tmp_path):
    path = tmp_path / "unet.pt"
    torch.save(gahb_unet_state(enc=3, mid=1, dec=3), path)
    _, prov = read_checkpoint("gahb-unet", path)
    assert {k: prov["architecture"][k] for k in ("enc_convs", "mid_convs", "dec_convs")} == \
        {"enc_convs": 3, "mid_convs": 1, "dec_convs": 3}
    with pytest.raises(CheckpointError, match="convolutions per block"):
        read_checkpoint("gahb-unet", path, enc_convs=2)


def test_auto_format_and_noise_range_from_args_or_path(tmp_path):
    torch.save(bfd_checkpoint(bfd_state()), tmp_path / "0-100.pt")
    _, prov = read_checkpoint("auto", tmp_path / "0-100.pt")
    assert prov["format"] == "bfd-dncnn" and prov["noise_range"]["sigma_255"] == [0.0, 100.0]
    assert prov["args"]["min_noise"] == 100 and prov["output_convention"] == "clean"
    (tmp_path / "noise_range_0to55").mkdir()
    torch.save(uip_state(), tmp_path / "noise_range_0to55" / "model.pt")
    _, prov = read_checkpoint("auto", tmp_path / "noise_range_0to55" / "model.pt")
    assert prov["format"] == "uip-bfcnn" and prov["noise_range"]["sigma_255"] == [0.0, 55.0]


# -- bad input: a clear error, nothing written ------------------------------------------------------------
class _CreatesFile:
    """Unpickling this calls open(path, "w"): a stand-in for any code a pickle can run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (builtins.open, (self.path, "w"))


def test_a_pickle_that_would_create_a_file_is_refused(tmp_path):
    victim = tmp_path / "created_by_unpickling.txt"
    path = tmp_path / "evil.pt"
    torch.save({"conv_layers.0.weight": torch.zeros(1), "payload": _CreatesFile(victim)}, path)
    for fmt in ("uip-bfcnn", "bfd-dncnn", "gahb-unet", "auto"):
        with pytest.raises(CheckpointError, match="refused to unpickle.*io.open"):
            import_checkpoint(fmt, path, tmp_path / "run")
        assert not victim.exists() and not (tmp_path / "run").exists()
    # The guard is what stops it: unrestricted unpickling of the same file does create the file.
    torch.load(path, weights_only=False)
    assert victim.exists()


def _bad_files(tmp_path):
    """(name, format, path, expected message) for each kind of bad input."""
    cases = []

    def save(name, obj):
        p = tmp_path / f"{name}.pt"
        torch.save(obj, p)
        return p

    cases.append(("namespace-for-a-state-dict-format", "uip-bfcnn", save("bfd", bfd_checkpoint(bfd_state())),
                  "argparse.Namespace.*bfd-dncnn"))
    cases.append(("other-architecture", "uip-bfcnn", save("unet", gahb_unet_state()), "keys are those of format gahb-unet"))
    cases.append(("state-dict-for-bfd", "bfd-dncnn", save("uip", uip_state()), "'model' entry.*look like format uip-bfcnn"))
    sd = uip_state()
    del sd["gammas.1"]
    cases.append(("missing-key", "uip-bfcnn", save("missing", sd), "missing 1 tensor.*gammas.1"))
    sd = uip_state()
    sd["conv_layers.0.bias"] = torch.zeros(8)
    cases.append(("extra-key", "uip-bfcnn", save("extra", sd), "unexpected tensor.*conv_layers.0.bias"))
    sd = uip_state()
    sd["conv_layers.2.weight"] = _w(8, 4, 3, 3)
    cases.append(("shape-mismatch", "uip-bfcnn", save("shape", sd), r"shape \(8, 4, 3, 3\).*needs \(8, 8, 3, 3\)"))
    sd = bfd_state()
    sd["first_layer.bias"] = torch.zeros(8)
    cases.append(("biased-dncnn", "bfd-dncnn", save("biased", bfd_checkpoint(sd)), "biased DnCNN"))
    cases.append(("args-say-biased", "bfd-dncnn", save("biased_args", bfd_checkpoint(bfd_state()) | {
        "args": argparse.Namespace(model="dncnn", bias=True)}), "bias=True"))
    sd = bfd_state()
    sd["bn_layer_list.1.running_var"][0] = -1.0
    cases.append(("negative-variance", "bfd-dncnn", save("negvar", bfd_checkpoint(sd)), "negative entries"))
    good = save("good", uip_state())
    trunc = tmp_path / "truncated.pt"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases.append(("truncated", "uip-bfcnn", trunc, "truncated"))
    legacy = tmp_path / "legacy.pt"
    torch.save(bfd_checkpoint(bfd_state()), legacy, _use_new_zipfile_serialization=False)
    legacy_trunc = tmp_path / "legacy_truncated.pt"
    legacy_trunc.write_bytes(legacy.read_bytes()[:5000])
    cases.append(("truncated-legacy-pickle", "bfd-dncnn", legacy_trunc, "truncated|not a readable"))
    cases.append(("not-a-tensor-file", "gahb-unet", save("list", [1, 2, 3]), "expected a state_dict"))
    return cases


def test_each_bad_input_gets_a_clear_error_and_nothing_is_written(tmp_path):
    for name, fmt, path, message in _bad_files(tmp_path):
        out = tmp_path / f"out-{name}"
        with pytest.raises(CheckpointError, match=message):
            import_checkpoint(fmt, path, out)
        assert not out.exists(), name
        assert str(path) in str(pytest.raises(CheckpointError, import_checkpoint, fmt, path, out).value), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temporary folder left


def test_unknown_import_option_is_refused(tmp_path):
    torch.save(uip_state(), tmp_path / "m.pt")
    with pytest.raises(ValueError, match="unknown import option"):
        read_checkpoint("uip-bfcnn", tmp_path / "m.pt", pool_size=3)


def test_existing_run_folder_is_kept_unless_overwrite(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(uip_state(), path)
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        import_checkpoint("uip-bfcnn", path, out)
    assert (out / "notes.txt").read_text() == "mine"
    import_checkpoint("uip-bfcnn", path, out, overwrite=True)
    assert (out / "model.safetensors").is_file() and not (out / "notes.txt").exists()


def test_cli_import_then_denoise(tmp_path, capsys):
    from gahb.cli import main

    path = tmp_path / "m.pt"
    torch.save(bfd_checkpoint(bfd_state()), path)
    assert main(["import", "bfd-dncnn", str(path), "--out", str(tmp_path / "run")]) == 0
    assert "bfd-dncnn: 5-layer BF-CNN" in capsys.readouterr().out
    assert main(["import", "uip-bfcnn", str(path), "--out", str(tmp_path / "run2")]) == 1
    assert "argparse.Namespace" in capsys.readouterr().err and not (tmp_path / "run2").exists()
