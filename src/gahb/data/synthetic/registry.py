"""The named synthetic datasets: one entry point, streaming, spec strings and a JSON-able config.

``synthetic_dataset("calpha", n, size, seed, alpha=2)`` dispatches to the generator of that name
with its options; :func:`parse_synthetic_spec` reads the same request from a string such as
``"calpha:alpha=2,size=80"``, and :class:`SyntheticConfig` stores it beside what it produced.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .calpha import _calpha_block, _calpha_resolve, _check_exponent, calpha_images
from .disks import disk_images, sample_disk_params
from .rescaled import _as_image, rescaled_image_dataset
from .seeding import BLOCK, Size, _block_rngs, _check_n, _hw, _torch_threads
from .sinusoids import sample_sinusoid_params, sinusoid_images
from .strokes import sample_stroke_params, stroke_images

SYNTHETIC_NAMES = ("calpha", "disks", "sinusoids", "rescaled", "strokes")


def _gen_calpha(n, size, seed, alpha=2.0, beta=None, variant="code", contrast=None,
                antialias=None, progress=False, threads=1):
    return calpha_images(n, size, alpha=alpha, beta=beta, seed=seed, variant=variant,
                         contrast=contrast, antialias=antialias, progress=progress, threads=threads)


def _gen_disks(n, size, seed, min_radius=3.0, progress=False, threads=1):
    return disk_images(sample_disk_params(n, size, seed, min_radius=min_radius), size,
                       progress=progress, threads=threads)


def _gen_sinusoids(n, size, seed, axis="x", max_amplitude=0.5, progress=False, threads=1):
    return sinusoid_images(sample_sinusoid_params(n, seed, max_amplitude), size, axis=axis)


def _gen_strokes(n, size, seed, max_strokes=3, progress=False, threads=1):
    return stroke_images(sample_stroke_params(n, max_strokes, seed), size)


def _gen_rescaled(n, size, seed, base="calpha", base_seed=None, scale_min=0.0, scale_max=1.0,
                  progress=False, threads=1):
    x = _load_base_image(base, size, seed if base_seed is None else base_seed)
    return rescaled_image_dataset(x, n, seed, scale_range=(scale_min, scale_max))


_GENERATORS: dict[str, Callable[..., torch.Tensor]] = {
    "calpha": _gen_calpha,
    "disks": _gen_disks,
    "sinusoids": _gen_sinusoids,
    "rescaled": _gen_rescaled,
    "strokes": _gen_strokes,
}


def _load_base_image(base, size: Size, seed: int) -> torch.Tensor:
    """A base image for the "rescaled" dataset: tensor/array, a generator name or a file."""
    h, w = _hw(size)
    if isinstance(base, str) and base in ("calpha", "disks", "sinusoids"):
        x = synthetic_dataset(base, 1, (h, w), seed)[0]
    elif isinstance(base, (str, Path)):
        path = Path(base).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"base image {path} does not exist (or name a generator: "
                                    "calpha, disks, sinusoids)")
        if path.suffix in (".pt", ".pth"):
            t = torch.load(path, map_location="cpu", weights_only=True)
            x = t[0] if torch.is_tensor(t) and t.ndim == 4 else t
        else:
            from PIL import Image

            with Image.open(path) as im:
                x = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        x = _as_image(x)
    else:
        x = _as_image(base)
    if tuple(x.shape[-2:]) != (h, w):
        raise ValueError(f"base image is {tuple(x.shape[-2:])}, but size={h}x{w} was requested")
    return x


def _allowed_kwargs(name: str) -> list[str]:
    sig = inspect.signature(_GENERATORS[name])
    return [p for p in sig.parameters if p not in ("n", "size", "seed", "progress", "threads")]


def _check_name(name: str) -> str:
    if name not in _GENERATORS:
        raise ValueError(f"unknown synthetic dataset {name!r}; choose from {SYNTHETIC_NAMES}")
    return name


def synthetic_dataset(name: str, n: int, size: Size = 80, seed: int = 0, progress: bool = False,
                      threads: int | None = 1, **kw) -> torch.Tensor:
    """Generate ``n`` images of a named synthetic dataset: float32 (n, C, H, W) in [0, 1].

    Names and their keyword arguments (defaults in brackets):

    * ``calpha``: alpha [2.0], beta [None = alpha], variant ["code"], contrast [variant default],
      antialias [variant default]. See :func:`calpha_images`.
    * ``disks``: min_radius [3.0]. See :func:`sample_disk_params`, :func:`disk_images`.
    * ``sinusoids``: axis ["x"], max_amplitude [0.5]. See :func:`sinusoid_images`.
    * ``strokes``: max_strokes [3]. Sparse bright anti-aliased curves on black (:func:`stroke_images`).
    * ``rescaled``: base ["calpha": one image of that generator drawn with base_seed; or a
      tensor/array, or a .pt/.png path], base_seed [None = seed], scale_min [0.0],
      scale_max [1.0]. See :func:`rescaled_image_dataset`.

    ``threads``: torch threads while generating (default 1, see :func:`_torch_threads`).
    """
    _check_name(name)
    allowed = _allowed_kwargs(name)
    bad = sorted(set(kw) - set(allowed))
    if bad:
        raise ValueError(f"unknown option(s) {bad} for synthetic dataset {name!r}; allowed: {allowed}")
    with _torch_threads(threads):
        return _GENERATORS[name](_check_n(n), size, seed, progress=progress, threads=threads, **kw)


def iter_synthetic(name: str, n: int, size: Size = 80, seed: int = 0, chunk: int = 64 * BLOCK,
                   threads: int | None = 1, **kw) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start, images)`` chunks equal to ``synthetic_dataset(name, n, ...)[start:...]``.

    For streaming very large datasets to disk with bounded memory (one chunk, ``chunk`` rounded
    down to a multiple of BLOCK). The chunks are identical to slices of the whole dataset
    because each random block is seeded on its own.
    """
    n = _check_n(n)
    chunk = max(BLOCK, (int(chunk) // BLOCK) * BLOCK)
    _check_name(name)
    if name == "calpha":
        opts = dict(kw)
        alpha = _check_exponent("alpha", opts.pop("alpha", 2.0))
        beta = opts.pop("beta", None)
        beta = alpha if beta is None else _check_exponent("beta", beta)
        variant = opts.pop("variant", "code")
        contrast, antialias = _calpha_resolve(variant, opts.pop("contrast", None),
                                              opts.pop("antialias", None))
        if opts:
            raise ValueError(f"unknown option(s) {sorted(opts)} for synthetic dataset 'calpha'")
        h, w = _hw(size)
        buf: list[torch.Tensor] = []
        start = 0
        for lo, hi, rng in _block_rngs(seed, n):
            with _torch_threads(threads):
                buf.append(_calpha_block(rng, hi - lo, h, w, alpha, beta, variant, contrast,
                                         antialias, torch.float32))
            if hi - start >= chunk or hi == n:
                yield start, torch.cat(buf)
                buf, start = [], hi
        return
    # The other generators draw few random numbers per image: draw them all, render per chunk.
    allowed = _allowed_kwargs(name)
    bad = sorted(set(kw) - set(allowed))
    if bad:
        raise ValueError(f"unknown option(s) {bad} for synthetic dataset {name!r}; allowed: {allowed}")
    if name == "disks":
        params = sample_disk_params(n, size, seed, **kw)
        render = lambda lo, hi: disk_images(params[lo:hi], size, threads=threads)  # noqa: E731
    elif name == "strokes":
        params = sample_stroke_params(n, kw.get("max_strokes", 3), seed)
        render = lambda lo, hi: stroke_images(params[lo:hi], size)  # noqa: E731
    elif name == "sinusoids":
        axis = kw.pop("axis", "x")
        params = sample_sinusoid_params(n, seed, **kw)
        render = lambda lo, hi: sinusoid_images(params[lo:hi], size, axis=axis)  # noqa: E731
    else:
        base = _load_base_image(kw.get("base", "calpha"), size,
                                seed if kw.get("base_seed") is None else kw["base_seed"])
        _, scales = rescaled_image_dataset(base, n, seed, (kw.get("scale_min", 0.0),
                                                           kw.get("scale_max", 1.0)), True)
        render = lambda lo, hi: (scales[lo:hi].to(torch.float32)[:, None, None, None]  # noqa: E731
                                 * base[None]).contiguous()
    for lo in range(0, n, chunk):
        with _torch_threads(threads):
            images = render(lo, min(lo + chunk, n))
        yield lo, images


def parse_synthetic_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Parse ``"name:key=value,key=value"`` into ``(name, kwargs)`` with the one spec parser
    (:func:`gahb.utils.config.parse_spec`).

    Values are inferred: bool (true/false), None (none), int, float, an (H, W) tuple ("40x80") or a
    string. Keys are checked against the generator's options plus ``size``, ``n`` and ``seed``,
    e.g. ``parse_synthetic_spec("calpha:alpha=2,size=80") == ("calpha", {"alpha": 2, "size": 80})``.
    """
    from gahb.utils.config import parse_items, parse_spec

    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty synthetic spec {spec!r}; expected e.g. 'calpha:alpha=2,size=80'")
    name = spec.strip().partition(":")[0].strip().lower()
    _check_name(name)
    allowed = set(_allowed_kwargs(name)) | {"size", "n", "seed"}
    rest = spec.strip().partition(":")[2]
    for key, _ in parse_items(rest, f"synthetic spec {spec!r}"):
        if key not in allowed:
            raise ValueError(f"unknown option {key!r} for synthetic dataset {name!r} in {spec!r}; "
                             f"allowed: {sorted(allowed)}")
    _, kwargs = parse_spec(f"{name}:{rest}", None, "synthetic spec")
    return name, kwargs


@dataclass(frozen=True)
class SyntheticConfig:
    """A synthetic dataset, fully specified and JSON-able (dump it next to what it produced)."""

    name: str = "calpha"
    n: int = 1000
    size: int | tuple[int, int] = 80
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        _check_name(self.name)
        _check_n(self.n)
        if not isinstance(self.size, int):
            object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        _hw(self.size)
        bad = sorted(set(self.params) - set(_allowed_kwargs(self.name)))
        if bad:
            raise ValueError(f"unknown option(s) {bad} for synthetic dataset {self.name!r}")

    @classmethod
    def from_spec(cls, spec: str, n: int | None = None, seed: int | None = None,
                  size: Size | None = None) -> "SyntheticConfig":
        """Build from ``"calpha:alpha=2,size=80"``; explicit arguments override the string."""
        name, kw = parse_synthetic_spec(spec)
        spec_n, spec_seed, spec_size = kw.pop("n", 1000), kw.pop("seed", 0), kw.pop("size", 80)
        return cls(name=name, n=int(spec_n if n is None else n),
                   size=spec_size if size is None else size,
                   seed=int(spec_seed if seed is None else seed), params=kw)

    def generate(self, progress: bool = False) -> torch.Tensor:
        return synthetic_dataset(self.name, self.n, self.size, self.seed, progress=progress,
                                 **self.params)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(self.size, tuple):
            d["size"] = list(self.size)
        if not all(isinstance(v, (str, int, float, bool, type(None), list, tuple))
                   for v in self.params.values()):
            raise TypeError("SyntheticConfig.params holds a value that is not JSON-able (pass "
                            "file paths, not tensors, to make the config reproducible)")
        d["params"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SyntheticConfig":
        return cls(name=d["name"], n=int(d["n"]), size=d["size"], seed=int(d["seed"]),
                   params=dict(d.get("params", {})))

    def to_spec(self) -> str:
        """The inverse of :meth:`from_spec` (for JSON-able scalar params)."""
        def fmt(v):
            if isinstance(v, (tuple, list)):
                return "x".join(str(int(s)) for s in v)
            return str(v)

        items = [f"size={fmt(self.size)}", f"n={self.n}", f"seed={self.seed}"]
        items += [f"{k}={fmt(v)}" for k, v in self.params.items()]
        return f"{self.name}:" + ",".join(items)
