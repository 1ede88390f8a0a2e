"""Algorithm 1 of Kadkhodaie et al. (ICLR 2024, App. A.2): coarse-to-fine stochastic gradient ascent.

Kadkhodaie & Simoncelli's sampler climbs the log-density implicit in a blind denoiser f. The
residual f(x) - x is proportional to sigma^2 times the score of the noisy density (Miyasawa /
Tweedie), and its size estimates the effective noise of the iterate, so the denoiser sets its own
schedule. Starting from x_0 ~ N(init_mean, sigma_0^2 I), step t = 1, 2, ... computes

    d_t       = f(x_{t-1}) - x_{t-1}
    sigma_t^2 = ||d_t||^2 / d
    gamma_t^2 = ((1 - beta h_t)^2 - (1 - h_t)^2) sigma_t^2
    x_t       = x_{t-1} + h_t d_t + gamma_t z_t,        z_t ~ N(0, I)

until sigma_t < sigma_final; the result is f(x_{t-1}), the denoised image of that last iterate.
The step h_t is h0, or the official code's increasing h_t = h0 t / (1 + h0 (t - 1)) (see
:class:`~gahb.sampling.config.SamplerConfig`). :func:`_step` is one iteration, line by line.

For a linear inverse problem with measurements m = M x (M M^T = I), the same prior fills in
what was not measured (Kadkhodaie & Simoncelli 2021, their Algorithm 2): the step direction is

    d_t = (I - M^T M)(f(x_{t-1}) - x_{t-1}) + M^T (m - M x_{t-1}),

which follows the prior in the unmeasured subspace and pulls the measured part onto m, and
sigma_t^2 = ||d_t||^2 / d. As in the official code, x_0 = M^T m + (I - M^T M) mean + sigma_0 z_0
and z_t are full-dimensional, so the network sees spatially uniform noise as in training (the pull
term removes it from the measured part). ``config.inverse_noise = "unmeasured"`` instead confines
all noise to the unmeasured subspace (the iterate then satisfies M x = m exactly throughout, and
sigma_t^2 = ||d_t||^2 / (d - m)); see :class:`~gahb.sampling.problem.SamplingProblem`. With
``config.reproject`` (default) the final denoised image gets its measured part replaced by m.

Reproducibility. Every sample owns a random stream (a CPU ``torch.Generator`` seeded with its
seed) from which it draws, in this order, its initial noise z_0 and then z_1, z_2, ... one per
step, as float32 standard normals. Hence

* sample k with seed s starts from the same x_0 and receives the same z_t whether it is drawn
  alone, inside any batch, on any device or in either precision;
* two denoisers sampled with the same seeds see the same initial image and the same injected
  noise at each step: differences in their samples come from the denoisers alone (the paired
  comparison of the paper's Fig 2).

The update is two separately rounded elementwise operations (x + h_t d_t, then + gamma_t z_t),
so its arithmetic for a sample does not depend on the rest of the batch (a network's batched
arithmetic may, in the last bits). Samples that stop leave the batch (no further evaluations), so
the number of denoiser evaluations is counted per sample.

Difference from the official code: it applies the update once more with the sigma_t that fell
below the threshold and then denoises the result; gahb returns the denoised image of the iterate
whose sigma_t first fell below the threshold (one evaluation fewer, same noise level up to a
factor 1 - beta h_t).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from gahb.models.base import require_eval_mode

from .config import SamplerConfig, get_config
from .operators import MeasurementOperator
from .problem import NoiseStreams, SamplingProblem
from .results import CONVERGED, DIVERGED, MAX_STEPS, SampleOutputs, SampleResult, SamplingError

__all__ = ["CONVERGED", "DIVERGED", "MAX_STEPS", "NoiseStreams", "SampleResult", "SamplingError",
           "TrajectoryRecorder", "sample"]


class TrajectoryRecorder:
    """A ``callback`` for :func:`sample` that keeps every ``every``-th step of chosen samples on the CPU.

    After sampling, ``recorder[i]`` is a dict with ``steps`` (T,), ``sigma`` (T,), ``x`` and
    ``denoised`` (T, C, H, W) for sample i: the iterate and its one-shot denoising, as shown in
    the paper's Fig 8. The first and last evaluations of each sample are always kept.
    """

    def __init__(self, every: int = 1, indices: Sequence[int] | None = None, keep_x: bool = True):
        self.every = max(1, int(every))
        self.indices = None if indices is None else set(int(i) for i in indices)
        self.keep_x = keep_x
        self._store: dict[int, dict[str, list]] = {}

    def __call__(self, info: dict) -> None:
        last = info["finished"]
        for j, i in enumerate(info["index"].tolist()):
            if self.indices is not None and i not in self.indices:
                continue
            if not (info["step"] == 1 or info["step"] % self.every == 0 or bool(last[j])):
                continue
            rec = self._store.setdefault(i, {"steps": [], "sigma": [], "x": [], "denoised": []})
            rec["steps"].append(info["step"])
            rec["sigma"].append(float(info["sigma"][j]))
            rec["denoised"].append(info["denoised"][j].detach().cpu().clone())
            if self.keep_x:
                rec["x"].append(info["x"][j].detach().cpu().clone())

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rec = self._store[i]
        out = {"steps": torch.tensor(rec["steps"]), "sigma": torch.tensor(rec["sigma"], dtype=torch.float64),
               "denoised": torch.stack(rec["denoised"])}
        if self.keep_x:
            out["x"] = torch.stack(rec["x"])
        return out

    def __contains__(self, i: int) -> bool:
        return i in self._store

    def __len__(self) -> int:
        return len(self._store)


def _resolve_seeds(seeds: int | Sequence[int], n: int | None) -> list[int]:
    if isinstance(seeds, int):
        if n is None:
            raise ValueError("with a single integer seed, give the number of samples in the shape (N, C, H, W)")
        return list(range(seeds, seeds + n))
    seeds = [int(s) for s in seeds]
    if n is not None and len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for {n} samples")
    if not seeds:
        raise ValueError("no seeds given: nothing to sample")
    return seeds


def _default_device(denoiser: nn.Module) -> torch.device:
    for t in list(denoiser.parameters()) + list(denoiser.buffers()):
        return t.device
    return torch.device("cpu")


def sample(
    denoiser: Callable[[torch.Tensor], torch.Tensor],
    shape_or_x_init: Sequence[int] | torch.Tensor,
    seeds: int | Sequence[int],
    config: SamplerConfig | str | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = True,
    operator: MeasurementOperator | None = None,
    measurement: torch.Tensor | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    raise_on_failure: bool = False,
) -> SampleResult:
    """Draws samples from the prior implicit in a blind denoiser with Algorithm 1 (paper App. A.2).

    Args:
        denoiser: a blind denoiser (gahb contract: (B, C, H, W) noisy batch on the [0, 1] scale ->
            clean estimate), in eval mode. It must treat batch rows independently.
        shape_or_x_init: (C, H, W) or (N, C, H, W) image shape, or an (N, C, H, W) tensor of
            initial images (used as x_0 as given; each stream still consumes its z_0 draw, so
            the z_t that follow are unchanged).
        seeds: one integer per sample, or a single integer s meaning s, s+1, ..., s+N-1.
        config: a :class:`SamplerConfig` or a preset name (default ``"paper"``).
        callback: called after every denoiser evaluation with a dict holding, for the samples
            still active: ``x`` (the iterates x_{t-1} that were denoised), ``denoised`` (f(x_{t-1})),
            ``sigma`` (sigma_t), ``index`` (their positions in the output), ``step`` (t, counting
            evaluations from 1), ``h`` (h_t), ``noise`` (the standard normals z_t drawn for this
            step, before scaling and projection; None when beta = 1) and ``finished`` (bool mask
            of the samples that stop at this evaluation; their ``denoised`` is their output).
        progress: show a tqdm bar over steps.
        operator: a :class:`~gahb.sampling.operators.MeasurementOperator` to solve the linear
            inverse problem ``operator(x) = measurement`` with the denoiser's prior.
        measurement: (N, m) measurements, one row per sample (required with ``operator``).
        batch_size: at most this many samples advance together (default: all). Results do not
            depend on it beyond the denoiser's own batch-size rounding.
        device: where to run; default the denoiser's device.
        raise_on_failure: raise :class:`SamplingError` (carrying the full result) if any sample
            diverges or hits ``max_steps``; otherwise a warning is issued and the failures are
            flagged in ``result.status``.

    Returns:
        A :class:`SampleResult`.
    """
    cfg = get_config(config) if not isinstance(config, SamplerConfig) else config
    require_eval_mode(denoiser, "sampling")
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    if device is None:
        device = _default_device(denoiser) if isinstance(denoiser, nn.Module) else torch.device("cpu")
    device = torch.device(device)

    x_init, n, image_shape = _parse_shape(shape_or_x_init)
    seeds = _resolve_seeds(seeds, n)
    n = len(seeds)
    measurement = _check_measurement(operator, measurement, image_shape, n, dtype, device)

    problem = SamplingProblem(image_shape, NoiseStreams(seeds, image_shape), dtype, device, x_init=x_init,
                              operator=operator, measurement=measurement, inverse_noise=cfg.inverse_noise,
                              reproject=cfg.reproject)
    outputs = SampleOutputs(n, image_shape, dtype, device)
    chunk = n if batch_size is None else max(1, int(batch_size))
    with torch.inference_mode():
        for lo in range(0, n, chunk):
            _run(denoiser, cfg, problem, torch.arange(lo, min(n, lo + chunk)), outputs, callback, progress)

    result = outputs.result(seeds, cfg, operator)
    if result.failed:
        if raise_on_failure:
            raise SamplingError(result.failure_message(), result)
        warnings.warn(result.failure_message(), RuntimeWarning, stacklevel=2)
    return result


def _parse_shape(shape_or_x_init) -> tuple[torch.Tensor | None, int | None, tuple[int, ...]]:
    """(x_init or None, number of samples or None, (C, H, W)) from a shape or a batch of initial images."""
    if isinstance(shape_or_x_init, torch.Tensor):
        if shape_or_x_init.ndim != 4:
            raise ValueError(f"initial images must be (N, C, H, W), got shape {tuple(shape_or_x_init.shape)}")
        return shape_or_x_init, shape_or_x_init.shape[0], tuple(shape_or_x_init.shape[1:])
    shape = tuple(int(s) for s in shape_or_x_init)
    if len(shape) == 4:
        return None, shape[0], shape[1:]
    if len(shape) == 3:
        return None, None, shape
    raise ValueError(f"shape must be (C, H, W) or (N, C, H, W), got {shape}")


def _check_measurement(operator, measurement, image_shape, n, dtype, device) -> torch.Tensor | None:
    """The (n, m) measurements on the working device and dtype (one row broadcast to all), after checks."""
    if (operator is None) != (measurement is None):
        raise ValueError("give both operator and measurement for an inverse problem, or neither")
    if operator is None:
        return None
    if tuple(operator.image_shape) != tuple(image_shape):
        raise ValueError(f"operator acts on images {operator.image_shape}, but samples are {image_shape}")
    if measurement.ndim == 1:
        measurement = measurement.unsqueeze(0)
    if measurement.shape[0] == 1 and n > 1:
        measurement = measurement.expand(n, -1)
    if tuple(measurement.shape) != (n, operator.num_measurements):
        raise ValueError(f"measurement must be ({n}, {operator.num_measurements}), got {tuple(measurement.shape)}")
    return measurement.to(device=device, dtype=dtype)


def _run(denoiser, cfg: SamplerConfig, problem: SamplingProblem, rows: torch.Tensor, outputs: SampleOutputs,
         callback, progress: bool) -> None:
    """Algorithm 1 for samples ``rows`` until each has converged, diverged or run out of steps."""
    from tqdm.auto import tqdm

    batch = _ActiveSet(rows, problem, outputs, callback)
    x = problem.initial(rows, cfg.sigma_0, cfg.init_mean)  # x_0 ~ N(init_mean, sigma_0^2 I)
    with tqdm(total=cfg.max_steps, disable=not progress, desc="sampling", leave=False, unit="step") as bar:
        for t in range(1, cfg.max_steps + 1):
            x = _step(denoiser, x, t, cfg, problem, batch)
            if x is None:
                break
            bar.update(1)
            bar.set_postfix(active=len(batch), sigma=f"{float(batch.sigma.max()):.3g}")


def _step(denoiser, x: torch.Tensor, t: int, cfg: SamplerConfig, problem: SamplingProblem,
          batch: _ActiveSet) -> torch.Tensor | None:
    """Iteration t of Algorithm 1 (App. A.2) on the active samples: x_{t-1} -> x_t, or None once all stopped."""
    f = _denoise(denoiser, x, problem.dtype)                   # f(x_{t-1}): the step's one evaluation
    d = problem.direction(f, x, batch.rows)                    # d_t = f(x_{t-1}) - x_{t-1}   (inverse: projected)
    sigma = (d.pow(2).flatten(1).sum(1) / problem.dof).sqrt()  # sigma_t^2 = ||d_t||^2 / d  (d - m: unmeasured noise)
    h, g = cfg.step_size(t), cfg.noise_scale(t)                # h_t;  g_t = gamma_t / sigma_t
    z = problem.draw(batch.rows) if g > 0 else None            # z_t ~ N(0, I), from each sample's own stream
    stop = _Stop.test(sigma, t, cfg)                           # loop test: stop once sigma_t < sigma_final (or a guard)
    batch.settle(t, stop, x, f, sigma, h, z)                   # callback; a stopped sample's output is f(x_{t-1})
    if not batch:                                              # every sample has stopped
        return None
    x, d, sigma, z = batch.keep(x, d, sigma, z)                # the samples that go on
    x = x + d * h                                              # x_t = x_{t-1} + h_t d_t
    if z is not None:                                          #       (beta = 1: no noise)
        x = x + problem.noise(z) * (sigma * g).view(-1, 1, 1, 1)  #     + gamma_t z_t
    return x


def _denoise(denoiser, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """f(x) in the working precision; the denoiser must return images of the input's shape."""
    denoised = denoiser(x)
    if denoised.shape != x.shape:
        raise ValueError(f"denoiser returned shape {tuple(denoised.shape)} for input {tuple(x.shape)}")
    return denoised.to(dtype)


