"""The four published checkpoint layouts mapped onto gahb's BF-CNN and UNet (see :mod:`gahb.models.importers`).

Each converter takes a :class:`Reader` over the source state_dict and returns ``(ModelConfig,
{gahb key: tensor}, architecture facts)``; the reader remembers which source tensors were used and
which were missing, so that missing, extra and misshapen tensors are reported with their source
names.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from .bfbn import EPS, BFBatchNorm2d
from .config import ModelConfig, build_model

# The official GAHB main.py defaults for choices a state_dict does not reveal.
GAHB_DEFAULTS = {"first_layer_linear": False, "pool_window": 2}


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint of the requested format; the message names both."""


class Reader:
    """Takes tensors out of a source state_dict by name, remembering what was missing or left over."""

    def __init__(self, state: dict, path: Path, fmt):  # fmt: an importers.Format
        self.path, self.fmt = path, fmt
        bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
        if bad or not state:
            raise CheckpointError(f"{path}: expected a state_dict of named tensors for a {fmt.title}; "
                                  f"got {len(state)} entries" + (f", e.g. {bad[0]!r}" if bad else ""))
        from gahb.training.checkpoint import strip_prefixes

        self.state = {strip_prefixes(k): v for k, v in state.items()}  # DataParallel's module. included
        self.used: set[str] = set()
        self.missing: list[str] = []

    def count(self, prefix: str, suffix: str) -> int:
        """1 + the largest i of the keys ``prefix<i>suffix``; the indices below it that are absent are missing."""
        pat = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix) + "$")
        idx = sorted(int(m.group(1)) for k in self.state if (m := pat.match(k)))
        if not idx:
            raise CheckpointError(f"{self.path}: no {prefix}<i>{suffix} tensors: not a {self.fmt.title} "
                                  f"(found keys like {sorted(self.state)[:4]})")
        gaps = sorted(set(range(idx[-1] + 1)) - set(idx))
        if gaps:
            self.missing += [f"{prefix}{i}{suffix}" for i in gaps]
        return idx[-1] + 1

    def take(self, key: str) -> torch.Tensor | None:
        if key not in self.state:
            self.missing.append(key)
            return None
        self.used.add(key)
        return self.state[key]

    def has(self, key: str) -> bool:
        return key in self.state

    def check_complete(self, what: str) -> None:
        if self.missing:
            raise CheckpointError(f"{self.path}: missing {len(self.missing)} tensor(s) of a {what} "
                                  f"({self.fmt.name}): {', '.join(self.missing[:6])}")
        extra = sorted(set(self.state) - self.used)
        if extra:
            raise CheckpointError(f"{self.path}: {len(extra)} unexpected tensor(s) for a {what} ({self.fmt.name}): "
                                  f"{', '.join(extra[:6])}; is it another architecture?")


def _conv_shape(w: torch.Tensor | None, key: str, path: Path) -> tuple[int, int, int]:
    """(out, in, k) of a square odd 2-D convolution kernel."""
    if w is None:
        raise CheckpointError(f"{path}: no {key}: not a complete checkpoint of this format")
    if w.ndim != 4 or w.shape[2] != w.shape[3] or w.shape[2] % 2 == 0:
        raise CheckpointError(f"{path}: {key} should be a square odd 2-D convolution kernel (out, in, k, k); "
                              f"got shape {tuple(w.shape)}")
    return int(w.shape[0]), int(w.shape[1]), int(w.shape[2])


