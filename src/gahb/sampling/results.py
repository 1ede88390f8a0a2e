"""What Algorithm 1 (paper App. A.2) gives back: per-sample outputs, the result and its failure flags.

:class:`SampleOutputs` owns the per-sample arrays while :func:`~gahb.sampling.sampler.sample` runs:
each sample is written once, at the evaluation where it stops (converged, diverged or out of
steps). :meth:`SampleOutputs.result` turns them into the :class:`SampleResult` returned to callers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import SamplerConfig
from .operators import MeasurementOperator

CONVERGED, DIVERGED, MAX_STEPS = "converged", "diverged", "max_steps"


class SamplingError(RuntimeError):
    """Raised by :func:`sample` with ``raise_on_failure=True``; ``.result`` keeps every sample."""

    def __init__(self, message: str, result: "SampleResult"):
        super().__init__(message)
        self.result = result


@dataclass
class SampleResult:
    """What :func:`sample` returns; row i belongs to ``seeds[i]``.

    Attributes:
        samples: (N, C, H, W) final images, one denoising step after the last iterate (for
            inverse problems, re-projected onto the measurements when ``config.reproject``).
        last_iterate: (N, C, H, W) the last iterate x_T itself (still holding noise sigma_T).
        steps: (N,) updates applied (= evaluations - 1).
        evaluations: (N,) denoiser evaluations spent on each sample, the final denoising included.
        sigma: (N,) effective noise sigma_t at the last evaluation.
        status: per sample ``"converged"`` (sigma_t < sigma_final), ``"diverged"`` (sigma_t above
            ``config.divergence_bound`` or not finite) or ``"max_steps"``.
        seeds: the seed of each sample.
        config: the sampler configuration used.
        operator: the measurement operator, for inverse problems.
    """

    samples: torch.Tensor
    last_iterate: torch.Tensor
    steps: torch.Tensor
    evaluations: torch.Tensor
    sigma: torch.Tensor
    status: list[str]
    seeds: list[int]
    config: SamplerConfig
    operator: MeasurementOperator | None = None

    def _mask(self, what: str) -> torch.Tensor:
        return torch.tensor([s == what for s in self.status], dtype=torch.bool)

    @property
    def converged(self) -> torch.Tensor:
        return self._mask(CONVERGED)

    @property
    def diverged(self) -> torch.Tensor:
        return self._mask(DIVERGED)

    @property
    def hit_max_steps(self) -> torch.Tensor:
        return self._mask(MAX_STEPS)

    @property
    def failed(self) -> list[int]:
        """Indices of the samples that did not converge."""
        return [i for i, s in enumerate(self.status) if s != CONVERGED]

    @property
    def ok(self) -> bool:
        return not self.failed

    def failure_message(self) -> str:
        parts = []
        for what, why in ((DIVERGED, f"diverged (sigma_t > {self.config.divergence_bound} or not finite)"),
                          (MAX_STEPS, f"still above sigma_final after max_steps={self.config.max_steps}")):
            idx = [i for i, s in enumerate(self.status) if s == what]
            if idx:
                parts.append(f"{why}: samples {idx} (seeds {[self.seeds[i] for i in idx]})")
        return f"{len(self.failed)} of {len(self.status)} samples failed; " + "; ".join(parts)

    def summary(self) -> dict:
        """A JSON-able record: the config and, per sample, seed, status, steps, evaluations, sigma."""
        ev = self.evaluations.double()
        return {
            "config": self.config.to_dict(),
            "operator": None if self.operator is None else self.operator.to_dict(),
            "num_samples": len(self.status),
            "evaluations_per_sample": {"mean": ev.mean().item(), "min": int(ev.min()), "max": int(ev.max())},
            "num_failed": len(self.failed),
            "samples": [
                {"index": i, "seed": self.seeds[i], "status": self.status[i], "steps": int(self.steps[i]),
                 "evaluations": int(self.evaluations[i]), "final_sigma": float(self.sigma[i])}
                for i in range(len(self.status))
            ],
        }


class SampleOutputs:
    """The per-sample results of one :func:`sample` call, filled in as samples stop.

    Attributes:
        samples, last_iterate: (N, C, H, W) output image and last iterate, in the working dtype
            on the working device.
        steps: (N,) updates applied before the sample stopped.
        sigma: (N,) float64 sigma_t at the evaluation where it stopped.
        status: ``"converged"``, ``"diverged"`` or ``"max_steps"`` per sample.
    """

    def __init__(self, n: int, image_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device):
        self.samples = torch.empty((n, *image_shape), dtype=dtype, device=device)
        self.last_iterate = torch.empty_like(self.samples)
        self.steps = torch.zeros(n, dtype=torch.long)
        self.sigma = torch.full((n,), math.nan, dtype=torch.float64)
        self.status = [""] * n

    def record(self, index: torch.Tensor, t: int, final: torch.Tensor, last: torch.Tensor, sigma: torch.Tensor,
               diverged: torch.Tensor, converged: torch.Tensor) -> None:
        """Samples ``index`` stop at evaluation t with output ``final``, last iterate ``last`` and
        ``sigma`` (sigma_t, float64 CPU); a sample neither ``diverged`` nor ``converged`` ran out of steps."""
        self.samples[index.to(self.samples.device)] = final
        self.last_iterate[index.to(self.samples.device)] = last
        self.sigma[index] = sigma
        self.steps[index] = t - 1  # one update after each evaluation but the last
        for i, bad, done in zip(index.tolist(), diverged.tolist(), converged.tolist()):
            self.status[i] = DIVERGED if bad else CONVERGED if done else MAX_STEPS

    def result(self, seeds: list[int], config: SamplerConfig, operator: MeasurementOperator | None) -> SampleResult:
        """The :class:`SampleResult` (copies: tensors made under inference mode cannot enter autograd later,
        e.g. a Jacobian at a sample)."""
        return SampleResult(samples=self.samples.clone(), last_iterate=self.last_iterate.clone(),
                            steps=self.steps.clone(), evaluations=self.steps + 1, sigma=self.sigma.clone(),
                            status=self.status, seeds=seeds, config=config, operator=operator)
