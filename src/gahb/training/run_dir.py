"""The run folder of a training run and its resume protocol.

Files in a run folder, written only by rank 0:

``metrics.jsonl``
    One JSON line per evaluation (step 0, per epoch or every ``eval_every`` steps, and the end),
    appended and flushed; a torn last line is skipped on reading.
``state.pt``
    Everything needed to continue (:func:`trainer_state`, :func:`restore_trainer`): weights,
    optimizer state, step/epoch/position within the epoch, the epoch's permutation, the states of
    every generator used, the partial loss accumulator.
``model.safetensors`` + ``model_ema.safetensors`` + ``config.json``
    The release (see :mod:`gahb.training.checkpoint`): weights, BF-BN running sds, the EMA weights
    with their recalibrated running sds (runs with an EMA, :mod:`gahb.training.ema`), architecture,
    the :class:`~gahb.training.config.TrainConfig`, data description, versions, progress and the
    latest metrics; all that inference needs.

``.lock``
    Held (``fcntl.flock``) by the process training into the folder, for as long as it runs: a second
    process stops with :class:`RunFolderBusy` before touching any file. The operating system releases
    it when its holder exits or dies, even by SIGKILL, so a killed run can be resumed at once.

The other files are written atomically (temporary file, fsync, rename), in this order at every
checkpoint: ``state.pt`` (which holds the EMA weights too), ``model.safetensors``,
``model_ema.safetensors``, ``config.json``. Every evaluation is followed by a checkpoint, and its
metrics line is appended first. ``state.pt`` is what a resume trusts; everything else is reconciled
with it:

1. temporary files left by a write torn by a kill (``.*.tmp``) are deleted;
2. the saved configuration, data and image shape are checked against the new call's
   (:meth:`RunDir.resume_error`);
3. metrics lines written after the checkpoint are dropped (they will be recomputed);
4. a release older than ``state.pt`` (a kill between the writes: ``config.json``, written last,
   records another step or another EMA setting) is rewritten from it, the EMA network recalibrated
   for the saved EMA weights exactly as before the kill.

Data order and training noise come from explicit ``torch.Generator`` objects whose states are in
``state.pt``, so a run killed at any moment and resumed from its last checkpoint performs the same
arithmetic as an uninterrupted run and, on the CPU with the same number of threads, ends with
bit-identical weights, optimizer state and metrics (timings aside).
"""

from __future__ import annotations

import glob
import json
import math
import os
import platform
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from gahb.models import ModelConfig, count_parameters
from gahb.utils.io import CorruptFileError, append_jsonl, atomic_save_torch, atomic_write_text, read_json

from .checkpoint import CONFIG_NAME, EMA_WEIGHTS_NAME, WEIGHTS_NAME, save_release
from .config import LEGACY_VALUES, RUNTIME_FIELDS, TrainConfig
from .ema import WeightEMA

if TYPE_CHECKING:
    from .loop import _Trainer

STATE_NAME = "state.pt"
METRICS_NAME = "metrics.jsonl"
LOCK_NAME = ".lock"
STATE_FORMAT = 1
RESUME_MODES = ("auto", "never", "require", "overwrite")

# Fault injection (kills in the middle of a write, torn temporary files) lives in the one place every
# file is written: gahb.utils.io._atomic (GAHB_TEST_KILL_AT_WRITE).


class RunFolderBusy(FileExistsError):
    """Another live process is training into this run folder (it holds the folder's lock)."""


def load_state(out_dir: str | os.PathLike) -> dict:
    """The training state of a run folder (CPU tensors); :class:`CorruptFileError` naming the file when it
    cannot be read (it is never replaced by a fresh run behind the caller's back)."""
    path = Path(out_dir) / STATE_NAME
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torn zip, foreign pickle (refused by weights_only), ...
        raise CorruptFileError(f"{path} cannot be read as a training state (truncated or corrupted?): {exc}. "
                               "Nothing was overwritten: restore it, or start over with --fresh") from None


