"""The training loop: blind denoising with fresh noise, tiled epochs, atomic checkpoints, exact resume.

What is optimised (paper eq. 4, App. A.1; spec section 4): for a batch of clean images x, one
noise level sigma per image from the configured law, y = x + sigma * n with n ~ N(0, I) drawn
afresh every time an image is seen, and the loss sum_pixels ||r(y) - sigma n||^2 / batch, where
r(y) = y - f(y) is the network's residual. Adam with default betas; the learning rate is halved
on the configured schedule.

Files in ``out_dir`` (all written atomically, only by rank 0):

``model.safetensors`` + ``config.json``
    The release (see :mod:`gahb.training.checkpoint`): weights, BF-BN running sds, architecture,
    the :class:`TrainConfig`, data description, versions, progress and the latest metrics.
``state.pt``
    Everything needed to continue: weights, optimizer state, step/epoch/position within the epoch,
    the epoch's permutation, the states of every generator used, the partial loss accumulator.
``metrics.jsonl``
    One line per evaluation (per epoch, or every ``eval_every`` steps, plus step 0 and the end).

Determinism: data order and training noise come from explicit ``torch.Generator`` objects whose
states are checkpointed, model initialisation from a seeded fork of the global generator, and the
evaluation noise from its own generator. A run killed at any moment and resumed from its last
checkpoint therefore performs the same arithmetic as an uninterrupted run and, on the CPU with the
same number of threads, ends with bit-identical weights.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
import platform
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gahb.models import ModelConfig, build_model, count_parameters
from gahb.utils.io import _atomic, append_jsonl, atomic_write_text, read_json

from .checkpoint import CONFIG_NAME, WEIGHTS_NAME, save_release
from .config import RUNTIME_FIELDS, Schedule, TrainConfig, lr_at, make_schedule
from .distributed import DistContext, init_distributed
from .evaluate import EvalSet
from .noise import denoising_loss, draw_noise, loss_weights

STATE_NAME = "state.pt"
METRICS_NAME = "metrics.jsonl"
STATE_FORMAT = 1
RESUME_MODES = ("auto", "never", "require", "overwrite")

# Hidden hooks for the kill-and-resume tests (a real SIGKILL at a chosen point of a real run).
_HOOK_KILL_AT_STEP = "GAHB_TRAIN_TEST_KILL_AT_STEP"  # SIGKILL self right after this optimizer step
_HOOK_KILL_IN_SAVE = "GAHB_TRAIN_TEST_KILL_IN_SAVE"  # SIGKILL self half-way through the k-th state write
_HOOK_STEP_SLEEP = "GAHB_TRAIN_TEST_STEP_SLEEP"  # seconds to sleep after every step


@dataclass
class TrainResult:
    out_dir: str
    step: int
    total_steps: int
    epoch: float  # completed epochs, fractional
    finished: bool
    already_finished: bool  # the call found a finished run and did nothing
    resumed_from: int | None  # step the call resumed from (None: fresh start)
    metrics: dict | None  # the latest evaluation record
    wall_time: float  # seconds, summed over all sessions of the run


# -- input checks ------------------------------------------------------------------------------


def validate_images(train: torch.Tensor, test: torch.Tensor | None, channels: int) -> None:
    """Clear errors for inputs that would train garbage or fail deep inside the loop."""
    for name, x in (("train_images", train), ("test_images", test)):
        if x is None:
            if name == "train_images":
                raise ValueError("train_images is required")
            continue
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(f"{name} must have shape (N, C, H, W); got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating point on the pixel scale [0, 1]; got dtype {x.dtype} "
                             "(divide uint8 images by 255)")
        if len(x) == 0:
            if name == "train_images":
                raise ValueError("train_images is empty (N = 0)")
            continue
        if x.shape[1] != channels:
            raise ValueError(f"{name} have {x.shape[1]} channel(s) but the model expects {channels} "
                             "(ModelConfig.channels); build the model with matching channels or convert the images")
        bad = ~torch.isfinite(x).flatten(1).all(1)
        if bool(bad.any()):
            idx = bad.nonzero().flatten()[:5].tolist()
            raise ValueError(f"{name} contain NaN or Inf values (in {int(bad.sum())} image(s), e.g. indices {idx}); "
                             "clean the data before training")
        lo, hi = float(x.min()), float(x.max())
        if lo < -0.5 or hi > 1.5:
            warnings.warn(f"{name} range [{lo:.3g}, {hi:.3g}] is far from the pixel scale [0, 1] the noise levels assume",
                          stacklevel=3)
    if test is not None and len(test) and test.shape[1:] != train.shape[1:]:
        warnings.warn(f"test images {tuple(test.shape[1:])} differ in size from training images {tuple(train.shape[1:])}",
                      stacklevel=3)


def data_fingerprint(x: torch.Tensor) -> str:
    """sha256 of the training tensor's float32 bytes: a resumed run must see the same data."""
    arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
    return hashlib.sha256(memoryview(arr).cast("B")).hexdigest()


