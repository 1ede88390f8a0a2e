"""Published blind denoisers as gahb networks, weight for weight (``gahb import``).

The lab's public checkpoints come in four layouts. Each is read as data (the facts of its layout,
not its code) and mapped onto :class:`~gahb.models.BFCNN` or :class:`~gahb.models.UNet`, which then
compute the same function; every gahb tool taking ``--checkpoint`` accepts the run folder written.

==============  ==========================================================================  ========
format          source and layout                                                           returns
==============  ==========================================================================  ========
``uip-bfcnn``   universal_inverse_problem ``BF_CNN`` (Kadkhodaie & Simoncelli 2021): a      residual
                state_dict ``conv_layers.{i}.weight``, ``running_sd.{j}``, ``gammas.{j}``.
                conv0 -> ReLU; (L-2) x [conv -> / running_sd -> * gamma -> ReLU]; conv.
``bfd-dncnn``   bias_free_denoising (Mohan et al., ICLR 2020): a pickled dict whose          clean
                ``model[0]`` holds ``first_layer``, ``hidden_layer_list.{i}``,
                ``bn_layer_list.{i}`` (eval: weight * x / (sqrt(running_var) + 1e-5)),
                ``last_layer``; ``forward(y)`` returns y - net(y).
``gahb-unet``   the paper's code, ``UNet`` (``encoder.{b}``, ``mid_block``,                 residual
                ``upsample.{b}``, ``decoder.{b}``; optional ``module.`` prefix).
``gahb-bfcnn``  the paper's code, ``BF_CNN`` (``conv_layers.{i}``, ``BN_layers.{j}``).         residual
==============  ==========================================================================  ========

In eval mode every bias-free normalisation above is a per-channel scale, which gahb's BF-BN holds
as ``gamma / running_sd``: for ``bfd-dncnn`` ``running_sd = sqrt(running_var) + 1e-5`` reproduces
its eps-outside-the-root convention exactly (its batch mean and shift are unused there). Whether
the source returned the residual or the clean image, gahb's ``residual()`` is the source network's
last convolution and ``forward(y) = y - residual(y)`` (paper eq. 4 convention).

Loading never runs pickled code: ``torch.load(weights_only=True)`` with only the globals a format
needs allow-listed (``argparse.Namespace`` for ``bfd-dncnn``, none otherwise), and no fallback.
The mapping of each layout onto gahb's modules lives in :mod:`gahb.models.layouts`.
"""

from __future__ import annotations

import argparse
import pickle
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .config import build_model
from .layouts import CONVERTERS, GAHB_DEFAULTS, CheckpointError, Reader

__all__ = ["CONVERTERS", "FORMATS", "GAHB_DEFAULTS", "CheckpointError", "Format", "guess_format", "import_checkpoint",
           "load_file", "read_checkpoint"]


@dataclass(frozen=True)
class Format:
    """One published checkpoint layout."""

    name: str
    title: str
    repository: str
    example: str  # a path of such a file in its repository
    output: str  # what the source network's forward returns: "residual" or "clean"
    allowed_globals: tuple = ()


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("uip-bfcnn", "universal_inverse_problem BF-CNN state_dict",
           "LabForComputationalVision/universal_inverse_problem",
           "denoisers/BF_CNN/BSD400_gray/noise_range_0to100/model.pt", "residual"),
    Format("bfd-dncnn", "bias_free_denoising bias-free DnCNN checkpoint",
           "LabForComputationalVision/bias_free_denoising", "pretrained/dncnn/bias_free/0-100.pt", "clean",
           allowed_globals=(argparse.Namespace,)),
    Format("gahb-unet", "official GAHB code UNet model.pt",
           "LabForComputationalVision/memorization_generalization_in_diffusion_models",
           "denoisers/UNet/img_align_celeba_80x80/0to255_RF_90x90_set_size_99325/model.pt", "residual"),
    Format("gahb-bfcnn", "official GAHB code BF_CNN model.pt",
           "LabForComputationalVision/memorization_generalization_in_diffusion_models",
           "denoisers/BF_CNN/... (named in its README; no BF_CNN weights are published there)", "residual"),
)}
OUTPUT_CONVENTIONS = {
    "residual": "the source network returns the residual r(y) (its noise estimate); the clean estimate is y - r(y)",
    "clean": "the source module returns the clean estimate y - r(y), r being its last convolution's output",
}