# -- layouts -> (ModelConfig, {gahb key: tensor}) ----------------------------------------------------
def _layers(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of a gahb network's convolutions (incl. transposed) and BF-BN layers, in forward order."""
    convs = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    bns = [n for n, m in model.named_modules() if isinstance(m, BFBatchNorm2d)]
    return convs, bns


def _bfcnn(r: Reader, n_conv: int, conv_key, sd_of, gamma_of, first_layer_linear: bool):
    """A BF-CNN of ``n_conv`` convolutions: conv i's kernel is ``conv_key(i)``, BN j's running sd and
    gain are ``sd_of(j)`` and ``gamma_of(j)`` (tensors taken from ``r``)."""
    width, channels, k = _conv_shape(r.state.get(conv_key(0)), conv_key(0), r.path)
    cfg = ModelConfig(arch="bfcnn", channels=channels, width=width, num_layers=n_conv, kernel_size=k,
                      first_layer_linear=first_layer_linear)
    convs, bns = _layers(build_model(cfg))
    out = {f"{c}.weight": r.take(conv_key(i)) for i, c in enumerate(convs)}
    for j, b in enumerate(bns):
        out[f"{b}.running_sd"] = sd_of(j)
        out[f"{b}.gammas"] = gamma_of(j)
    return cfg, out, {"num_layers": n_conv, "width": width, "channels": channels, "kernel_size": k,
                      "first_layer_linear": first_layer_linear}


def _from_uip(r: Reader, options: dict):
    return _bfcnn(r, r.count("conv_layers.", ".weight"), lambda i: f"conv_layers.{i}.weight",
                  lambda j: r.take(f"running_sd.{j}"), lambda j: r.take(f"gammas.{j}"), first_layer_linear=False)


def _from_gahb_bfcnn(r: Reader, options: dict):
    linear = options.get("first_layer_linear")
    linear = GAHB_DEFAULTS["first_layer_linear"] if linear is None else bool(linear)
    cfg, out, arch = _bfcnn(r, r.count("conv_layers.", ".weight"), lambda i: f"conv_layers.{i}.weight",
                            lambda j: r.take(f"BN_layers.{j}.running_sd"), lambda j: r.take(f"BN_layers.{j}.gammas"),
                            first_layer_linear=linear)
    arch["first_layer_linear_source"] = ("option" if options.get("first_layer_linear") is not None else
                                         "official main.py default (not stored in a state_dict)")
    return cfg, out, arch


def _from_bfd(r: Reader, options: dict):
    if r.has("first_layer.bias") or r.has("hidden_layer_list.0.bias"):
        raise CheckpointError(f"{r.path}: its convolutions have biases: a biased DnCNN, not the bias-free one "
                              "(pretrained/dncnn/bias_free/ in bias_free_denoising); gahb imports bias-free networks")
    n_conv = r.count("hidden_layer_list.", ".weight") + 2
    eps = EPS

    def conv_key(i: int) -> str:
        return "first_layer.weight" if i == 0 else "last_layer.weight" if i == n_conv - 1 else \
            f"hidden_layer_list.{i - 1}.weight"

    def running_sd(j: int):
        for unused in ("bias", "running_mean", "num_batches_tracked"):  # not used by its eval-mode map
            if r.has(f"bn_layer_list.{j}.{unused}"):
                r.take(f"bn_layer_list.{j}.{unused}")
        var = r.take(f"bn_layer_list.{j}.running_var")
        if var is None:
            return None
        if (var < 0).any():
            raise CheckpointError(f"{r.path}: bn_layer_list.{j}.running_var has negative entries")
        return (var.double().sqrt() + eps).float().reshape(1, -1, 1, 1)

    def gamma(j: int):
        w = r.take(f"bn_layer_list.{j}.weight")
        return None if w is None else w.reshape(1, -1, 1, 1)

    cfg, out, arch = _bfcnn(r, n_conv, conv_key, running_sd, gamma, first_layer_linear=False)
    return cfg, out, {**arch, "bn_eval_scale": f"weight / (sqrt(running_var) + {eps:g}), stored as gamma / running_sd"}


def _block(r: Reader, prefix: str) -> tuple[list[str], list[str]]:
    """Source keys of a Sequential's convolutions and BF-BN layers, in index order."""
    idx = sorted({int(m.group(1)) for k in r.state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))})
    convs = [f"{prefix}{i}.weight" for i in idx if f"{prefix}{i}.weight" in r.state]
    bns = [f"{prefix}{i}" for i in idx if f"{prefix}{i}.running_sd" in r.state or f"{prefix}{i}.gammas" in r.state]
    return convs, bns


def _from_gahb_unet(r: Reader, options: dict):
    blocks = sorted({int(m.group(1)) for k in r.state if (m := re.match(r"encoder\.(\d+)\.", k))})
    if not blocks or blocks != list(range(len(blocks))):
        raise CheckpointError(f"{r.path}: no encoder.0 ... encoder.B blocks: not a {r.fmt.title}")
    nb = len(blocks)
    enc0, _ = _block(r, "encoder.0.")
    width, channels, k = _conv_shape(r.state.get(enc0[0] if enc0 else ""), "encoder.0.0.weight", r.path)
    counts = {"enc_convs": len(_block(r, f"encoder.{nb - 1}.")[0]), "mid_convs": len(_block(r, "mid_block.")[0]),
              "dec_convs": len(_block(r, f"decoder.{nb - 1}.")[0] if nb > 1 else _block(r, "decoder.0.")[0])}
    for key, n in counts.items():
        given = options.get(key)
        if given is not None and int(given) != n:
            raise CheckpointError(f"{r.path}: the state_dict has {n} convolutions per block where {key}={given} "
                                  "was asked for")
    pool = int(options.get("pool_window") or GAHB_DEFAULTS["pool_window"])
    try:
        cfg = ModelConfig(arch="unet", channels=channels, width=width, num_blocks=nb, kernel_size=k, pad_mode="reflect",
                          pool_window=pool, **counts)
        template = build_model(cfg)
    except ValueError as exc:
        raise CheckpointError(f"{r.path}: not a UNet gahb can build ({exc})") from None
    pairs = [(f"encoder.{b}.", template.encoder[b]) for b in range(nb)] + [("mid_block.", template.mid)]
    pairs += [(f"decoder.{b}.", template.decoder[nb - 1 - b]) for b in range(nb)]
    out = {}
    for prefix, block in pairs:
        src_convs, src_bns = _block(r, prefix)
        dst_convs, dst_bns = _layers(block)
        gname = next(n for n, m in template.named_modules() if m is block)
        if len(src_convs) != len(dst_convs) or len(src_bns) != len(dst_bns):
            raise CheckpointError(f"{r.path}: {prefix.rstrip('.')} holds {len(src_convs)} convolution(s) and "
                                  f"{len(src_bns)} BF-BN layer(s); a UNet with {counts} needs {len(dst_convs)} and "
                                  f"{len(dst_bns)}")
        for s, d in zip(src_convs, dst_convs):
            out[f"{gname}.{d}.weight"] = r.take(s)
        for s, d in zip(src_bns, dst_bns):
            out[f"{gname}.{d}.running_sd"] = r.take(f"{s}.running_sd")
            out[f"{gname}.{d}.gammas"] = r.take(f"{s}.gammas")
    for b in range(nb):
        out[f"up.{nb - 1 - b}.weight"] = r.take(f"upsample.{b}.weight")
    return cfg, out, {"num_blocks": nb, "width": width, "channels": channels, "kernel_size": k, **counts,
                      "pool_window": pool, "pool_window_source": "option" if options.get("pool_window") else
                      "official main.py default (not stored in a state_dict)"}


CONVERTERS = {"uip-bfcnn": _from_uip, "bfd-dncnn": _from_bfd, "gahb-unet": _from_gahb_unet,
              "gahb-bfcnn": _from_gahb_bfcnn}