def read_metrics(out_dir: str | os.PathLike) -> list[dict]:
    """Parsed ``metrics.jsonl`` records (a torn last line from a killed process is skipped)."""
    path = Path(out_dir) / METRICS_NAME
    out = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _config_diff(saved: dict, new: dict) -> list[str]:
    # A field added after a run was saved is absent from its dict. A field marked ``added`` compares
    # as the value such runs had (``before``: no EMA); any other as its default, which kept the old
    # behaviour. The defaults go through to_dict like ``new`` does, so tuples and nested configs
    # compare in the same form.
    defaults = {**TrainConfig().to_dict(), **LEGACY_VALUES}
    saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}
    if isinstance(saved.get("model"), dict):  # architecture fields added later: their defaults too
        saved["model"] = {**ModelConfig().to_dict(), **saved["model"]}
    keys = (set(saved) | set(new)) - RUNTIME_FIELDS
    return sorted(k for k in keys if saved.get(k) != new.get(k))


def trainer_state(t: _Trainer, acc_sum: torch.Tensor) -> dict:
    """The ``state.pt`` contents of a trainer: everything :func:`restore_trainer` needs to continue
    bit-identically. ``acc_sum`` is the loss accumulator summed over all ranks."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return {
        "format": STATE_FORMAT,
        "train_config": t.cfg.to_dict(),
        "data_fingerprint": t.fingerprint,
        "n_train": t.n_train,
        "image_shape": list(t.img_shape),
        "step": t.step,
        "epoch": t.epoch,
        "batch_in_epoch": t.batch_in_epoch,
        "perm": t.perm,
        "images_seen": t.images_seen,
        "finished": t.finished,
        "model": {k: v.detach().cpu() for k, v in t.model.state_dict().items()},
        **({"ema": t.ema.state_dict()} if t.ema is not None else {}),  # calibrated at this step (_checkpoint)
        "optimizer": t.opt.state_dict(),
        "rng": {"data": t.data_gen.get_state(), "noise": t.noise_gen.get_state().cpu(),
                "noise_device": t.noise_dev.type, "torch": torch.get_rng_state(), "cuda": cuda},
        "acc_sum": acc_sum,
        "acc_images": t.acc_images,
        "wall_time": t.wall_before + (time.perf_counter() - t.t_session),
        "last_metrics": t.last_metrics,
        "lr": t.last_lr,
        "world_size": t.ctx.world_size,
    }


def _versions() -> dict:
    from gahb import __version__

    return {"gahb": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "numpy": np.__version__}


def release_config(t: _Trainer) -> dict:
    """The ``config.json`` of a trainer's release (:func:`gahb.training.checkpoint.save_release`)."""
    d, cfg = t.data_info, t.cfg
    ema = None if t.ema is None else {"halflife_kimg": cfg.ema_halflife_kimg, "rampup_ratio": cfg.ema_rampup_ratio,
                                      "running_sd": f"recalibrated on {cfg.ema_bn_batches} training batches"}
    return {
        "model": cfg.model.to_dict(),
        "train": cfg.to_dict(),
        "data": d,
        "dataset": d.get("dataset"),
        "N": t.n_train,
        "subset": d.get("subset"),
        "seed": cfg.seed,
        "image_shape": list(t.img_shape),
        "n_test": 0 if t.test_cpu is None else len(t.test_cpu),
        "n_parameters": count_parameters(t.model),
        "schedule": asdict(t.sched),
        "progress": {"step": t.step, "total_steps": t.sched.total_steps,
                     "epoch": t.step / t.sched.steps_per_epoch, "finished": t.finished},
        "metrics": t.last_metrics,
        "ema": ema,
        "data_fingerprint": t.fingerprint,
        "device": str(t.dev),
        "world_size": t.ctx.world_size,
        "versions": _versions(),
    }


