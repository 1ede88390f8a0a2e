"""An exponential moving average (EMA) of a denoiser's weights, as in EDM (Karras et al. 2022, ``training_loop.py``).

The half-life is counted in training images. After each optimizer step on a batch of ``b`` images,
with ``n`` images seen before that batch, every parameter of the EMA network moves towards the raw one:

    H    = min(halflife, rampup_ratio * n)     (H = halflife without a ramp-up ratio)
    beta = 0.5 ** (b / max(H, 1e-8))
    ema  = raw + beta * (ema - raw)

so H images after a value entered the average its weight has halved. The ramp-up keeps the half-life
at most a fixed fraction of the images seen: the first update (n = 0) copies the raw weights and a short
run's average is not mostly its initial weights.

BF-BN statistics: the EMA network's ``running_sd`` buffers are not copied or averaged from the raw
network's; they are **recalibrated** (:func:`gahb.training.bn_stats.recalibrate_bn`) on training batches
with the EMA weights, before the EMA network is evaluated or saved. ``running_sd`` measures the
activations of the raw weights of the last ~10 steps; averaged weights have activation scales of their
own, and an eval-mode network whose ``running_sd`` is off by a few percent can amplify the image it
denoises and make samples diverge (docs/divergence.md). The calibration batches come from a fixed seed,
so the calibrated network is a function of the EMA weights alone: recomputing it after a resume gives
the same bits.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .bn_stats import recalibrate_bn

EMA_SEED_OFFSET = 2**21  # the calibration batches' seed: TrainConfig.seed + this (raw recalibration: + 2**20)


def ema_beta(batch: int, images_seen: int, halflife_images: float, rampup_ratio: float | None) -> float:
    """The weight the EMA keeps after a step on ``batch`` images, ``images_seen`` images seen before it."""
    h = float(halflife_images)
    if rampup_ratio is not None:
        h = min(h, images_seen * float(rampup_ratio))
    return 0.5 ** (batch / max(h, 1e-8))


class WeightEMA:
    """The EMA network of a model: its parameters averaged (:func:`ema_beta`), its BF-BN ``running_sd``
    recalibrated on demand (:meth:`calibrate`). ``model`` is a frozen eval-mode copy."""

    def __init__(self, model: nn.Module, halflife_kimg: float, rampup_ratio: float | None):
        if not halflife_kimg or halflife_kimg <= 0:
            raise ValueError(f"the EMA half-life must be positive, got {halflife_kimg!r}")
        self.halflife_images = 1000.0 * float(halflife_kimg)
        self.rampup_ratio = rampup_ratio
        self.model = copy.deepcopy(model).requires_grad_(False).eval()
        self.calibrated_at: int | None = None  # the step whose weights running_sd was computed for

    @torch.no_grad()
    def update(self, model: nn.Module, batch: int, images_seen: int) -> float:
        """Average in ``model``'s parameters after a step on ``batch`` images; returns beta."""
        beta = ema_beta(batch, images_seen, self.halflife_images, self.rampup_ratio)
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.copy_(p.detach().lerp(e, beta))
        self.calibrated_at = None
        return beta

    def calibrate(self, images: torch.Tensor, step: int, *, batches: int, batch_size: int, noise: str,
                  sigma_max: float, seed: int) -> None:
        """Recompute every ``running_sd`` for the current EMA weights (once per ``step``); see the module docstring."""
        if self.calibrated_at == step:
            return
        recalibrate_bn(self.model, images, batches=batches, batch_size=batch_size, noise=noise,
                       sigma_max=sigma_max, seed=seed)
        self.model.eval()
        self.calibrated_at = step

    def state_dict(self) -> dict:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict, step: int | None = None) -> None:
        """Load saved EMA weights and statistics; ``step``: the step they were calibrated at, if they were."""
        self.model.load_state_dict(state)
        self.calibrated_at = step


__all__ = ["EMA_SEED_OFFSET", "WeightEMA", "ema_beta"]
