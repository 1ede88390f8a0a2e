"""Released-weight format: ``model.safetensors`` + ``config.json`` in a run folder, and ``model_ema.safetensors``.

``config.json`` holds at least ``{"model": ModelConfig.to_dict(), ...}``; the training loop adds
data, split, seed and version information. A run that kept an exponential moving average of its
weights (:mod:`gahb.training.ema`) also holds ``model_ema.safetensors``, named by ``config.json``'s
``"ema"`` entry; :func:`load_denoiser` returns it by default. Training *state* for resuming lives
elsewhere (see :mod:`gahb.training.run_dir`); these files are all that inference needs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from gahb.models import ModelConfig, build_model
from gahb.utils.io import CorruptFileError, _atomic, atomic_write_json, read_json

WEIGHTS_NAME = "model.safetensors"
EMA_WEIGHTS_NAME = "model_ema.safetensors"
CONFIG_NAME = "config.json"
WEIGHTS = ("ema", "raw")  # load_denoiser's choices


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


def save_release(model: nn.Module, run_dir: str | os.PathLike, config: dict, ema: nn.Module | None = None) -> None:
    """Write ``model.safetensors``, ``model_ema.safetensors`` (``ema``; without it a stale one is deleted)
    and ``config.json``, in this order: a current ``config.json`` means current weights."""
    run_dir = Path(run_dir)
    save_weights(model, run_dir / WEIGHTS_NAME)
    if ema is not None:
        save_weights(ema, run_dir / EMA_WEIGHTS_NAME)
        config = {**config, "ema": {**(config.get("ema") or {}), "file": EMA_WEIGHTS_NAME}}
    else:
        (run_dir / EMA_WEIGHTS_NAME).unlink(missing_ok=True)
        if config.get("ema"):
            config = {**config, "ema": None}
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


def _choose(path: Path, weights_path: Path, config: dict, weights: str) -> tuple[Path, str]:
    """The file to load and which weights it holds ("ema" or "raw")."""
    ema = config.get("ema")
    ema_file = weights_path.parent / (ema or {}).get("file", EMA_WEIGHTS_NAME)
    if not path.is_dir():  # a weights file named explicitly: that file
        kind = "ema" if ema and weights_path.resolve() == ema_file.resolve() else "raw"
        if weights == "raw" and kind == "ema":
            raise ValueError(f"{path} holds the EMA weights but the raw weights were asked for; "
                             f"give the run folder or its {WEIGHTS_NAME}")
        return weights_path, kind
    if weights == "raw" or not ema:  # imported and older checkpoints have only their raw weights
        return weights_path, "raw"
    if not ema_file.exists():
        raise FileNotFoundError(f"{CONFIG_NAME} in {path} names EMA weights {ema_file.name}, which are missing; "
                                "load the raw weights instead (--raw-weights, weights='raw')")
    return ema_file, "ema"


def load_denoiser(path: str | os.PathLike, device: str | torch.device = "cpu",
                  weights: str = "ema") -> tuple[nn.Module, dict]:
    """Load a trained denoiser from a run folder (or one of its weight files), in **eval mode**.

    ``weights``: ``"ema"`` loads the run's exponential moving average of the weights
    (``model_ema.safetensors``, :mod:`gahb.training.ema`) when it kept one, else its only weights
    (imported checkpoints, runs without EMA); ``"raw"`` loads the weights training left. A weights
    file given as ``path`` is loaded as is. The returned config dict says what was loaded:
    ``config["weights"]`` is ``"ema"`` or ``"raw"``, ``config["weights_file"]`` the file.

    Eval mode matters: BF-BN then uses its running standard deviation, the network is a fixed
    function of its input and f(y) = J(y) y holds.
    Returns ``(model, config_dict)``.
    """
    from safetensors.torch import load_file

    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    path = Path(path)
    weights_path, cfg_path = _find(path)
    config = read_json(cfg_path)
    if "model" not in config:
        raise ValueError(f"{cfg_path} has no 'model' section")
    weights_path, kind = _choose(path, weights_path, config, weights)
    model = build_model(ModelConfig.from_dict(config["model"]))
    try:
        state = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error type for a torn or foreign file
        raise CorruptFileError(f"{weights_path} cannot be read as safetensors weights (truncated or corrupted?): "
                               f"{exc}") from None
    model.load_state_dict(_clean_state_dict(state))
    model.to(device).eval()
    return model, {**config, "weights": kind, "weights_file": str(weights_path)}
