"""The training recipe every study nests: how it trains each of its denoisers (paper eq. 4, App. A.1).

A study says what differs from a training preset (:data:`gahb.training.config.PRESETS`) in the units
a study thinks in: a model, a budget in tiled epochs or optimizer steps, a batch size, a learning
rate and when it halves, the noise range and the loss weight. :meth:`Recipe.train_config` turns it
into the :class:`~gahb.training.config.TrainConfig` of one network trained on N images; what the
recipe does not name (the noise law, the evaluation sigmas, checkpoint spacing) comes from the
preset. The defaults are the paper's loss (eq. 4) on sigma in [0, 1]; anything else is a variant
that the study's report labels (:data:`gahb.studies.common.PAPER_RECIPE`).

The recipe also says which weights the study measures: ``weights = "ema"`` (the default) the
exponential moving average of the weights that every network keeps (``ema_halflife_kimg``,
:mod:`gahb.training.ema`), ``"raw"`` the weights training left.

Fields marked :func:`~gahb.utils.config.added` joined the recipe after some studies had written
results: ``before`` is the value those results trained with, so they stay reusable exactly when a
run asks for that value (no EMA, raw weights).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from gahb.utils.config import added


@dataclass(frozen=True)
class Recipe:
    """How a study trains each network (:meth:`train_config` for N images) and which of its weights it measures."""

    train_preset: str = "standard"  # training preset for everything the recipe does not name
    model: object = "unet-small"  # model preset name, or a dict of ModelConfig fields over unet-small's
    epochs: int | None = 4  # tiled epochs of images_per_epoch images (used when steps is None)
    steps: int | None = None  # optimizer steps for every network instead of epochs
    min_epochs: float = 0  # with steps: at least this many passes over the N images (the epoch stretched alike)
    images_per_epoch: int | None = None  # images per epoch; None: one pass over the N images
    batch_size: int = 64  # images per optimizer step
    lr: float = added(1e-3, before=1e-3)  # Adam learning rate
    lr_halve_every: float | None = 2  # epochs between halvings of the lr; None: constant
    lr_halve_unit: str = added("epoch", before="epoch")
    sigma_max: float = added(1.0, before=1.0)  # training noise sigma in [0, sigma_max] (pixel scale; paper: 1)
    loss_weight: str = added("none", before="none")  # "none": the paper's eq. 4 (TrainConfig.loss_weight)
    bn_recalibration_batches: int = added(0, before=0)  # BF-BN statistics recomputed after the last step
    eval_images: int = added(64, before=64)  # held-out images of the per-epoch evaluation
    eval_every: int = added(1, before=1)
    eval_unit: str = added("epoch", before="epoch")
    # EMA of the weights (TrainConfig.ema_*; EDM's half-life in thousands of images and ramp-up; None: no EMA)
    ema_halflife_kimg: float | None = added(2.0, before=None)
    ema_rampup_ratio: float | None = added(0.05, before=0.05)
    weights: str = added("ema", before="raw")  # the weights measured: "ema" (when kept, else raw) or "raw"

    def __post_init__(self) -> None:
        for name in ("epochs", "steps", "images_per_epoch"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"recipe: {name} must be a positive integer or None, got {v!r}")
        if self.epochs is None and self.steps is None:
            raise ValueError("recipe: give epochs or steps")
        if not self.min_epochs >= 0:
            raise ValueError(f"recipe: min_epochs must be >= 0, got {self.min_epochs}")
        if self.weights not in ("ema", "raw"):
            raise ValueError(f"recipe: weights must be 'ema' or 'raw', got {self.weights!r}")

    def but(self, **changes) -> "Recipe":
        """A copy with some fields changed (for presets)."""
        return dataclasses.replace(self, **changes)

    def budget(self, n: int) -> tuple[int | None, int]:
        """(steps, images_per_epoch) of a network of N images: ``steps`` raised to ``min_epochs`` passes
        over the N images, the epoch stretched by the same factor (the lr halvings keep their place)."""
        ipe = self.images_per_epoch or int(n)
        if not self.steps:
            return None, ipe
        need = math.ceil(self.min_epochs * n / self.batch_size) if self.min_epochs else 0
        if need <= self.steps:
            return self.steps, ipe
        return need, round(ipe * need / self.steps)

    def train_config(self, n: int, *, seed: int, device: str):
        """The :class:`~gahb.training.config.TrainConfig` of one network trained on ``n`` images."""
        from gahb.models import model_config
        from gahb.training.config import make_config

        steps, ipe = self.budget(n)
        budget = {"steps": steps} if steps else {"epochs": int(self.epochs)}
        return make_config(self.train_preset, model=model_config(self.model, base="unet-small"), **budget, images_per_epoch=int(ipe),
                           batch_size=int(self.batch_size), lr=float(self.lr), lr_halve_every=self.lr_halve_every,
                           lr_halve_unit=self.lr_halve_unit, sigma_max=float(self.sigma_max),
                           loss_weight=str(self.loss_weight), bn_recalibration_batches=int(self.bn_recalibration_batches),
                           eval_images=int(self.eval_images), eval_every=int(self.eval_every), eval_unit=self.eval_unit,
                           ema_halflife_kimg=self.ema_halflife_kimg, ema_rampup_ratio=self.ema_rampup_ratio,
                           seed=int(seed), device=device)


__all__ = ["Recipe"]
