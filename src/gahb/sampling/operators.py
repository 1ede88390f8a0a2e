"""Linear measurement operators for solving inverse problems with a denoiser's implicit prior.

Kadkhodaie & Simoncelli (NeurIPS 2021, "Solving linear inverse problems using the prior implicit
in a denoiser") constrain the coarse-to-fine sampler to images consistent with linear
measurements m = M x. Every operator here has **orthonormal rows** (M M^T = I), so that

* ``adjoint(m) = M^T m`` is also the pseudo-inverse, and
* ``project(x) = M^T M x`` is the orthogonal projection onto the measured subspace.

Images are (B, C, H, W) batches; measurements are (B, m) rows.
"""

from __future__ import annotations

import math

import torch


class MeasurementOperator:
    """Base class: a linear map from (C, H, W) images to ``num_measurements`` numbers, with M M^T = I.

    Subclasses implement :meth:`forward` and :meth:`adjoint`; everything else follows.
    """

    name = "operator"

    def __init__(self, image_shape: tuple[int, int, int]):
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (channels, height, width), got {image_shape}")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.dim = math.prod(self.image_shape)

    num_measurements: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """M x: (B, C, H, W) -> (B, m)."""
        raise NotImplementedError

    def adjoint(self, m: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """M^T m: (B, m) -> (B, C, H, W)."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def pseudo_inverse(self, m: torch.Tensor) -> torch.Tensor:
        """M^+ m, equal to M^T m since the rows are orthonormal."""
        return self.adjoint(m)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Orthogonal projection onto the measured subspace, M^T M x."""
        return self.adjoint(self.forward(x))

    def complement(self, x: torch.Tensor) -> torch.Tensor:
        """Projection onto the unmeasured subspace, (I - M^T M) x."""
        return x - self.project(x)

    def mean_fill(self, m: torch.Tensor, fill: float = 0.5) -> torch.Tensor:
        """The measurements with the unmeasured part set to a constant image: M^T m + (I - M^T M) fill.

        This is the mean of the sampler's initial image, and a fair picture of what was measured.
        """
        c = torch.full((m.shape[0], *self.image_shape), float(fill), dtype=m.dtype, device=m.device)
        return self.adjoint(m) + self.complement(c)

    def matrix(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The dense (m, d) matrix, for tests and small problems."""
        eye = torch.eye(self.dim, dtype=dtype).reshape(self.dim, *self.image_shape)
        return self.forward(eye).T.contiguous()

    def _check_image(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"{self.name} operator expects images of shape (B, {', '.join(map(str, self.image_shape))}), "
                f"got {tuple(x.shape)}"
            )

    def _check_measurement(self, m: torch.Tensor) -> None:
        if m.ndim != 2 or m.shape[1] != self.num_measurements:
            raise ValueError(
                f"{self.name} operator expects measurements of shape (B, {self.num_measurements}), "
                f"got {tuple(m.shape)}"
            )

    def to_dict(self) -> dict:
        """A JSON-able description, for run records."""
        return {"name": self.name, "image_shape": list(self.image_shape),
                "num_measurements": self.num_measurements}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()})"


class PixelSubset(MeasurementOperator):
    """Keeps the pixels where ``mask`` is true (all channels of a kept location).

    M is a row selection of the identity, so M M^T = I trivially.
    """

    name = "pixels"

    def __init__(self, mask: torch.Tensor, channels: int = 1):
        if mask.ndim != 2 or mask.dtype != torch.bool:
            raise ValueError("mask must be a 2-D boolean (H, W) tensor")
        super().__init__((channels, *mask.shape))
        if not mask.any():
            raise ValueError("the mask keeps no pixel")
        self.mask = mask.clone()
        full = mask.expand(channels, *mask.shape).reshape(-1)
        self.index = torch.nonzero(full).squeeze(1)
        self.num_measurements = int(self.index.numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_image(x)
        return x.reshape(x.shape[0], -1)[:, self.index.to(x.device)]

    def adjoint(self, m: torch.Tensor) -> torch.Tensor:
        self._check_measurement(m)
        out = torch.zeros((m.shape[0], self.dim), dtype=m.dtype, device=m.device)
        out[:, self.index.to(m.device)] = m
        return out.reshape(m.shape[0], *self.image_shape)


class Inpainting(PixelSubset):
    """A missing rectangular block; every other pixel is measured.

    Args:
        image_shape: (C, H, W).
        block: (height, width) of the hole; default half of each side.
        top, left: position of the hole; default centred.
    """

    name = "inpaint"

    def __init__(self, image_shape: tuple[int, int, int], block: tuple[int, int] | None = None,
                 top: int | None = None, left: int | None = None):
        c, h, w = image_shape
        bh, bw = block if block is not None else (h // 2, w // 2)
        top = (h - bh) // 2 if top is None else top
        left = (w - bw) // 2 if left is None else left
        if not (0 < bh and 0 < bw and 0 <= top and 0 <= left and top + bh <= h and left + bw <= w):
            raise ValueError(f"hole {bh}x{bw} at ({top}, {left}) does not fit in a {h}x{w} image")
        if bh * bw == h * w:
            raise ValueError("the hole covers the whole image; nothing would be measured")
        mask = torch.ones(h, w, dtype=torch.bool)
        mask[top:top + bh, left:left + bw] = False
        super().__init__(mask, c)
        self.block, self.top, self.left = (bh, bw), top, left

    def to_dict(self) -> dict:
        return {**super().to_dict(), "block": list(self.block), "top": self.top, "left": self.left}


class RandomPixels(PixelSubset):
    """A random ``fraction`` of the pixel locations is kept (drawn from ``seed``)."""

    name = "pixels"

    def __init__(self, image_shape: tuple[int, int, int], fraction: float = 0.1, seed: int = 0):
        c, h, w = image_shape
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction of kept pixels must lie in (0, 1), got {fraction}")
        n_keep = max(1, round(fraction * h * w))
        g = torch.Generator().manual_seed(seed)
        keep = torch.randperm(h * w, generator=g)[:n_keep]
        mask = torch.zeros(h * w, dtype=torch.bool)
        mask[keep] = True
        super().__init__(mask.reshape(h, w), c)
        self.fraction, self.seed = fraction, seed

    def to_dict(self) -> dict:
        return {**super().to_dict(), "fraction": self.fraction, "seed": self.seed}


class SuperResolution(MeasurementOperator):
    """Block averaging by ``factor`` in each direction, normalised to orthonormal rows.

    Each row is 1/factor on the factor^2 pixels of one block (unit norm), so ``forward`` returns
    ``factor * block mean``; the low-resolution image is ``forward(x) / factor``.
    """

    name = "superres"

    def __init__(self, image_shape: tuple[int, int, int], factor: int = 2):
        super().__init__(image_shape)
        c, h, w = self.image_shape
        if factor < 2 or h % factor or w % factor:
            raise ValueError(f"factor must be >= 2 and divide the image sides {h}x{w}, got {factor}")
        self.factor = int(factor)
        self.low_shape = (c, h // factor, w // factor)
        self.num_measurements = math.prod(self.low_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_image(x)
        s = self.factor
        c, hl, wl = self.low_shape
        blocks = x.reshape(x.shape[0], c, hl, s, wl, s).sum(dim=(3, 5))
        return (blocks / s).reshape(x.shape[0], -1)

    def adjoint(self, m: torch.Tensor) -> torch.Tensor:
        self._check_measurement(m)
        s = self.factor
        low = m.reshape(m.shape[0], *self.low_shape) / s
        return low.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)

    def low_resolution(self, m: torch.Tensor) -> torch.Tensor:
        """The block-mean image (B, C, H/factor, W/factor) that the measurements encode."""
        return m.reshape(m.shape[0], *self.low_shape) / self.factor

    def to_dict(self) -> dict:
        return {**super().to_dict(), "factor": self.factor}


class CompressiveSensing(MeasurementOperator):
    """Random orthogonal measurements: ``m`` random orthonormal rows.

    Args:
        image_shape: (C, H, W).
        fraction: number of measurements as a fraction of d (ignored if ``num_measurements``).
        num_measurements: number of measurements m (0 < m < d).
        seed: the operator's own random seed.
        method: ``"dense"`` draws a Haar-distributed (m, d) matrix (QR of a Gaussian matrix with
            the sign convention that makes it uniform); ``"fast"`` uses the structured transform
            S F P D (random signs D, random permutation P, an orthonormal real Fourier transform
            F, a random subset S of its outputs), O(d log d) and no stored matrix; ``"auto"``
            uses the dense matrix when it has at most 2^24 entries.
    """

    name = "cs"

    def __init__(self, image_shape: tuple[int, int, int], fraction: float | None = 0.1,
                 num_measurements: int | None = None, seed: int = 0, method: str = "auto"):
        super().__init__(image_shape)
        d = self.dim
        if num_measurements is None:
            if fraction is None or not 0.0 < fraction < 1.0:
                raise ValueError(f"fraction of measurements must lie in (0, 1), got {fraction}")
            num_measurements = max(1, round(fraction * d))
        if not 0 < num_measurements < d:
            raise ValueError(f"num_measurements must lie in (0, {d}), got {num_measurements}")
        if method == "auto":
            method = "dense" if num_measurements * d <= 2**24 else "fast"
        if method not in ("dense", "fast"):
            raise ValueError(f"method must be 'auto', 'dense' or 'fast', got {method!r}")
        self.num_measurements = int(num_measurements)
        self.fraction = self.num_measurements / d
        self.seed, self.method = seed, method
        g = torch.Generator().manual_seed(seed)
        if method == "dense":
            gauss = torch.randn((d, self.num_measurements), generator=g, dtype=torch.float64)
            q, r = torch.linalg.qr(gauss)
            # Fixing the sign of diag(R) makes Q Haar-distributed rather than QR-convention-biased.
            signs = torch.sign(torch.diagonal(r))
            signs[signs == 0] = 1.0
            q = q * signs
            self.rows = q.T.contiguous()  # (m, d), orthonormal rows
        else:
            self.signs = torch.randint(0, 2, (d,), generator=g).double() * 2 - 1
            self.perm = torch.randperm(d, generator=g)
            self.inv_perm = torch.argsort(self.perm)
            self.keep = torch.sort(torch.randperm(d, generator=g)[: self.num_measurements]).values

    # An orthonormal real Fourier transform of length n: the DC term, then sqrt(2) times the real
    # and imaginary parts of the positive frequencies, then the Nyquist term when n is even.
    @staticmethod
    def _real_fft(v: torch.Tensor) -> torch.Tensor:
        n = v.shape[1]
        c = torch.fft.rfft(v, dim=1, norm="ortho")
        k = (n - 1) // 2
        mid = torch.stack([c[:, 1:k + 1].real, c[:, 1:k + 1].imag], dim=2).reshape(v.shape[0], 2 * k)
        parts = [c[:, :1].real, math.sqrt(2.0) * mid]
        if n % 2 == 0:
            parts.append(c[:, n // 2:n // 2 + 1].real)
        return torch.cat(parts, dim=1)

    @staticmethod
    def _real_ifft(w: torch.Tensor) -> torch.Tensor:
        n = w.shape[1]
        k = (n - 1) // 2
        pairs = w[:, 1:2 * k + 1].reshape(w.shape[0], k, 2) / math.sqrt(2.0)
        c = [torch.complex(w[:, :1], torch.zeros_like(w[:, :1])), torch.complex(pairs[..., 0], pairs[..., 1])]
        if n % 2 == 0:
            c.append(torch.complex(w[:, n - 1:n], torch.zeros_like(w[:, :1])))
        return torch.fft.irfft(torch.cat(c, dim=1), n=n, dim=1, norm="ortho")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_image(x)
        v = x.reshape(x.shape[0], -1)
        if self.method == "dense":
            return v @ self.rows.to(v).T
        v = (v * self.signs.to(v))[:, self.perm.to(v.device)]
        return self._real_fft(v)[:, self.keep.to(v.device)]

    def adjoint(self, m: torch.Tensor) -> torch.Tensor:
        self._check_measurement(m)
        if self.method == "dense":
            v = m @ self.rows.to(m)
        else:
            w = torch.zeros((m.shape[0], self.dim), dtype=m.dtype, device=m.device)
            w[:, self.keep.to(m.device)] = m
            v = self._real_ifft(w)[:, self.inv_perm.to(m.device)] * self.signs.to(m)
        return v.reshape(m.shape[0], *self.image_shape)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "fraction": self.fraction, "seed": self.seed, "method": self.method}


TASKS = ("inpaint", "pixels", "superres", "cs")


def make_operator(task: str, image_shape: tuple[int, int, int], *, fraction: float | None = None,
                  factor: int | None = None, block: tuple[int, int] | None = None, seed: int = 0,
                  method: str = "auto") -> MeasurementOperator:
    """Build an operator by task name: ``inpaint`` (centred missing block, ``block`` size),
    ``pixels`` (random ``fraction`` of pixels kept, default 0.1), ``superres`` (block averaging by
    ``factor``, default 4), ``cs`` (``fraction`` of d random orthogonal measurements, default 0.1)."""
    if task == "inpaint":
        return Inpainting(image_shape, block=block)
    if task == "pixels":
        return RandomPixels(image_shape, fraction=0.1 if fraction is None else fraction, seed=seed)
    if task == "superres":
        return SuperResolution(image_shape, factor=4 if factor is None else factor)
    if task == "cs":
        return CompressiveSensing(image_shape, fraction=0.1 if fraction is None else fraction, seed=seed,
                                  method=method)
    raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