def restore_trainer(t: _Trainer, st: dict) -> str | None:
    """Load a checked state (:meth:`RunDir.resume_error`) into a freshly built trainer; an error message, or None."""
    if st.get("world_size", 1) != t.ctx.world_size and t.ctx.is_main:
        warnings.warn(f"resuming a run made with {st.get('world_size', 1)} process(es) on {t.ctx.world_size}: "
                      "BF-BN batch statistics change, so the result differs from an uninterrupted run", stacklevel=3)
    t.model.load_state_dict(st["model"])
    if t.ema is not None and st.get("ema") is not None:
        t.ema.load_state_dict(st["ema"], step=st["step"])
    elif t.ema is not None:  # --force onto a run without an EMA: the average starts from the current weights
        if t.ctx.is_main:
            warnings.warn("the saved run kept no EMA of its weights; it starts from the weights at step "
                          f"{st['step']}", stacklevel=3)
        t.ema = WeightEMA(t.model, t.cfg.ema_halflife_kimg, t.cfg.ema_rampup_ratio)
    t.opt.load_state_dict(st["optimizer"])
    t.data_gen.set_state(st["rng"]["data"])
    if st["rng"].get("noise_device", "cpu") == t.noise_dev.type:
        t.noise_gen.set_state(st["rng"]["noise"].to(t.noise_gen.get_state().device))
    else:
        return "the run drew its training noise on another device type; resume with the same --noise-on-device setting"
    torch.set_rng_state(st["rng"]["torch"])
    t.step, t.epoch, t.batch_in_epoch = st["step"], st["epoch"], st["batch_in_epoch"]
    t.perm = st["perm"]
    if t.perm is not None and (len(t.perm) != t.sched.epoch_len or t.batch_in_epoch >= t.sched.steps_per_epoch):
        t.perm, t.batch_in_epoch = None, 0  # forced schedule change: start a new epoch
    t.images_seen = st["images_seen"]
    if t.ctx.is_main:  # the saved accumulator is already the all-rank total
        t.acc_sum = st["acc_sum"].to(t.dev)
    t.acc_images = st["acc_images"]
    t.wall_before = st["wall_time"]
    t.last_metrics = st.get("last_metrics")
    t.last_lr = st.get("lr", t.last_lr)
    t.finished = t.step >= t.sched.total_steps
    return None


