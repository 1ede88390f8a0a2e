"""The training loop: blind denoising with fresh noise, tiled epochs, checkpoints and exact resume.

What is optimised (paper eq. 4, App. A.1): for a batch of clean images x, one noise level sigma
per image from the configured law, y = x + sigma * n with n ~ N(0, I) drawn afresh every time an
image is seen, and the loss sum_pixels ||r(y) - sigma n||^2 / batch, where r(y) = y - f(y) is the
network's residual. Adam with default betas; the learning rate is halved on the configured schedule.

Weights averaging: with ``ema_halflife_kimg`` set, an exponential moving average of the weights is
updated after every step (:mod:`gahb.training.ema`, as in EDM); it never feeds back into training.

Determinism: data order and training noise come from explicit ``torch.Generator`` objects, model
initialisation from a seeded fork of the global generator, and the evaluation noise (and the EMA
network's BF-BN calibration batches) from generators of their own. The run folder (``out_dir``),
what is written there and how a killed run resumes bit-identically are described in
:mod:`gahb.training.run_dir`.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gahb.models import build_model

from .config import Schedule, TrainConfig, lr_at, make_schedule
from .distributed import DistContext, init_distributed
from .evaluate import EvalSet
from .inputs import data_fingerprint, validate_images
from .noise import denoising_loss, draw_noise, loss_weights
from .ema import EMA_SEED_OFFSET, WeightEMA
from .run_dir import (METRICS_NAME, RESUME_MODES, STATE_NAME, RunDir, RunFolderBusy, load_state, read_metrics,
                      release_config, restore_trainer, trainer_state)

__all__ = ["METRICS_NAME", "STATE_NAME", "TrainResult", "data_fingerprint", "load_state", "read_metrics", "train",
           "validate_images"]

# Fault injection for the kill-and-resume tests (a real SIGKILL at a chosen point of a real run;
# kills inside a file write are in :func:`gahb.utils.io._atomic`). Inert when unset.
_HOOK_KILL_AT_STEP = "GAHB_TRAIN_TEST_KILL_AT_STEP"  # SIGKILL self right after this optimizer step
_HOOK_STEP_SLEEP = "GAHB_TRAIN_TEST_STEP_SLEEP"  # seconds to sleep after every step


@dataclass
class TrainResult:
    out_dir: str  # the run folder
    step: int  # optimizer steps done
    total_steps: int  # optimizer steps of the whole run
    epoch: float  # completed epochs, fractional
    finished: bool  # step == total_steps
    already_finished: bool  # the call found a finished run and did nothing
    resumed_from: int | None  # step the call resumed from (None: fresh start)
    metrics: dict | None  # the latest evaluation record
    wall_time: float  # seconds, summed over all sessions of the run


def _seeds(seed: int) -> dict[str, int]:
    """Independent seeds for the four random streams of a run, all derived from ``seed``."""
    words = np.random.SeedSequence(int(seed)).generate_state(4, dtype=np.uint64)
    return {k: int(w) & ((1 << 63) - 1) for k, w in zip(("init", "data", "noise", "eval"), words)}


class _Residual(nn.Module):
    """What DDP/compile wrap: the residual r(y), the quantity the loss regresses onto the noise."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net.residual(y)


# -- the loop ----------------------------------------------------------------------------------


