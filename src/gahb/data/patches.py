"""Patches of photographs: a real dataset of small natural images (paper section 2; 40x40 as in Fig 15).

The paper's transition (section 2) is measured on face and bedroom images at several resolutions,
40x40 among them (Fig 15). Photographs give a second, less homogeneous real dataset at that size:
``patches:DIR`` cuts every photograph under ``DIR`` into square patches.

Spec grammar (the options are parsed by the project's one ``key=value`` parser,
:func:`gahb.utils.config.parse_spec`)::

    patches:DIR                       40x40 non-overlapping patches
    patches:DIR:size=40,stride=40     the same, written out
    patches:DIR:size=32,stride=16     overlapping 32x32 patches, one every 16 pixels

``size`` (default 40) is the patch side in pixels of the photograph: photographs are cut, never
resized. ``stride`` (default = ``size``) is the step of a regular grid, centred in each photograph
(the unused margin split evenly between the two sides, the extra pixel of an odd margin at the
bottom or right), so a 180x180 BSD400 photograph gives a 4 x 4 grid of 40x40 patches starting at
pixel 10. The grid, not random crops, is the default: with stride = size no pixel is in two patches,
so two training patches never share content, which the copy test (a sample is a copy when its
nearest training image is much nearer than the second nearest) relies on; and it needs no seed.

Every patch is grayscale (RGB mean, as everywhere in gahb) on [0, 1], in a fixed order: photographs
in sorted relative-path order (as ``folder:``), patches row-major within each. Photographs may
differ in size; one smaller than a patch is an error naming the file. The prepared pool
(:mod:`gahb.data.prepared`) records every photograph (relative name, sha256 of the file, size,
number of patches) and the geometry in its manifest, and the source photograph of each kept patch
in ``groups.npy``; :func:`gahb.data.splits.split_groups` then draws S1, S2 and the test set so
that no photograph contributes to two of them (``load_split`` does this whenever a pool has groups).

Deduplication: the paper's rule applies unchanged (|correlation| > 0.95 after 20x20 average pooling
and mean removal, here 2x2 windows at 40x40; across the whole pool, so also between photographs).
Without it, near-identical patches (smooth gradients of sky or wall, repeated texture) would sit in
one training set, where a copy of one of them has a second neighbour as near as the first and is
not counted as a copy, and across S1/S2/test, where they make a held-out patch look memorised and
shrink the train - test PSNR gap. On BSD400 at 40x40 it removes 102 of 6,400 patches (most of them
low-contrast, two thirds matched to another photograph). Near-*constant* patches are not removed:
their mean-removed correlation is noise (the paper's rule never flags them either); they are about
5% of BSD400's patches (pixel std < 0.02) and are left in, so that the patch distribution stays
that of the photographs.

What this means for the transition's measures on BSD400 at 40x40 (split seed 0, measured on the
prepared pool, no network involved): the uncentred cosine is dominated by the patch mean, so the
paper-style "cosine to the nearest training image > 0.95" calls 57% (N = 10) to 67% (N = 2,826)
of the *held-out* patches copies and says nothing here; the calibrated copy test (d1/d2 < 1/3,
:mod:`gahb.analysis.copies`) counts 2% (N = 10) and 0% (N >= 100) of held-out patches as copies,
and 100% of noisy training copies (sigma 0.02) at N = 10. At N = 2,826 it still finds every noisy
copy of a patch with pixel std >= 0.1, but none of those with std < 0.05 (17% of patches), whose
texture the sigma = 0.02 noise matches: the calibration's "noisy copies" fraction is 0.77 there,
an effect of flat patches, not of the samples.

The BSD400 run (Fig 15's 40x40 resolution, within 2 hours on 2 CPU cores)::

    gahb study transition --preset standard --threads 2 \
        --dataset patches:../shared/published/images/Train400 \
        --set 'ns=[1,10,100,1000,"max"]' --set steps=600 --set images_per_epoch=9600 \
        --set 'other_samplers=["deterministic"]' \
        --set runs_dir=runs/transition-bsd400 --out docs/results/transition-bsd400

``../shared/published/images/Train400`` holds the 400 BSD400 training photographs (180x180 gray
PNGs) of the bias-free denoising repository (Mohan et al., ICLR 2020). The pool: 6,400 patches,
6,298 after deduplication; 629 test patches from 40 photographs, two halves of 180 photographs
each, "max" = 2,826 patches per half. Ten unet-small networks of 600 steps of 64 patches (4
epochs of 9,600, the learning rate halved after each; at least 4 passes over N for every N),
then 256 paired samples per network with the paper's sampler and the deterministic one. Estimate:
unet-small trains on 40x40 patches at about 0.55 times its 28x28 speed (timed side by side), i.e.
100-145 patches/s on 2 idle cores (from the Fashion-MNIST standard run's 266 images/s, and from
unet-40's 24 images/s at 40x40, a quarter of unet-small's speed), so training takes 45-65 minutes;
measuring one N took 250-275 s at 28x28 with three samplers, about 400-450 s at 40x40 with two,
30-40 minutes for five; 75-105 minutes in all. ``stride=20`` instead (overlapping patches, 25,600
cut, 24,947 kept, max N = 11,931) reaches larger N at the same training cost per network.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from gahb.data.readers.images import ImageReadError, _decode, _normalise_mode, _pil_to_stored, _stored_scale, list_images
from gahb.data.readers.stored import ArrayFactory, RawImages, _check_channels, _numpy_factory

PATCH_SIZE = 40  # the paper's Fig 15 resolution


@dataclass(frozen=True)
class PatchGeometry:
    """How photographs are cut: ``size`` x ``size`` windows every ``stride`` pixels (None: = size),
    on a grid centred in each photograph (module docstring)."""

    size: int = PATCH_SIZE
    stride: int | None = None

    def __post_init__(self) -> None:
        for name in ("size", "stride"):
            v = getattr(self, name)
            if v is None and name == "stride":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"patches: {name} must be a positive integer, got {v!r}")

    @property
    def step(self) -> int:
        return int(self.stride if self.stride is not None else self.size)

    def grid(self, width: int, height: int) -> tuple[list[int], list[int]]:
        """(tops, lefts): the pixel rows and columns where the patches of a photograph start."""
        def axis(length: int) -> list[int]:
            count = (length - self.size) // self.step + 1
            start = (length - ((count - 1) * self.step + self.size)) // 2
            return [start + i * self.step for i in range(count)]

        if width < self.size or height < self.size:
            raise ValueError(f"a {width}x{height} photograph is smaller than a {self.size}x{self.size} patch")
        return axis(height), axis(width)

    def to_dict(self) -> dict:
        return {**asdict(self), "stride": self.step, "grid": "regular, centred"}


def parse_patches(rest: str) -> tuple[Path, dict]:
    """``"DIR"`` or ``"DIR:key=value,..."`` (the text after ``patches:``) -> (folder, the options given).

    The options follow the last ``:`` when it holds an ``=``, so a folder name may contain ``:``.
    They are checked here; :func:`patch_geometry` completes them.
    """
    from gahb.utils.config import field_types, parse_spec

    folder, sep, options = rest.rpartition(":")
    if not sep or "=" not in options:
        folder, options = rest, ""
    if not folder:
        raise ValueError(f"dataset spec 'patches:{rest}' has no folder (write patches:DIR[:size=40,stride=40])")
    try:
        _, values = parse_spec(f"patches:{options}", field_types(PatchGeometry()), what="options")
        PatchGeometry(**values)
    except ValueError as exc:
        raise ValueError(f"dataset spec 'patches:{rest}': {exc}") from None
    return Path(folder).expanduser().resolve(), values


def patch_geometry(options: dict | None, size: int | None = None) -> PatchGeometry:
    """The geometry of a ``patches:`` spec's ``options``; ``size`` (a ``--size`` flag) sets the patch
    side when the spec does not, and must agree with it when it does."""
    options = dict(options or {})
    if size is not None:
        if "size" in options and options["size"] != size:
            raise ValueError(f"the patches spec says size={options['size']} but size={size} was requested")
        options["size"] = int(size)
    return PatchGeometry(**options)


@dataclass
class PatchImages(RawImages):
    """Patches in stored form (:class:`RawImages`) with ``groups[i]``, the index in ``photographs``
    of the photograph patch i was cut from, and ``photographs``, one record per source file."""

    groups: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    photographs: list[dict] = field(default_factory=list)


def _header(path: Path) -> tuple[int, int]:
    """(width, height) of an image file without decoding it; errors name the file."""
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def read_patches_raw(folder: str | os.PathLike, geometry: PatchGeometry = PatchGeometry(), channels: int = 1, *,
                     factory: ArrayFactory | None = None, progress: bool = True) -> PatchImages:
    """Every grid patch of every photograph under ``folder`` (module docstring), in stored form.

    Two passes: the headers (sizes, hence the number of patches and the output array, which
    ``factory`` may put on disk), then one photograph at a time is decoded and cut.
    """
    channels = _check_channels(channels)
    root = Path(folder).expanduser()
    paths = list_images(root, recursive=True)
    grids, sizes = [], []
    for path in paths:
        width, height = _header(path)
        sizes.append((width, height))
        try:
            grids.append(geometry.grid(width, height))
        except ValueError as exc:
            raise ImageReadError(f"{path}: {exc}; every photograph of a patches dataset must hold at least "
                                 "one patch (remove it, or choose a smaller size=)") from None
    counts = [len(tops) * len(lefts) for tops, lefts in grids]
    size = geometry.size
    out = (factory or _numpy_factory)((sum(counts), channels, size, size),
                                      np.dtype(np.uint16 if channels == 1 else np.uint8))
    groups = np.repeat(np.arange(len(paths), dtype=np.int64), counts)
    names, photographs, row = [], [], 0
    for g, (path, (tops, lefts)) in enumerate(tqdm(list(zip(paths, grids)), desc="cut patches", unit="photo",
                                                    disable=not progress)):
        def cut(im: Image.Image, path=path) -> np.ndarray:
            return _pil_to_stored(_normalise_mode(im, path), channels)

        stored = _decode(path, cut)
        if (stored.shape[2], stored.shape[1]) != sizes[g]:
            raise ImageReadError(f"{path}: decoded as {stored.shape[2]}x{stored.shape[1]}, but its header says "
                                 f"{sizes[g][0]}x{sizes[g][1]}")
        rel = path.relative_to(root).as_posix()
        for top in tops:
            for left in lefts:
                out[row] = stored[:, top:top + size, left:left + size]
                names.append(f"{rel}@{top},{left}")
                row += 1
        photographs.append({"name": rel, "sha256": _sha256(path), "width": int(stored.shape[2]),
                            "height": int(stored.shape[1]), "patches": counts[g]})
    meta = {"patch": geometry.to_dict(), "resize": None, "gray": "RGB mean" if channels == 1 else None}
    return PatchImages(out, _stored_scale(channels), names, meta, groups=groups, photographs=photographs)