class RunDir:
    """One run folder: preparing it, checking a saved run against a new call, writing checkpoints."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.state_path = self.path / STATE_NAME
        self.metrics_path = self.path / METRICS_NAME
        self._lock = None

    def lock(self) -> None:
        """Take the folder's lock for this process (until :meth:`unlock` or the process ends), or raise
        :class:`RunFolderBusy` naming the holder. The lock is advisory (``fcntl.flock``): the OS drops it
        when the holder dies, however it dies; where ``fcntl`` does not exist (Windows) nothing is locked."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        if self._lock is not None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        fh = open(self.path / LOCK_NAME, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "a process"
            fh.close()
            raise RunFolderBusy(f"{self.path} is in use: {holder} is training into it (it holds "
                                f"{self.path / LOCK_NAME}); wait for it to end, or choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {platform.node()}\n")
        fh.flush()
        self._lock = fh

    def unlock(self) -> None:
        """Release the folder's lock (the lock file stays; it is free once no process holds it)."""
        if self._lock is not None:
            import fcntl

            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def prepare(self, mode: str) -> tuple[str, str]:
        """Create the folder and apply the resume ``mode`` (one of :data:`RESUME_MODES`).

        Returns ``("fresh" | "resume", "")``, or ``("exists" | "missing", message)`` for an error.
        """
        out = self.path
        out.mkdir(parents=True, exist_ok=True)
        release = [out / WEIGHTS_NAME, out / EMA_WEIGHTS_NAME, out / CONFIG_NAME]
        torn = list(map(Path, glob.glob(str(out / ".*.tmp"))))  # leftovers of writes torn by a kill
        if mode == "overwrite":
            for p in [self.state_path, self.metrics_path, *release, *torn]:
                if p.exists():
                    p.unlink()
            return "fresh", ""
        for p in torn:
            p.unlink()
        if self.state_path.exists():
            if mode == "never":
                return "exists", f"{out} already holds a training run ({STATE_NAME}); resume it or start fresh (--fresh)"
            return "resume", ""
        if mode == "require":
            return "missing", f"nothing to resume: {out} holds no {STATE_NAME}"
        if any(p.exists() for p in release):
            return "exists", (f"{out} holds model files but no training state ({STATE_NAME}), so it cannot be resumed; "
                             "use --fresh to overwrite it or choose another --out")
        if self.metrics_path.exists():  # a run killed before its first checkpoint
            self.metrics_path.unlink()
        return "fresh", ""

    def resume_error(self, st: dict, cfg: TrainConfig, n_train: int, image_shape: tuple, fingerprint: str,
                     force: bool) -> str | None:
        """Why the saved state ``st`` cannot continue with this configuration and data, or None.

        ``force`` accepts a changed configuration or different images of the same number and
        shape; a changed architecture, number or shape of images is always refused.
        """
        out = self.path
        if st.get("format") != STATE_FORMAT:
            return f"{self.state_path} has an unknown format {st.get('format')!r}"
        if st["n_train"] != n_train or tuple(st["image_shape"]) != image_shape:
            return (f"the run in {out} was trained on N={st['n_train']} images of shape "
                    f"{tuple(st['image_shape'])}, but N={n_train} images of shape {image_shape} were given; "
                    "use the same data, another --out, or --fresh")
        elif st["data_fingerprint"] != fingerprint and not force:
            return (f"the run in {out} was trained on different images (same N={n_train}, different content); "
                    "use the same data, another --out, or --fresh")
        diff = _config_diff(st["train_config"], cfg.to_dict())
        if diff and not force:
            detail = ", ".join(f"{k}: {st['train_config'].get(k)!r} -> {cfg.to_dict().get(k)!r}" for k in diff)
            return (f"the run in {out} was started with a different configuration ({detail}); "
                    "pass the same settings, --force to continue with the new ones, or --fresh to start over")
        if diff and "model" in diff:
            return f"cannot resume {out} with a different architecture, even with --force"
        return None

    def truncate_metrics(self, step: int) -> None:
        """Drop records written after the checkpoint of ``step`` (they will be recomputed)."""
        if not self.metrics_path.exists():
            return
        keep = [r for r in read_metrics(self.path) if r.get("step", math.inf) <= step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in keep))

    def append_metrics(self, record: dict) -> None:
        append_jsonl(self.metrics_path, record)

    def release_is_current(self, step: int, ema: bool = False) -> bool:
        """Whether the release was written at ``step``, with EMA weights exactly when ``ema``."""
        try:
            cfg = read_json(self.path / CONFIG_NAME)
        except (OSError, ValueError):
            return False
        files = [WEIGHTS_NAME] + ([EMA_WEIGHTS_NAME] if ema else [])
        return (all((self.path / f).exists() for f in files) and cfg.get("progress", {}).get("step") == step
                and bool(cfg.get("ema")) == ema and (ema or not (self.path / EMA_WEIGHTS_NAME).exists()))

    def write_release(self, model: nn.Module, config: dict, ema: nn.Module | None = None) -> None:
        save_release(model, self.path, config, ema)

    def save_state(self, state: dict) -> None:
        """Write ``state.pt`` atomically: a kill leaves the previous one intact."""
        atomic_save_torch(self.state_path, state)

    def save_checkpoint(self, state: dict, model: nn.Module, release_config: dict, ema: nn.Module | None = None) -> None:
        """``state.pt`` first (what a resume trusts), then the release."""
        self.save_state(state)
        self.write_release(model, release_config, ema)
