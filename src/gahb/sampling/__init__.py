"""Sampling from the prior implicit in a blind denoiser (paper App. A.2).

* :func:`sample`: the stochastic coarse-to-fine sampler (Algorithm 1), batched, with one random
  stream per sample, per-sample stopping, divergence guards and an optional callback; with an
  ``operator`` and ``measurement`` it solves linear inverse problems with the same prior.
* :class:`SamplerConfig`, :data:`PRESETS`, :func:`get_config`: hyper-parameters and presets
  (``"paper"``, ``"paper-constant-h"``, ``"deterministic"``, ``"fast"``).
* :mod:`gahb.sampling.operators`: measurement operators with orthonormal rows (inpainting, random
  pixels, super-resolution by block averaging, compressive sensing).
* :class:`LowRankGaussianDenoiser`: an exact blind denoiser with a known prior, for checks.
"""

from .config import PRESETS, STEP_RULES, SamplerConfig, get_config
from .gaussian import LowRankGaussianDenoiser
from .grid import make_grid
from .operators import (
    TASKS,
    CompressiveSensing,
    Inpainting,
    MeasurementOperator,
    PixelSubset,
    RandomPixels,
    SuperResolution,
    make_operator,
)
from .sampler import (
    CONVERGED,
    DIVERGED,
    MAX_STEPS,
    NoiseStreams,
    SampleResult,
    SamplingError,
    TrajectoryRecorder,
    sample,
)

__all__ = [
    "CONVERGED", "DIVERGED", "MAX_STEPS", "PRESETS", "STEP_RULES", "TASKS",
    "CompressiveSensing", "Inpainting", "LowRankGaussianDenoiser", "MeasurementOperator", "NoiseStreams",
    "PixelSubset", "RandomPixels", "SampleResult", "SamplerConfig", "SamplingError", "SuperResolution",
    "TrajectoryRecorder", "get_config", "make_grid", "make_operator", "sample",
]
