"""Typed training configuration, presets and the derived schedule (paper App. A.1).

A run is fully described by a :class:`TrainConfig` (plus the training images). It is dumped into
``config.json`` beside the weights and into ``state.pt``, and a resumed run must match it.

Presets
-------
``paper``
    The official schedule: batch 512, Adam lr 1e-3 halved every 100 epochs, 1000 epochs of
    about 250,000 images each (the training set is tiled ``max(1, floor(250000 / N))`` times per
    epoch), sigma = u^2 with u ~ U(0, 1), the 80x80 UNet (3 blocks, width 64), 512 held-out images
    for the per-epoch evaluation. About 4.9e5 steps, some 5.7e18 FLOP per model: GPU territory
    (roughly 10-20 h per model on one H100).
``standard``
    A CPU-sized version for 28x28 Fashion-MNIST with the small UNet (2 blocks, width 32):
    batch 64, 10 epochs of 20,000 images (200k images seen, about 3,130 steps), lr 1e-3 halved
    after epochs 3, 6 and 9. About half an hour on two CPU cores (~120 images/s).
``quick``
    A smoke-test schedule: batch 64, 4 epochs of 5,000 images (20k images, about 320 steps),
    lr halved once after epoch 2. A few minutes on two CPU cores (3-7 min measured).

Every preset keeps an exponential moving average of the weights (:mod:`gahb.training.ema`, as EDM's,
Karras et al. 2022) with a half-life of 2,000 images and EDM's ramp-up ratio 0.05: the half-life is
5% of the images seen until 40k images, 2k images after. The half-life was chosen by a measured sweep
on Fashion-MNIST (``scripts/sweep_ema.py``, docs/ema.md); ``ema_halflife_kimg=0`` turns it off.

The scaled-down presets keep everything but the budget: same loss, noise law, optimizer, tiling
rule and halving-by-epoch structure. The paper halves every 10% of the run and ends at lr/512; a
run that is 50-1000x shorter has not converged when the paper's schedule would have decayed the
rate that far, so they halve less often (final lr/8 and lr/2).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace

from gahb.models import ModelConfig, model_config
from gahb.utils.config import added, before_values, runtime, runtime_fields

NOISE_LAWS = ("quadratic", "uniform")
LOSS_WEIGHTS = ("none", "eps", "eps-small")
LR_UNITS = ("epoch", "step", "fraction")
EVAL_UNITS = ("epoch", "step")


def _default_model() -> ModelConfig:
    return model_config("unet-small")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run.

    Budget: give ``epochs`` (the paper's tiled epochs of about ``images_per_epoch`` images) or
    ``steps`` (a total number of optimizer steps; the data still flow epoch by epoch), not both.
    """

    model: ModelConfig = field(default_factory=_default_model)
    batch_size: int = 64  # global batch (split across ranks under DDP)
    lr: float = 1e-3  # Adam, default betas, no weight decay
    epochs: int | None = 10
    steps: int | None = None
    images_per_epoch: int = 20_000  # training set tiled n = max(1, floor(this / N)) times per epoch
    lr_halve_every: float | None = 3  # None or 0: constant lr
    lr_halve_unit: str = "epoch"  # "epoch", "step" or "fraction" (of the total steps)
    noise: str = "quadratic"  # sigma = sigma_max * u**2 ("quadratic", official code) or sigma_max * u
    sigma_max: float = 1.0  # pixel scale [0, 1]
    # Per-image loss weight. "none": the paper's ||r(y) - z||^2, whose size grows with sigma^2 so
    # the large noise levels dominate the gradient. "eps": ||r(y) - z||^2 / (sigma^2 + floor^2),
    # DDPM's noise-prediction loss, which weights every noise level alike in PSNR terms (the
    # floor keeps sigma -> 0 draws finite). For a blind denoiser this reweights the noise-level
    # prior by 1/sigma^2 (the optimum is E[x | y] under that prior); sigma is nearly identifiable
    # from a noisy image, so it moves the training trade-off rather than the target. "eps-small":
    # 1 + (loss_eps_sigma / max(sigma, floor))^2, unweighted above loss_eps_sigma, noise-prediction
    # below it: a briefly trained network then leaves clean images alone (radial gain 1) instead of
    # amplifying them, which made samples diverge (docs/divergence.md), and keeps its large-noise fit.
    loss_weight: str = "none"
    loss_sigma_floor: float = 0.01
    loss_eps_sigma: float = 0.1
    # After the last step: recompute every BF-BN running_sd from this many training batches (fresh
    # noise, weights frozen), so that the eval-mode network is the one the final weights define
    # (gahb.training.bn_stats; docs/divergence.md). 0: off, the running averages of training as they are.
    bn_recalibration_batches: int = 0
    # Exponential moving average of the weights (gahb.training.ema; EDM's training_loop.py): half-life in
    # thousands of training images (None or 0: no EMA), capped at ema_rampup_ratio times the images seen
    # (None: no ramp-up). The EMA network's BF-BN running_sd are recalibrated on ema_bn_batches training
    # batches before it is evaluated or saved. Saved as model_ema.safetensors, which load_denoiser prefers.
    ema_halflife_kimg: float | None = added(2.0, before=None)  # docs/ema.md: the sweep that chose it
    ema_rampup_ratio: float | None = added(0.05, before=0.05)
    ema_bn_batches: int = added(16, before=16)
    seed: int = 0  # model init, data order, training noise and evaluation noise all derive from it
    eval_images: int = 64  # fixed train and held-out images for the PSNR sweep
    eval_sigmas: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
    eval_every: int = 1
    eval_unit: str = "epoch"  # "epoch" or "step"
    eval_at_start: bool = True  # also log the untrained network (step 0)
    checkpoint_every: int | None = runtime(500)  # steps; checkpoints are also written at every evaluation
    device: str = runtime("auto")
    bf16: bool = False  # bf16 autocast for the training forward/backward (CUDA only)
    channels_last: bool = runtime(True)  # NHWC activations and weights: the same maths, ~1.2x faster on CPU (benchmarks/bench_train_step.py)
    compile: bool = runtime(False)  # torch.compile the training module (CUDA only)
    noise_on_device: bool = False  # draw training noise with a CUDA generator (faster; RNG differs from CPU)

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelConfig):
            object.__setattr__(self, "model", model_config(self.model))
        object.__setattr__(self, "eval_sigmas", tuple(float(s) for s in self.eval_sigmas))
        if not self.ema_halflife_kimg:  # 0 and None both mean no EMA; one spelling, so configs compare equal
            object.__setattr__(self, "ema_halflife_kimg", None)
        self.validate()

    def validate(self) -> None:
        def pos_int(name: str, v, allow_none: bool = False) -> None:
            if v is None and allow_none:
                return
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")

        pos_int("batch_size", self.batch_size)
        pos_int("images_per_epoch", self.images_per_epoch)
        pos_int("eval_images", self.eval_images)
        pos_int("eval_every", self.eval_every)
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("give exactly one training budget: epochs or steps")
        pos_int("epochs", self.epochs, allow_none=True)
        pos_int("steps", self.steps, allow_none=True)
        if self.checkpoint_every is not None and (not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0):
            raise ValueError(f"checkpoint_every must be a non-negative integer or None, got {self.checkpoint_every!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.noise not in NOISE_LAWS:
            raise ValueError(f"noise must be one of {NOISE_LAWS}, got {self.noise!r}")
        if not (self.sigma_max > 0 and math.isfinite(self.sigma_max)):
            raise ValueError(f"sigma_max must be positive, got {self.sigma_max}")
        if self.loss_weight not in LOSS_WEIGHTS:
            raise ValueError(f"loss_weight must be one of {LOSS_WEIGHTS}, got {self.loss_weight!r}")
        if not (self.loss_sigma_floor > 0 and math.isfinite(self.loss_sigma_floor)):
            raise ValueError(f"loss_sigma_floor must be positive, got {self.loss_sigma_floor}")
        if not (isinstance(self.bn_recalibration_batches, int) and self.bn_recalibration_batches >= 0):
            raise ValueError(f"bn_recalibration_batches must be an integer >= 0, got {self.bn_recalibration_batches!r}")
        if not (self.loss_eps_sigma > 0 and math.isfinite(self.loss_eps_sigma)):
            raise ValueError(f"loss_eps_sigma must be positive, got {self.loss_eps_sigma}")
        h, r = self.ema_halflife_kimg, self.ema_rampup_ratio
        if h is not None and not (h > 0 and math.isfinite(h)):
            raise ValueError(f"ema_halflife_kimg must be positive, 0 or None (no EMA), got {h!r}")
        if r is not None and not (r > 0 and math.isfinite(r)):
            raise ValueError(f"ema_rampup_ratio must be positive or None (no ramp-up), got {r!r}")
        pos_int("ema_bn_batches", self.ema_bn_batches)
        if self.lr_halve_unit not in LR_UNITS:
            raise ValueError(f"lr_halve_unit must be one of {LR_UNITS}, got {self.lr_halve_unit!r}")
        if self.lr_halve_every is not None and self.lr_halve_every < 0:
            raise ValueError("lr_halve_every must be >= 0 (0 or None: constant lr)")
        if self.lr_halve_unit == "fraction" and self.lr_halve_every and self.lr_halve_every > 1:
            raise ValueError("with lr_halve_unit='fraction', lr_halve_every is a fraction of the run in (0, 1]")
        if self.eval_unit not in EVAL_UNITS:
            raise ValueError(f"eval_unit must be one of {EVAL_UNITS}, got {self.eval_unit!r}")
        if not self.eval_sigmas or any(not (s > 0 and math.isfinite(s)) for s in self.eval_sigmas):
            raise ValueError(f"eval_sigmas must be positive numbers, got {self.eval_sigmas}")

    # -- JSON round trip ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        d["eval_sigmas"] = list(self.eval_sigmas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {sorted(unknown)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some fields changed (and re-validated).

        Setting ``steps`` clears ``epochs`` and vice versa, so a preset's budget can be swapped.
        """
        if changes.get("steps") is not None and "epochs" not in changes:
            changes["epochs"] = None
        if changes.get("epochs") is not None and "steps" not in changes:
            changes["steps"] = None
        return replace(self, **changes)


# how a run executes, not what it computes: a resumed run may change them (gahb.utils.config.runtime)
RUNTIME_FIELDS = runtime_fields(TrainConfig)
# the values runs saved before a field existed had (gahb.utils.config.added): no EMA
LEGACY_VALUES = {k: v for k, v in before_values(TrainConfig).items() if k in {f.name for f in fields(TrainConfig)}}

PRESETS: dict[str, dict] = {
    "paper": dict(
        model="unet-80", batch_size=512, lr=1e-3, epochs=1000, steps=None, images_per_epoch=250_000,
        lr_halve_every=100, lr_halve_unit="epoch", noise="quadratic", sigma_max=1.0, eval_images=512,
        eval_sigmas=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0), eval_every=1, eval_unit="epoch",
        checkpoint_every=100,
    ),
    "standard": dict(
        model="unet-small", batch_size=64, lr=1e-3, epochs=10, steps=None, images_per_epoch=20_000,
        lr_halve_every=3, lr_halve_unit="epoch", noise="quadratic", sigma_max=1.0, eval_images=64,
        eval_every=1, eval_unit="epoch", checkpoint_every=500,
    ),
    "quick": dict(
        model="unet-small", batch_size=64, lr=1e-3, epochs=4, steps=None, images_per_epoch=5_000,
        lr_halve_every=2, lr_halve_unit="epoch", noise="quadratic", sigma_max=1.0, eval_images=64,
        eval_every=1, eval_unit="epoch", checkpoint_every=100,
    ),
}


def make_config(preset: str = "standard", **overrides) -> TrainConfig:
    """A :class:`TrainConfig` from a named preset with some fields overridden.

    ``model`` may be a :class:`ModelConfig`, a dict or a model-preset name (``"unet-small"``).
    Overriding ``steps`` drops the preset's ``epochs`` budget and vice versa.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown training preset {preset!r}; choose one of {sorted(PRESETS)}")
    base = dict(PRESETS[preset])
    if overrides.get("steps") is not None and "epochs" not in overrides:
        base["epochs"] = None
    if overrides.get("epochs") is not None and "steps" not in overrides:
        base["steps"] = None
    base.update(overrides)
    return TrainConfig(**base)


# -- derived schedule --------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """How a config plays out on a training set of ``n_train`` images."""

    n_train: int
    tiles: int  # copies of the training set per epoch
    epoch_len: int  # images per epoch
    steps_per_epoch: int  # the last batch of an epoch may be partial, as with drop_last=False
    total_steps: int
    last_batch: int  # size of the last batch of each epoch

    def epoch_of(self, step: int) -> int:
        """0-based epoch that the (0-based) step ``step`` belongs to."""
        return step // self.steps_per_epoch


def make_schedule(cfg: TrainConfig, n_train: int) -> Schedule:
    """Tile, batch and count steps as the official code does: n = max(1, floor(E / N))."""
    if n_train < 1:
        raise ValueError("the training set is empty")
    tiles = max(1, cfg.images_per_epoch // n_train)
    epoch_len = tiles * n_train
    steps_per_epoch = math.ceil(epoch_len / cfg.batch_size)
    last = epoch_len - (steps_per_epoch - 1) * cfg.batch_size
    total = cfg.epochs * steps_per_epoch if cfg.epochs is not None else cfg.steps
    return Schedule(n_train, tiles, epoch_len, steps_per_epoch, total, last)


def lr_at(cfg: TrainConfig, sched: Schedule, step: int) -> float:
    """Learning rate for the 0-based step ``step``: halved every ``lr_halve_every`` units.

    ``epoch`` units follow the official code (halve when the epoch index reaches 100, 200, ...);
    ``fraction`` halves every ``round(f * total_steps)`` steps.
    """
    every = cfg.lr_halve_every
    if not every:
        return cfg.lr
    if cfg.lr_halve_unit == "epoch":
        k = math.floor(sched.epoch_of(step) / every + 1e-9)
    elif cfg.lr_halve_unit == "step":
        k = math.floor(step / every + 1e-9)
    else:
        period = max(1, round(every * sched.total_steps))
        k = step // period
    return cfg.lr * 0.5**k
