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

from .bfbn import EPS
from .config import ModelConfig, build_model


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
# The official GAHB main.py defaults for choices a state_dict does not reveal.
GAHB_DEFAULTS = {"first_layer_linear": False, "pool_window": 2}


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint of the requested format; the message names both."""


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
    keys = {_strip(k) for k in obj if isinstance(k, str)}
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


def _strip(key: str) -> str:
    while key.startswith("module."):  # nn.DataParallel / DDP
        key = key[len("module."):]
    return key


class _Reader:
    """Takes tensors out of a source state_dict by name, remembering what was missing or left over."""

    def __init__(self, state: dict, path: Path, fmt: Format):
        self.path, self.fmt = path, fmt
        bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
        if bad or not state:
            raise CheckpointError(f"{path}: expected a state_dict of named tensors for a {fmt.title}; "
                                  f"got {len(state)} entries" + (f", e.g. {bad[0]!r}" if bad else ""))
        self.state = {_strip(k): v for k, v in state.items()}
        self.used: set[str] = set()
        self.missing: list[str] = []

    def indices(self, prefix: str, suffix: str) -> list[int]:
        pat = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix) + "$")
        found = sorted(int(m.group(1)) for k in self.state if (m := pat.match(k)))
        if not found:
            raise CheckpointError(f"{self.path}: no {prefix}<i>{suffix} tensors: not a {self.fmt.title} "
                                  f"(found keys like {sorted(self.state)[:4]})")
        return found

    def count(self, prefix: str, suffix: str) -> int:
        idx = self.indices(prefix, suffix)
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
    from .bfbn import BFBatchNorm2d

    convs = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    bns = [n for n, m in model.named_modules() if isinstance(m, BFBatchNorm2d)]
    return convs, bns


def _bfcnn(r: _Reader, n_conv: int, conv_key, sd_of, gamma_of, first_layer_linear: bool):
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


def _from_uip(r: _Reader, options: dict):
    return _bfcnn(r, r.count("conv_layers.", ".weight"), lambda i: f"conv_layers.{i}.weight",
                  lambda j: r.take(f"running_sd.{j}"), lambda j: r.take(f"gammas.{j}"), first_layer_linear=False)


def _from_gahb_bfcnn(r: _Reader, options: dict):
    linear = options.get("first_layer_linear")
    linear = GAHB_DEFAULTS["first_layer_linear"] if linear is None else bool(linear)
    cfg, out, arch = _bfcnn(r, r.count("conv_layers.", ".weight"), lambda i: f"conv_layers.{i}.weight",
                            lambda j: r.take(f"BN_layers.{j}.running_sd"), lambda j: r.take(f"BN_layers.{j}.gammas"),
                            first_layer_linear=linear)
    arch["first_layer_linear_source"] = ("option" if options.get("first_layer_linear") is not None else
                                         "official main.py default (not stored in a state_dict)")
    return cfg, out, arch


def _from_bfd(r: _Reader, options: dict):
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


def _block(r: _Reader, prefix: str) -> tuple[list[str], list[str]]:
    """Source keys of a Sequential's convolutions and BF-BN layers, in index order."""
    idx = sorted({int(m.group(1)) for k in r.state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))})
    convs = [f"{prefix}{i}.weight" for i in idx if f"{prefix}{i}.weight" in r.state]
    bns = [f"{prefix}{i}" for i in idx if f"{prefix}{i}.running_sd" in r.state or f"{prefix}{i}.gammas" in r.state]
    return convs, bns


def _from_gahb_unet(r: _Reader, options: dict):
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
    reader = _Reader(state, path, fmt)
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