def _seeds(seed: int) -> dict[str, int]:
    """Independent seeds for the four random streams of a run, all derived from ``seed``."""
    words = np.random.SeedSequence(int(seed)).generate_state(4, dtype=np.uint64)
    return {k: int(w) & ((1 << 63) - 1) for k, w in zip(("init", "data", "noise", "eval"), words)}


def _versions() -> dict:
    from gahb import __version__

    return {"gahb": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "numpy": np.__version__}


class _Residual(nn.Module):
    """What DDP/compile wrap: the residual r(y), the quantity the loss regresses onto the noise."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net.residual(y)


def _save_state(path: Path, state: dict, kill_now: bool = False) -> None:
    def write(tmp: str) -> None:
        torch.save(state, tmp)
        if kill_now:  # test hook: die with a torn temporary file on disk
            with open(tmp, "r+b") as fh:
                fh.truncate(os.path.getsize(tmp) // 2)
            os.kill(os.getpid(), signal.SIGKILL)

    _atomic(path, write)


def load_state(out_dir: str | os.PathLike) -> dict:
    """The training state of a run folder (CPU tensors)."""
    return torch.load(Path(out_dir) / STATE_NAME, map_location="cpu", weights_only=True)


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
    # A field added after a run was saved is absent from its dict; that run behaved as the
    # field's default, so it is compared as such (old runs stay reusable). The defaults go
    # through to_dict like ``new`` does, so tuples and nested configs compare in the same form.
    defaults = TrainConfig().to_dict()
    saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}
    if isinstance(saved.get("model"), dict):  # architecture fields added later: their defaults too
        saved["model"] = {**ModelConfig().to_dict(), **saved["model"]}
    keys = (set(saved) | set(new)) - RUNTIME_FIELDS
    return sorted(k for k in keys if saved.get(k) != new.get(k))


# -- the loop ----------------------------------------------------------------------------------


class _Trainer:
    def __init__(self, cfg: TrainConfig, ctx: DistContext, train_images, test_images, out_dir,
                 progress: bool, data_info: dict | None, resume: str, force: bool, stop_at_step: int | None):
        self.cfg, self.ctx = cfg, ctx
        self.dev = ctx.device
        self.out = Path(out_dir)
        self.progress = progress and ctx.is_main
        self.data_info = dict(data_info or {})
        self.resume_mode, self.force, self.stop_at_step = resume, force, stop_at_step
        self.train_cpu = train_images.detach().to("cpu", torch.float32).contiguous()
        self.test_cpu = None if test_images is None or len(test_images) == 0 else \
            test_images.detach().to("cpu", torch.float32).contiguous()
        self.n_train = len(self.train_cpu)
        self.img_shape = tuple(self.train_cpu.shape[1:])
        self.sched: Schedule = make_schedule(cfg, self.n_train)
        self.seeds = _seeds(cfg.seed)
        self.fingerprint = data_fingerprint(self.train_cpu)
        self.hooks = {k: os.environ.get(k) for k in (_HOOK_KILL_AT_STEP, _HOOK_KILL_IN_SAVE, _HOOK_STEP_SLEEP)}
        self._state_saves = 0
        self._check_runtime()

    # ---- setup ----------------------------------------------------------------------------
    def _check_runtime(self) -> None:
        cfg, dev = self.cfg, self.dev
        if cfg.bf16 and dev.type != "cuda":
            raise ValueError(f"bf16 autocast is only supported on CUDA here (device is {dev}); drop --bf16")
        if cfg.compile and dev.type != "cuda":
            raise ValueError(f"torch.compile is only enabled for CUDA training (device is {dev}); drop --compile")
        if self.ctx.active:
            ws = self.ctx.world_size
            if cfg.batch_size < ws:
                raise ValueError(f"batch_size {cfg.batch_size} is smaller than the number of processes {ws}")
            if self.sched.last_batch < ws:
                raise ValueError(
                    f"the last batch of each epoch holds {self.sched.last_batch} image(s), fewer than the {ws} "
                    "processes; change batch_size or images_per_epoch")

    def _build(self) -> None:
        cfg = self.cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seeds["init"])
            self.model = build_model(cfg.model)
        self.model.to(self.dev)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.data_gen = torch.Generator().manual_seed(self.seeds["data"])
        noise_dev = self.dev if (cfg.noise_on_device and self.dev.type == "cuda") else torch.device("cpu")
        self.noise_dev = noise_dev
        self.noise_gen = torch.Generator(device=noise_dev).manual_seed(self.seeds["noise"])
        # A dry forward of one image catches size/architecture mismatches before any work is done.
        self.model.eval()
        with torch.no_grad():
            try:
                self.model(self.train_cpu[:1].to(self.dev))
            except Exception as exc:
                raise ValueError(f"the model cannot process images of shape {self.img_shape}: {exc}") from exc
        self.model.train()
        # Training images live on the accelerator when they fit comfortably; indexing then stays there.
        self.train_dev = self.train_cpu
        if self.dev.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.dev)
            if self.train_cpu.numel() * 4 < 0.25 * free:
                self.train_dev = self.train_cpu.to(self.dev)
        self.eval_set = EvalSet(self.train_cpu, self.test_cpu, cfg.eval_images, cfg.eval_sigmas, cfg.noise,
                                cfg.sigma_max, self.seeds["eval"])
        net: nn.Module = _Residual(self.model)
        if self.ctx.active:
            from torch.nn.parallel import DistributedDataParallel as DDP

            net = DDP(net, device_ids=[self.dev.index] if self.dev.type == "cuda" else None)
        if cfg.compile:
            net = torch.compile(net)
        self.net = net
        # Progress counters (overwritten on resume).
        self.step = 0
        self.epoch = 0  # completed epochs
        self.batch_in_epoch = 0
        self.perm: torch.Tensor | None = None
        self.images_seen = 0
        self.acc_sum = torch.zeros((), dtype=torch.float32, device=self.dev)  # local sum of per-image losses
        self.acc_images = 0  # global images in the current logging interval
        self.wall_before = 0.0
        self.last_metrics: dict | None = None
        self.last_lr = lr_at(cfg, self.sched, 0)
        self.finished = False

    # ---- run folder preparation (rank 0 decides, everyone follows) -------------------------
    def _prepare_dir(self) -> tuple[str, str]:
        """Returns ("fresh" | "resume", "") or ("exists" | "missing", message) for an error."""
        out = self.out
        state = out / STATE_NAME
        release = [out / WEIGHTS_NAME, out / CONFIG_NAME]
        mode = self.resume_mode
        if mode == "overwrite":
            for p in [state, out / METRICS_NAME, *release, *map(Path, glob.glob(str(out / ".*.tmp")))]:
                if p.exists():
                    p.unlink()
            return "fresh", ""
        for p in map(Path, glob.glob(str(out / ".*.tmp"))):  # leftovers of writes torn by a kill
            p.unlink()
        if state.exists():
            if mode == "never":
                return "exists", f"{out} already holds a training run ({STATE_NAME}); resume it or start fresh (--fresh)"
            return "resume", ""
        if mode == "require":
            return "missing", f"nothing to resume: {out} holds no {STATE_NAME}"
        if any(p.exists() for p in release):
            return "exists", (f"{out} holds model files but no training state ({STATE_NAME}), so it cannot be resumed; "
                             "use --fresh to overwrite it or choose another --out")
        if (out / METRICS_NAME).exists():  # a run killed before its first checkpoint
            (out / METRICS_NAME).unlink()
        return "fresh", ""

    def _load(self) -> str | None:
        """Restore from state.pt. Returns an error message, or None."""
        st = load_state(self.out)
        if st.get("format") != STATE_FORMAT:
            return f"{self.out / STATE_NAME} has an unknown format {st.get('format')!r}"
        if st["n_train"] != self.n_train or tuple(st["image_shape"]) != self.img_shape:
            return (f"the run in {self.out} was trained on N={st['n_train']} images of shape "
                    f"{tuple(st['image_shape'])}, but N={self.n_train} images of shape {self.img_shape} were given; "
                    "use the same data, another --out, or --fresh")
        elif st["data_fingerprint"] != self.fingerprint and not self.force:
            return (f"the run in {self.out} was trained on different images (same N={self.n_train}, different content); "
                    "use the same data, another --out, or --fresh")
        diff = _config_diff(st["train_config"], self.cfg.to_dict())
        if diff and not self.force:
            detail = ", ".join(f"{k}: {st['train_config'].get(k)!r} -> {self.cfg.to_dict().get(k)!r}" for k in diff)
            return (f"the run in {self.out} was started with a different configuration ({detail}); "
                    "pass the same settings, --force to continue with the new ones, or --fresh to start over")
        if diff and "model" in diff:
            return f"cannot resume {self.out} with a different architecture, even with --force"
        if st.get("world_size", 1) != self.ctx.world_size and self.ctx.is_main:
            warnings.warn(f"resuming a run made with {st.get('world_size', 1)} process(es) on {self.ctx.world_size}: "
                          "BF-BN batch statistics change, so the result differs from an uninterrupted run", stacklevel=2)
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        self.data_gen.set_state(st["rng"]["data"])
        if st["rng"].get("noise_device", "cpu") == self.noise_dev.type:
            self.noise_gen.set_state(st["rng"]["noise"].to(self.noise_gen.get_state().device))
        else:
            return "the run drew its training noise on another device type; resume with the same --noise-on-device setting"
        torch.set_rng_state(st["rng"]["torch"])
        self.step, self.epoch, self.batch_in_epoch = st["step"], st["epoch"], st["batch_in_epoch"]
        self.perm = st["perm"]
        if self.perm is not None and (len(self.perm) != self.sched.epoch_len
                                      or self.batch_in_epoch >= self.sched.steps_per_epoch):
            self.perm, self.batch_in_epoch = None, 0  # forced schedule change: start a new epoch
        self.images_seen = st["images_seen"]
        if self.ctx.is_main:  # the saved accumulator is already the all-rank total
            self.acc_sum = st["acc_sum"].to(self.dev)
        self.acc_images = st["acc_images"]
        self.wall_before = st["wall_time"]
        self.last_metrics = st.get("last_metrics")
        self.last_lr = st.get("lr", self.last_lr)
        self.finished = self.step >= self.sched.total_steps
        return None

    def _truncate_metrics(self) -> None:
        """Drop records written after the checkpoint we resume from (they will be recomputed)."""
        path = self.out / METRICS_NAME
        if not path.exists():
            return
        keep = [r for r in read_metrics(self.out) if r.get("step", math.inf) <= self.step]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))

    # ---- one optimizer step ----------------------------------------------------------------
    def _train_step(self) -> int:
        cfg, sched, ctx = self.cfg, self.sched, self.ctx
        if self.batch_in_epoch == 0 and self.perm is None:
            self.perm = torch.randperm(sched.epoch_len, generator=self.data_gen)
        bs = cfg.batch_size
        idx = self.perm[self.batch_in_epoch * bs : (self.batch_in_epoch + 1) * bs] % self.n_train
        b = len(idx)
        sigmas, z = draw_noise((b, *self.img_shape), cfg.noise, cfg.sigma_max, self.noise_gen, self.noise_dev)
        sl = ctx.shard(b)
        x = self.train_dev[idx[sl].to(self.train_dev.device)].to(self.dev, non_blocking=True)
        z = z[sl].to(self.dev, non_blocking=True)
        w = loss_weights(sigmas[sl].to(self.dev), cfg.loss_weight, cfg.loss_sigma_floor, cfg.loss_eps_sigma)
        y = x + z
        if cfg.channels_last:
            y = y.contiguous(memory_format=torch.channels_last)
        lr = lr_at(cfg, sched, self.step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if cfg.bf16 else contextlib.nullcontext()
        with amp:
            r = self.net(y)
        local_sum = denoising_loss(r, z, batch_size=1, weights=w)
        # Each rank's share of the global loss, times world size: DDP's gradient average is then
        # exactly the gradient of sum_batch w ||r - z||^2 / global_batch.
        loss = local_sum * (ctx.world_size / b)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.acc_sum += local_sum.detach()
        self.acc_images += b
        self.images_seen += b
        self.last_lr = lr
        self.step += 1
        self.batch_in_epoch += 1
        if self.batch_in_epoch == sched.steps_per_epoch:
            self.epoch += 1
            self.batch_in_epoch = 0
            self.perm = None
        return b

    def _recalibrate_bn(self) -> None:
        """The final weights' BF-BN statistics (TrainConfig.bn_recalibration_batches). Its batches come
        from a generator of their own (seed + 2**20), so the training streams and resume are unaffected;
        a run killed before the final checkpoint redoes the last steps and this, identically."""
        k = self.cfg.bn_recalibration_batches
        if not k:
            return
        from gahb.training.bn_stats import recalibrate_bn

        recalibrate_bn(self.model, self.train_cpu, batches=k, batch_size=self.cfg.batch_size, noise=self.cfg.noise,
                       sigma_max=self.cfg.sigma_max, seed=self.cfg.seed + 2**20)
        self.model.train()

    # ---- logging and checkpoints -----------------------------------------------------------
    def _global_acc(self) -> float:
        t = self.ctx.all_reduce_sum(self.acc_sum.detach().clone())
        return float(t)

    def _evaluate(self, rate: float | None) -> dict:
        acc = self._global_acc()
        train_loss = acc / self.acc_images if self.acc_images else None
        if train_loss is not None and not math.isfinite(train_loss):
            raise FloatingPointError(
                f"training diverged: the loss is {train_loss} at step {self.step}; lower the learning rate "
                "(the last checkpoint is intact)")
        rec = None
        if self.ctx.is_main:
            rec = {
                "step": self.step,
                "epoch": self.step / self.sched.steps_per_epoch,
                "images_seen": self.images_seen,
                "lr": self.last_lr,
                "train_loss": train_loss,
            }
            rec.update(self.eval_set.evaluate(self.model, self.dev))
            rec["images_per_s"] = rate
            rec["wall_time"] = self.wall_before + (time.perf_counter() - self.t_session)
            append_jsonl(self.out / METRICS_NAME, rec)
        rec = self.ctx.broadcast_object(rec)
        self.acc_sum.zero_()
        self.acc_images = 0
        self.last_metrics = rec
        return rec

    def _release_config(self) -> dict:
        d = self.data_info
        return {
            "model": self.cfg.model.to_dict(),
            "train": self.cfg.to_dict(),
            "data": d,
            "dataset": d.get("dataset"),
            "N": self.n_train,
            "subset": d.get("subset"),
            "seed": self.cfg.seed,
            "image_shape": list(self.img_shape),
            "n_test": 0 if self.test_cpu is None else len(self.test_cpu),
            "n_parameters": count_parameters(self.model),
            "schedule": asdict(self.sched),
            "progress": {"step": self.step, "total_steps": self.sched.total_steps,
                         "epoch": self.step / self.sched.steps_per_epoch, "finished": self.finished},
            "metrics": self.last_metrics,
            "data_fingerprint": self.fingerprint,
            "device": str(self.dev),
            "world_size": self.ctx.world_size,
            "versions": _versions(),
        }

    def _checkpoint(self) -> None:
        acc = torch.tensor(self._global_acc(), dtype=torch.float32)
        if self.ctx.is_main:
            cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
            state = {
                "format": STATE_FORMAT,
                "train_config": self.cfg.to_dict(),
                "data_fingerprint": self.fingerprint,
                "n_train": self.n_train,
                "image_shape": list(self.img_shape),
                "step": self.step,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "perm": self.perm,
                "images_seen": self.images_seen,
                "finished": self.finished,
                "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "optimizer": self.opt.state_dict(),
                "rng": {"data": self.data_gen.get_state(), "noise": self.noise_gen.get_state().cpu(),
                        "noise_device": self.noise_dev.type, "torch": torch.get_rng_state(), "cuda": cuda},
                "acc_sum": acc,
                "acc_images": self.acc_images,
                "wall_time": self.wall_before + (time.perf_counter() - self.t_session),
                "last_metrics": self.last_metrics,
                "lr": self.last_lr,
                "world_size": self.ctx.world_size,
            }
            self._state_saves += 1
            kill = self.hooks[_HOOK_KILL_IN_SAVE] is not None and self._state_saves == int(self.hooks[_HOOK_KILL_IN_SAVE])
            # state.pt first: it is what a resume trusts; the release is rewritten from it if stale.
            _save_state(self.out / STATE_NAME, state, kill_now=kill)
            save_release(self.model, self.out, self._release_config())
        self.ctx.barrier()

    def _release_is_current(self) -> bool:
        try:
            cfg = read_json(self.out / CONFIG_NAME)
        except (OSError, ValueError):
            return False
        return (self.out / WEIGHTS_NAME).exists() and cfg.get("progress", {}).get("step") == self.step

    def _result(self, already: bool, resumed_from: int | None) -> TrainResult:
        wall = self.wall_before + (time.perf_counter() - self.t_session) if not already else self.wall_before
        return TrainResult(str(self.out), self.step, self.sched.total_steps, self.step / self.sched.steps_per_epoch,
                           self.finished, already, resumed_from, self.last_metrics, wall)

    def _say(self, msg: str) -> None:
        if self.ctx.is_main and self.progress:
            print(msg, file=sys.stderr, flush=True)

    # ---- main ------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg, sched, ctx = self.cfg, self.sched, self.ctx
        self.t_session = time.perf_counter()
        self._build()
        decision = ("", "")
        if ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            decision = self._prepare_dir()
        kind, msg = ctx.broadcast_object(decision)
        if kind == "exists":
            raise FileExistsError(msg)
        if kind == "missing":
            raise FileNotFoundError(msg)
        resumed_from = None
        if kind == "resume":
            err = self._load()
            if err:
                raise ValueError(err)
            resumed_from = self.step
            if ctx.is_main:
                self._truncate_metrics()
                if not self._release_is_current():  # killed between state.pt and the release
                    save_release(self.model, self.out, self._release_config())
            ctx.barrier()
            if self.finished:
                self._say(f"run in {self.out} is already finished ({self.step}/{sched.total_steps} steps); nothing to do")
                return self._result(True, resumed_from)
            self._say(f"resuming {self.out} from step {self.step}/{sched.total_steps} (epoch {self.epoch})")
        elif cfg.eval_at_start:
            self._evaluate(rate=None)
            self._checkpoint()

        from tqdm.auto import tqdm

        kill_at = int(self.hooks[_HOOK_KILL_AT_STEP]) if self.hooks[_HOOK_KILL_AT_STEP] else None
        sleep = float(self.hooks[_HOOK_STEP_SLEEP]) if self.hooks[_HOOK_STEP_SLEEP] else 0.0
        bar = tqdm(total=sched.total_steps, initial=self.step, disable=not self.progress, unit="step",
                   desc=f"train N={self.n_train}", dynamic_ncols=True)
        t_interval, overhead, interval_images = time.perf_counter(), 0.0, 0
        self.model.train()
        try:
            while self.step < sched.total_steps:
                interval_images += self._train_step()
                bar.update(1)
                if sleep:
                    time.sleep(sleep)
                if kill_at is not None and self.step == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                end = self.step == sched.total_steps
                if cfg.eval_unit == "epoch":
                    do_eval = self.batch_in_epoch == 0 and self.epoch % cfg.eval_every == 0
                else:
                    do_eval = self.step % cfg.eval_every == 0
                do_eval = do_eval or end
                do_ckpt = do_eval or bool(cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0)
                if end:
                    self.finished = True
                    self._recalibrate_bn()
                if do_eval:
                    if self.dev.type == "cuda":
                        torch.cuda.synchronize(self.dev)
                    elapsed = time.perf_counter() - t_interval - overhead
                    rate = interval_images / elapsed if elapsed > 0 else None
                    rec = self._evaluate(rate)
                    bar.set_postfix(loss=f"{rec['train_loss']:.3g}",
                                    test_psnr=f"{rec.get('test_psnr', rec['train_psnr']).get('0.1', float('nan')):.2f}")
                    self._checkpoint()
                    t_interval, overhead, interval_images = time.perf_counter(), 0.0, 0
                elif do_ckpt:
                    t0 = time.perf_counter()
                    self._checkpoint()
                    overhead += time.perf_counter() - t0
                if self.stop_at_step is not None and self.step == self.stop_at_step:
                    return self._result(False, resumed_from)  # simulated interruption (tests)
        finally:
            bar.close()
        return self._result(False, resumed_from)


def train(
    cfg: TrainConfig,
    train_images: torch.Tensor,
    test_images: torch.Tensor | None = None,
    out_dir: str | os.PathLike = "runs/run",
    progress: bool = True,
    *,
    data_info: dict | None = None,
    resume: str = "auto",
    force: bool = False,
    _stop_at_step: int | None = None,
) -> TrainResult:
    """Train a blind bias-free denoiser on ``train_images`` (N, C, H, W) in [0, 1] (paper App. A.1).

    Args:
        cfg: the run's :class:`TrainConfig` (see :func:`gahb.training.config.make_config`).
        train_images: the training set S (N images); tiled per epoch as in the official code.
        test_images: held-out images for the test loss/PSNR (the first ``cfg.eval_images`` are used).
        out_dir: run folder (created). See the module docstring for its files.
        progress: tqdm bar and status lines on stderr (rank 0 only).
        data_info: JSON-able description of the data (e.g. ``split.info``), stored in config.json.
        resume: ``"auto"`` continues an unfinished run found in ``out_dir`` (and returns at once for a
            finished one); ``"never"`` refuses a folder holding a run; ``"require"`` refuses a folder
            without one; ``"overwrite"`` deletes the run files in ``out_dir`` and starts fresh.
        force: resume even if the configuration or the data differ from the saved run's.

    Works unchanged under ``torchrun`` (see :mod:`gahb.training.distributed`).
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {RESUME_MODES}, got {resume!r}")
    cfg.validate()
    validate_images(train_images, test_images, cfg.model.channels)
    ctx = init_distributed(cfg.device)
    try:
        trainer = _Trainer(cfg, ctx, train_images, test_images, out_dir, progress, data_info, resume, force,
                           _stop_at_step)
        return trainer.run()
    finally:
        ctx.close()