# -- reading the file --------------------------------------------------------------------------------
def load_file(path: str | Path, fmt: Format | str) -> object:
    """``torch.load`` with ``weights_only=True`` and only ``fmt``'s allow-listed globals, on the CPU."""
    fmt = get_format(fmt)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        with torch.serialization.safe_globals(list(fmt.allowed_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        needed = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if needed or "weights only" in str(exc).lower():
            allowed = ", ".join(f"{g.__module__}.{g.__qualname__}" for g in fmt.allowed_globals) or "none"
            what = needed.group(1) if needed else "a Python object that is not a tensor or container"
            hint = ("; it may be a bias_free_denoising checkpoint (format bfd-dncnn)"
                    if what == "argparse.Namespace" and fmt.name != "bfd-dncnn" else "")
            raise CheckpointError(
                f"{path}: refused to unpickle: the file needs {what}, and a {fmt.name} checkpoint ({fmt.title}) "
                f"needs only tensors, containers and these globals: {allowed}. gahb never falls back to "
                f"unrestricted unpickling, which could run code stored in the file{hint}.") from None
        raise CheckpointError(f"{path}: not a readable PyTorch file ({exc}); expected a {fmt.title}") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({type(exc).__name__}: {exc}); "
                              f"the file may be truncated or not a {fmt.title}") from None


def guess_format(obj: object) -> str | None:
    """The format whose layout ``obj`` (a loaded checkpoint) has, or None."""
    if isinstance(obj, dict) and "model" in obj and "args" in obj:
        return "bfd-dncnn"
    if not isinstance(obj, dict):
        return None
    from gahb.training.checkpoint import strip_prefixes

    keys = {strip_prefixes(k) for k in obj if isinstance(k, str)}
    if any(k.startswith("encoder.") for k in keys) and any(k.startswith("mid_block.") for k in keys):
        return "gahb-unet"
    if "conv_layers.0.weight" in keys:
        if any(k.startswith("BN_layers.") for k in keys):
            return "gahb-bfcnn"
        if any(k.startswith("running_sd.") for k in keys):
            return "uip-bfcnn"
    return None


def get_format(fmt: Format | str) -> Format:
    if isinstance(fmt, Format):
        return fmt
    if fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint format {fmt!r}; choose one of {sorted(FORMATS)} (or auto)")
    return FORMATS[fmt]


# -- the public functions ------------------------------------------------------------------------------
def _source_state(obj: object, path: Path, fmt: Format) -> tuple[dict, dict]:
    """(state_dict, what the file says about its training) from a loaded checkpoint of ``fmt``."""
    if fmt.name != "bfd-dncnn":
        if not isinstance(obj, dict):
            raise CheckpointError(f"{path}: expected a state_dict (a dict of tensors) for a {fmt.title}; got "
                                  f"{type(obj).__name__}")
        if guess_format(obj) == "bfd-dncnn":
            raise CheckpointError(f"{path}: this is a bias_free_denoising checkpoint; import it as bfd-dncnn")
        return obj, {}
    if not (isinstance(obj, dict) and isinstance(obj.get("model"), (list, tuple)) and obj["model"]
            and isinstance(obj["model"][0], dict)):
        found = sorted(map(str, obj))[:4] if isinstance(obj, dict) else type(obj).__name__
        guess = guess_format(obj)
        raise CheckpointError(f"{path}: a {fmt.title} is a dict whose 'model' entry is a list holding the "
                              f"state_dict (keys step, model, optimizer, args, ...); found {found}"
                              + (f"; the keys look like format {guess}" if guess else ""))
    args = obj.get("args")
    info = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))} \
        if isinstance(args, argparse.Namespace) else {}
    if info.get("bias") is True:
        raise CheckpointError(f"{path}: its args say bias=True: a biased DnCNN; gahb imports bias-free networks")
    return obj["model"][0], {"args": info}


def _noise_range(path: Path, info: dict) -> dict | None:
    """The training noise range on the 0-255 scale, where the source states it."""
    args = info.get("args") or {}
    if isinstance(args.get("min_noise"), (int, float)) and isinstance(args.get("max_noise"), (int, float)):
        lo, hi = sorted((float(args["min_noise"]), float(args["max_noise"])))
        how = "the checkpoint's args (min_noise, max_noise)"
    else:
        m = re.search(r"(\d+)\s*(?:to|-)\s*(\d+)", path.name) or re.search(r"(\d+)to(\d+)", str(path))
        if not m:
            return None
        lo, hi = sorted((float(m.group(1)), float(m.group(2))))
        how = f"the file path ({m.group(0)!r}, the source repositories' naming)"
    return {"sigma_255": [lo, hi], "sigma": [lo / 255.0, hi / 255.0], "stated_by": how}


