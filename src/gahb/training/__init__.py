"""Training blind bias-free denoisers (paper eq. 4, App. A.1).

>>> from gahb.training import make_config, train          # doctest: +SKIP
>>> cfg = make_config("quick", steps=200)                   # doctest: +SKIP
>>> result = train(cfg, split.train, split.test, "runs/demo", data_info=split.info)  # doctest: +SKIP

See :mod:`gahb.training.loop` for the loop, :mod:`gahb.training.run_dir` for the run-folder layout
and the resume guarantees, and :mod:`gahb.training.distributed` for ``torchrun`` data-parallel
training.
"""

from .checkpoint import load_denoiser, save_release, save_weights
from .config import PRESETS, Schedule, TrainConfig, lr_at, make_config, make_schedule
from .evaluate import EvalSet, denoise_image
from .loop import TrainResult, load_state, read_metrics, train, validate_images
from .noise import denoising_loss, draw_noise, loss_weights, sample_sigmas

__all__ = [
    "EvalSet", "PRESETS", "Schedule", "TrainConfig", "TrainResult", "denoise_image", "denoising_loss",
    "draw_noise", "load_denoiser", "load_state", "lr_at", "make_config", "make_schedule", "read_metrics",
    "loss_weights", "sample_sigmas", "save_release", "save_weights", "train", "validate_images",
]
