"""What Algorithm 1 (paper App. A.2) is asked to sample: image shape, noise streams, x_0, measurements.

:class:`SamplingProblem` holds everything about one :func:`~gahb.sampling.sampler.sample` call that
is fixed per sample (its random stream, its initial image, its measurements) and the three places
where an inverse problem changes the unconditional algorithm: the initial image, the step
direction d_t and where the injected noise lives. Per-sample data are indexed by the sample's
global row, so they follow a sample wherever it sits in the working batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .operators import MeasurementOperator


class NoiseStreams:
    """One random stream per sample: a CPU generator seeded with the sample's seed.

    ``draw(rows)`` returns one float32 standard-normal image per requested row, each from that
    row's own generator, so what a sample receives depends only on its seed and on how many draws
    it made before, never on the other samples.
    """

    def __init__(self, seeds: Sequence[int], shape: tuple[int, ...]):
        self.shape = tuple(shape)
        self.generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]

    def draw(self, rows: Sequence[int]) -> torch.Tensor:
        out = torch.empty((len(rows), *self.shape), dtype=torch.float32)
        for j, r in enumerate(rows):
            torch.randn(self.shape, generator=self.generators[r], dtype=torch.float32, out=out[j])
        return out


@dataclass(frozen=True, eq=False)
class SamplingProblem:
    """The samples to draw, for unconditional sampling or a linear inverse problem M x = m.

    Attributes:
        image_shape: (C, H, W).
        streams: the samples' random streams, one per global row (z_0, then one z_t per step).
        dtype, device: working precision and device of the iterate.
        x_init: (N, C, H, W) initial images used as given, or None to draw x_0.
        operator: the measurement operator M (orthonormal rows), or None.
        measurement: (N, m) measurements m on ``device``, one row per sample, or None.
        inverse_noise: ``"full"`` (noise in all d dimensions) or ``"unmeasured"`` (noise only in
            the unmeasured subspace); see :class:`~gahb.sampling.config.SamplerConfig`.
        reproject: replace the measured part of the output by m (inverse problems).
    """

    image_shape: tuple[int, ...]
    streams: NoiseStreams
    dtype: torch.dtype
    device: torch.device
    x_init: torch.Tensor | None = None
    operator: MeasurementOperator | None = None
    measurement: torch.Tensor | None = None
    inverse_noise: str = "full"
    reproject: bool = True

    @property
    def unmeasured_noise(self) -> bool:
        """Whether noise is confined to the unmeasured subspace (an inverse problem with ``"unmeasured"``)."""
        return self.operator is not None and self.inverse_noise == "unmeasured"

    @property
    def dof(self) -> int:
        """The dimension the noise lives in: d, or d - m when it is confined to the unmeasured subspace."""
        d = math.prod(self.image_shape)
        return d - self.operator.num_measurements if self.unmeasured_noise else d

    def draw(self, rows: torch.Tensor) -> torch.Tensor:
        """The next standard-normal image (float32, CPU) of each sample ``rows``, from its own stream."""
        return self.streams.draw(rows.tolist())

    def initial(self, rows: torch.Tensor, sigma_0: float, mean: float) -> torch.Tensor:
        """x_0 of samples ``rows``: N(mean, sigma_0^2 I) from each stream's first draw z_0, or the
        given initial images (z_0 is drawn all the same, so the z_t that follow do not change).

        For an inverse problem, x_0 = M^T m + (I - M^T M) mean + sigma_0 z_0 (noise everywhere) or
        M^T m + (I - M^T M)(mean + sigma_0 z_0) (noise in the unmeasured subspace only)."""
        z0 = self.draw(rows).to(device=self.device, dtype=self.dtype)
        if self.x_init is not None:
            return self.x_init[rows].to(device=self.device, dtype=self.dtype)
        x = z0 * sigma_0 + mean
        if self.operator is None:
            return x
        op, m = self.operator, self.measurement[rows]
        if self.unmeasured_noise:
            return op.complement(x) + op.adjoint(m)
        return op.complement(torch.full_like(x, mean)) + op.adjoint(m) + z0 * sigma_0

    def direction(self, denoised: torch.Tensor, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The step direction d_t at iterates ``x`` of samples ``rows``: the denoiser residual
        f(x) - x, or for an inverse problem its unmeasured part plus the pull onto the measurements,
        (I - M^T M)(f(x) - x) + M^T (m - M x)."""
        d = denoised - x
        if self.operator is None:
            return d
        op = self.operator
        return op.complement(d) + op.adjoint(self.measurement[rows.to(self.device)] - op.forward(x))

    def noise(self, z: torch.Tensor) -> torch.Tensor:
        """Standard normals z_t (float32, CPU) as injected noise: on the working device and dtype,
        projected onto the unmeasured subspace when the noise lives there."""
        z = z.to(device=self.device, dtype=self.dtype)
        return self.operator.complement(z) if self.unmeasured_noise else z

    def output(self, denoised: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The result f(x_T) of samples ``rows``; for an inverse problem with ``reproject``, its
        measured part replaced by m: (I - M^T M) f(x_T) + M^T m."""
        if self.operator is None or not self.reproject:
            return denoised
        return self.operator.complement(denoised) + self.operator.adjoint(self.measurement[rows.to(self.device)])