class _Trainer:
    """One call of :func:`train`: the model, optimizer, generators and progress counters of a run."""

    def __init__(self, cfg: TrainConfig, ctx: DistContext, train_images, test_images, out_dir,
                 progress: bool, data_info: dict | None, resume: str, force: bool):
        self.cfg, self.ctx = cfg, ctx
        self.dev = ctx.device
        self.out = Path(out_dir)
        self.run_dir = RunDir(self.out)
        self.progress = progress and ctx.is_main
        self.data_info = dict(data_info or {})
        self.resume_mode, self.force = resume, force
        self.train_cpu = train_images.detach().to("cpu", torch.float32).contiguous()
        self.test_cpu = None if test_images is None or len(test_images) == 0 else \
            test_images.detach().to("cpu", torch.float32).contiguous()
        self.n_train = len(self.train_cpu)
        self.img_shape = tuple(self.train_cpu.shape[1:])
        self.sched: Schedule = make_schedule(cfg, self.n_train)
        self.seeds = _seeds(cfg.seed)
        self.fingerprint = data_fingerprint(self.train_cpu)
        self.hooks = {k: os.environ.get(k) for k in (_HOOK_KILL_AT_STEP, _HOOK_STEP_SLEEP)}
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
        self.ema = WeightEMA(self.model, cfg.ema_halflife_kimg, cfg.ema_rampup_ratio) if cfg.ema_halflife_kimg else None
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

    # ---- one optimizer step ----------------------------------------------------------------
    def _train_step(self) -> int:
        """One optimizer step on the next batch of the epoch; returns the (global) batch size."""
        cfg, sched, ctx = self.cfg, self.sched, self.ctx
        # Draw the batch: the next slice of this epoch's permutation of the tiled training set.
        if self.batch_in_epoch == 0 and self.perm is None:
            self.perm = torch.randperm(sched.epoch_len, generator=self.data_gen)
        bs = cfg.batch_size
        idx = self.perm[self.batch_in_epoch * bs : (self.batch_in_epoch + 1) * bs] % self.n_train
        b = len(idx)
        # Add fresh noise: one sigma per image, drawn for the whole batch; each rank keeps its shard.
        sigmas, z = draw_noise((b, *self.img_shape), cfg.noise, cfg.sigma_max, self.noise_gen, self.noise_dev)
        sl = ctx.shard(b)
        x = self.train_dev[idx[sl].to(self.train_dev.device)].to(self.dev, non_blocking=True)
        z = z[sl].to(self.dev, non_blocking=True)
        w = loss_weights(sigmas[sl].to(self.dev), cfg.loss_weight, cfg.loss_sigma_floor, cfg.loss_eps_sigma)
        y = x + z
        if cfg.channels_last:
            y = y.contiguous(memory_format=torch.channels_last)
        # Set this step's learning rate.
        lr = lr_at(cfg, sched, self.step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        # Compute the loss: the residual r(y) regressed onto the noise (paper eq. 4).
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if cfg.bf16 else contextlib.nullcontext()
        with amp:
            r = self.net(y)
        local_sum = denoising_loss(r, z, batch_size=1, weights=w)
        # Each rank's share of the global loss, times world size: DDP's gradient average is then
        # exactly the gradient of sum_batch w ||r - z||^2 / global_batch.
        loss = local_sum * (ctx.world_size / b)
        # Update weights.
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        # Update the EMA of the weights (its half-life counts the images seen before this batch, as EDM's).
        if self.ema is not None:
            self.ema.update(self.model, b, self.images_seen)
        # Update the loss accumulator and the position in the epoch.
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
            if self.ema is not None:
                self._calibrate_ema()
                rec["ema"] = self.eval_set.evaluate(self.ema.model, self.dev)
            rec["images_per_s"] = rate
            rec["wall_time"] = self.wall_before + (time.perf_counter() - self.t_session)
            self.run_dir.append_metrics(rec)
        rec = self.ctx.broadcast_object(rec)
        self.acc_sum.zero_()
        self.acc_images = 0
        self.last_metrics = rec
        return rec

    def _calibrate_ema(self) -> None:
        """The EMA network's BF-BN statistics for its current weights (:mod:`gahb.training.ema`), from batches
        of a generator of their own (seed + 2**21): a function of the EMA weights alone, so resume-safe."""
        cfg = self.cfg
        self.ema.calibrate(self.train_cpu, self.step, batches=cfg.ema_bn_batches, batch_size=cfg.batch_size,
                           noise=cfg.noise, sigma_max=cfg.sigma_max, seed=cfg.seed + EMA_SEED_OFFSET)

    def _checkpoint(self) -> None:
        """``state.pt``, then the release, written by rank 0; every rank waits for them."""
        acc = torch.tensor(self._global_acc(), dtype=torch.float32)  # all ranks take part in the reduction
        if self.ctx.is_main:
            if self.ema is not None:
                self._calibrate_ema()
            self.run_dir.save_checkpoint(trainer_state(self, acc), self.model, release_config(self),
                                         None if self.ema is None else self.ema.model)
        self.ctx.barrier()

    def _result(self, already: bool, resumed_from: int | None) -> TrainResult:
        wall = self.wall_before + (time.perf_counter() - self.t_session) if not already else self.wall_before
        return TrainResult(str(self.out), self.step, self.sched.total_steps, self.step / self.sched.steps_per_epoch,
                           self.finished, already, resumed_from, self.last_metrics, wall)

    def _say(self, msg: str) -> None:
        if self.ctx.is_main and self.progress:
            print(msg, file=sys.stderr, flush=True)

    # ---- main ------------------------------------------------------------------------------
    def _resume(self) -> int:
        """Continue the run saved in the folder, reconciling its files with ``state.pt``; returns its step."""
        st = load_state(self.out)
        err = self.run_dir.resume_error(st, self.cfg, self.n_train, self.img_shape, self.fingerprint, self.force) \
            or restore_trainer(self, st)
        if err:
            raise ValueError(err)
        if self.ctx.is_main:
            self.run_dir.truncate_metrics(self.step)
            if not self.run_dir.release_is_current(self.step, self.ema is not None):  # killed between the writes
                if self.ema is not None:
                    self._calibrate_ema()
                self.run_dir.write_release(self.model, release_config(self),
                                           None if self.ema is None else self.ema.model)
        self.ctx.barrier()
        return self.step

    def run(self) -> TrainResult:
        cfg, sched, ctx = self.cfg, self.sched, self.ctx
        self.t_session = time.perf_counter()
        self._build()

        # Prepare the run folder: rank 0 locks it against a second process, decides, every rank follows.
        decision = ("", "")
        if ctx.is_main:
            try:
                self.run_dir.lock()
                decision = self.run_dir.prepare(self.resume_mode)
            except RunFolderBusy as exc:
                decision = ("busy", str(exc))
        kind, msg = ctx.broadcast_object(decision)
        if kind == "busy":
            raise RunFolderBusy(msg)
        if kind == "exists":
            raise FileExistsError(msg)
        if kind == "missing":
            raise FileNotFoundError(msg)

        # Resume from the last checkpoint, or log the untrained network at step 0.
        resumed_from = None
        if kind == "resume":
            resumed_from = self._resume()
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
                # Take one optimizer step.
                interval_images += self._train_step()
                bar.update(1)

                # Inject faults (kill-and-resume tests only).
                if sleep:
                    time.sleep(sleep)
                if kill_at is not None and self.step == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

                # Schedule: evaluate per epoch or every eval_every steps, and after the last step;
                # checkpoint at every evaluation and every checkpoint_every steps.
                end = self.step == sched.total_steps
                if cfg.eval_unit == "epoch":
                    do_eval = self.batch_in_epoch == 0 and self.epoch % cfg.eval_every == 0
                else:
                    do_eval = self.step % cfg.eval_every == 0
                do_eval = do_eval or end
                do_ckpt = do_eval or bool(cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0)

                # After the last step: the BF-BN statistics of the final weights (when configured).
                if end:
                    self.finished = True
                    self._recalibrate_bn()

                if do_eval:
                    # Evaluate and update logs (metrics.jsonl, progress bar); the throughput since the
                    # last evaluation leaves out the time spent in checkpoints.
                    if self.dev.type == "cuda":
                        torch.cuda.synchronize(self.dev)
                    elapsed = time.perf_counter() - t_interval - overhead
                    rate = interval_images / elapsed if elapsed > 0 else None
                    rec = self._evaluate(rate)
                    bar.set_postfix(loss=f"{rec['train_loss']:.3g}",
                                    test_psnr=f"{rec.get('test_psnr', rec['train_psnr']).get('0.1', float('nan')):.2f}")
                    # Save checkpoint.
                    self._checkpoint()
                    t_interval, overhead, interval_images = time.perf_counter(), 0.0, 0
                elif do_ckpt:
                    # Save checkpoint.
                    t0 = time.perf_counter()
                    self._checkpoint()
                    overhead += time.perf_counter() - t0
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
) -> TrainResult:
    """Train a blind bias-free denoiser on ``train_images`` (N, C, H, W) in [0, 1] (paper App. A.1).

    Args:
        cfg: the run's :class:`TrainConfig` (see :func:`gahb.training.config.make_config`).
        train_images: the training set S (N images); tiled per epoch as in the official code.
        test_images: held-out images for the test loss/PSNR (the first ``cfg.eval_images`` are used).
        out_dir: run folder (created); its files are described in :mod:`gahb.training.run_dir`.
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
        trainer = _Trainer(cfg, ctx, train_images, test_images, out_dir, progress, data_info, resume, force)
        try:
            return trainer.run()
        finally:
            trainer.run_dir.unlock()
    finally:
        ctx.close()
