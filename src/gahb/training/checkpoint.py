"""Released-weight format: ``model.safetensors`` + ``config.json`` in a run folder.

``config.json`` holds at least ``{"model": ModelConfig.to_dict(), ...}``; the training loop adds
data, split, seed and version information. Training *state* for resuming lives elsewhere
(see :mod:`gahb.training.run_dir`); these two files are all that inference needs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from gahb.models import ModelConfig, build_model
from gahb.utils.io import _atomic, atomic_write_json, read_json

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def strip_prefixes(key: str) -> str:
    """A state_dict key without wrappers' prefixes (DataParallel/DDP ``module.``, torch.compile ``_orig_mod.``)."""
    for prefix in ("module.", "_orig_mod."):
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _clean_state_dict(state: dict) -> dict:
    """Wrappers' prefixes stripped (:func:`strip_prefixes`), tensors detached, contiguous, on the CPU."""
    return {strip_prefixes(k): v.detach().contiguous().cpu() for k, v in state.items()}


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write the model's parameters and buffers (BF-BN ``running_sd`` included) as safetensors, atomically."""
    from safetensors.torch import save_file

    state = _clean_state_dict(model.state_dict())
    meta = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in (metadata or {}).items()}
    return _atomic(path, lambda tmp: save_file(state, tmp, metadata=meta))


def save_release(model: nn.Module, run_dir: str | os.PathLike, config: dict) -> None:
    """Write ``model.safetensors`` and ``config.json`` into ``run_dir``."""
    run_dir = Path(run_dir)
    save_weights(model, run_dir / WEIGHTS_NAME)
    atomic_write_json(run_dir / CONFIG_NAME, config)


def _find(path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(path)
    if path.is_dir():
        weights, cfg = path / WEIGHTS_NAME, path / CONFIG_NAME
    else:
        weights, cfg = path, path.parent / CONFIG_NAME
    if not weights.exists():
        raise FileNotFoundError(f"no weights at {weights} (expected a run folder holding {WEIGHTS_NAME})")
    if not cfg.exists():
        raise FileNotFoundError(f"no {CONFIG_NAME} beside {weights}: cannot tell the architecture")
    return weights, cfg


def load_denoiser(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load a trained denoiser from a run folder (or its ``model.safetensors``), in **eval mode**.

    Eval mode matters: BF-BN then uses its running standard deviation, the network is a fixed
    function of its input and f(y) = J(y) y holds.
    Returns ``(model, config_dict)``.
    """
    from safetensors.torch import load_file

    weights, cfg_path = _find(path)
    config = read_json(cfg_path)
    if "model" not in config:
        raise ValueError(f"{cfg_path} has no 'model' section")
    model = build_model(ModelConfig.from_dict(config["model"]))
    model.load_state_dict(_clean_state_dict(load_file(str(weights))))
    model.to(device).eval()
    return model, config