@dataclass(frozen=True, eq=False)
class _Stop:
    """Algorithm 1's stopping test at evaluation t for each active sample, with the failure guards."""

    sigma: torch.Tensor  # sigma_t, float64 on the CPU
    converged: torch.Tensor  # sigma_t < sigma_final: the loop ends
    diverged: torch.Tensor  # sigma_t above divergence_bound or not finite
    finished: torch.Tensor  # converged, diverged, or t = max_steps

    @classmethod
    def test(cls, sigma: torch.Tensor, t: int, cfg: SamplerConfig) -> "_Stop":
        s = sigma.double().cpu()
        diverged = ~torch.isfinite(s) | (s > cfg.divergence_bound)
        converged = s < cfg.sigma_final
        return cls(s, converged, diverged, diverged | converged | torch.full_like(converged, t == cfg.max_steps))


class _ActiveSet:
    """The samples still advancing: row j of the working batch is sample ``rows[j]`` of the output.

    Bookkeeping only. At each evaluation the callback sees every active sample; those that stop
    are recorded in ``outputs`` and leave the batch, so the denoiser only sees samples that go on.
    """

    def __init__(self, rows: torch.Tensor, problem: SamplingProblem, outputs: SampleOutputs, callback):
        self.rows = rows  # global index of each working row (CPU, never changed in place)
        self.sigma = None  # sigma_t (float64, CPU) of the samples that go on
        self.problem, self.outputs, self.callback = problem, outputs, callback
        self._keep: torch.Tensor | None = None  # working rows that went on at the last settle (None: all)

    def __len__(self) -> int:
        return self.rows.numel()

    def settle(self, t: int, stop: _Stop, x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor, h: float,
               noise: torch.Tensor | None) -> None:
        """Report evaluation t to the callback; record the samples that stop, with their denoised
        image as output, and drop them from the batch."""
        if self.callback is not None:
            self.callback({"x": x, "denoised": denoised, "sigma": sigma, "index": self.rows, "step": t, "h": h,
                           "noise": noise, "finished": stop.finished})
        self._keep, self.sigma = None, stop.sigma
        if not stop.finished.any():
            return
        fin = stop.finished.nonzero().squeeze(1)
        idx, on = self.rows[fin], fin.to(x.device)
        self.outputs.record(idx, t, self.problem.output(denoised[on], idx), x[on], stop.sigma[fin],
                            stop.diverged[fin], stop.converged[fin])
        self._keep = (~stop.finished).nonzero().squeeze(1)
        self.rows, self.sigma = self.rows[self._keep], stop.sigma[self._keep]

    def keep(self, *tensors: torch.Tensor | None) -> tuple:
        """The rows of ``tensors`` (None passes through) that belong to samples that went on."""
        if self._keep is None:
            return tensors
        return tuple(None if v is None else v[self._keep.to(v.device)] for v in tensors)