def read_checkpoint(fmt: Format | str, path: str | Path, **options) -> tuple[nn.Module, dict]:
    """A published checkpoint as an eval-mode gahb network computing the same function, and its provenance.

    The provenance dict records the format, the source file and its sha256, the source's output
    convention and pixel scale, the training noise range where the source states it, and the
    architecture (inferred from the keys, or the option given for what keys cannot tell).

    ``fmt`` is a name of :data:`FORMATS` or ``"auto"`` (guessed from the file's keys). ``options``:
    ``first_layer_linear`` (gahb-bfcnn), ``pool_window`` and ``enc_convs``/``mid_convs``/``dec_convs``
    (gahb-unet; the counts are read off the keys and only checked). Raises :class:`CheckpointError`
    with the file and the expected format named for anything that does not fit.
    """
    from gahb.utils.io import file_sha256

    path = Path(path)
    if fmt == "auto":
        obj = load_file(path, FORMATS["bfd-dncnn"])  # the widest allow-list of any format
        guessed = guess_format(obj)
        if guessed is None:
            raise CheckpointError(f"{path}: its layout matches none of {sorted(FORMATS)}; name the format")
        fmt = FORMATS[guessed]
        if guessed != "bfd-dncnn":
            obj = load_file(path, fmt)
    else:
        fmt = get_format(fmt)
        obj = load_file(path, fmt)
    unknown = set(options) - {"first_layer_linear", "pool_window", "enc_convs", "mid_convs", "dec_convs"}
    if unknown:
        raise ValueError(f"unknown import option(s) {sorted(unknown)}")
    state, info = _source_state(obj, path, fmt)
    guess = guess_format(state)
    if guess is not None and guess != fmt.name and fmt.name != "bfd-dncnn":
        raise CheckpointError(f"{path}: its keys are those of format {guess}, not {fmt.name} ({fmt.title})")
    reader = Reader(state, path, fmt)
    cfg, tensors, arch = CONVERTERS[fmt.name](reader, {k: v for k, v in options.items() if v is not None})
    what = f"{cfg.num_layers}-layer BF-CNN" if cfg.arch == "bfcnn" else f"{cfg.num_blocks}-block UNet"
    reader.check_complete(f"{what} of width {cfg.width}")
    model = build_model(cfg)
    target = model.state_dict()
    for key, value in tensors.items():
        if tuple(value.shape) != tuple(target[key].shape):
            raise CheckpointError(f"{path}: a tensor for {key} has shape {tuple(value.shape)}, but a {what} of width "
                                  f"{cfg.width} ({fmt.name}) needs {tuple(target[key].shape)}")
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    model.eval()
    model.gahb_config = cfg  # type: ignore[attr-defined]  # what import_checkpoint records
    provenance = {
        "format": fmt.name, "format_title": fmt.title, "source_repository": fmt.repository,
        "source_example_path": fmt.example, "source_file": str(path.resolve()),
        "source_sha256": file_sha256(path), "source_bytes": path.stat().st_size,
        "output_convention": fmt.output, "output_convention_text": OUTPUT_CONVENTIONS[fmt.output],
        "pixel_scale": [0.0, 1.0], "noise_range": _noise_range(path, info), "architecture": arch, **info,
    }
    return model, provenance


def import_checkpoint(fmt: Format | str, path: str | Path, out_dir: str | Path, *, overwrite: bool = False,
                      **options) -> tuple[Path, dict]:
    """Write ``out_dir/model.safetensors`` and ``out_dir/config.json`` for a published checkpoint.

    Everything is read and checked before anything is written, and the folder appears complete or
    not at all (written beside it, then renamed). An existing run folder is kept unless ``overwrite``.
    Returns ``(out_dir, config)``.
    """
    from gahb import __version__
    from gahb.training.checkpoint import CONFIG_NAME, WEIGHTS_NAME, save_release

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty (holds {sorted(p.name for p in out.iterdir())[:4]}); "
                              "choose another --out or pass --overwrite")
    model, provenance = read_checkpoint(fmt, path, **options)
    config = {"model": model.gahb_config.to_dict(), "imported": provenance, "gahb_version": __version__}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_release(model, tmp, config)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            out.replace(old / "run")
            tmp.replace(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.replace(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    assert (out / WEIGHTS_NAME).is_file() and (out / CONFIG_NAME).is_file()
    return out, config

