"""Dataset spec strings: which source a dataset name or path stands for, and its defaults.

A *dataset spec* names a source:

==================================  ===========================================================
``fashion-mnist``                   IDX files in /usr/share/datasets/fashion-mnist (Debian
                                    package ``dataset-fashion-mnist``): 70,000 images 28x28
``fashion-mnist:/path/to/folder``   the same files from any folder (MNIST works too)
``folder:/path``                    PNG/JPEG/... images, sorted relative-path order
``npy:/path/file.npy``              (N,H,W), (N,H,W,C) or (N,C,H,W) array, uint8 or float in [0,1]
``npy:/path/file.npz#key``          one array of an ``.npz`` (``#key`` optional if it holds one)
``celeba:/path/img_align_celeba``   CelebA with the paper's crop/resize (default 80x80)
``lsun:/path``                      LSUN images, top-left 256 crop, resize (default 80x80)
``patches:/path[:size=40,stride=40]``  square patches cut on a grid from a folder of photographs,
                                    grouped by photograph (:mod:`gahb.data.patches`; default
                                    40x40, non-overlapping)
``/path/to/prepared/dir``           a directory written by :func:`~gahb.data.prepared.prepare_dataset`
``synthetic:calpha:alpha=2,size=32``  generated on the fly (:mod:`gahb.data.synthetic`; also
                                    ``synthetic:disks?size=32&min_radius=3``); no cache, no
                                    dedup; :func:`~gahb.data.datasets.load_split` only (see
                                    :func:`~gahb.data.datasets.synthetic_split`)
==================================  ===========================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gahb.data.dedup import DEDUP_THRESHOLD
from gahb.data import readers
from gahb.data.patches import parse_patches

KINDS = ("fashion-mnist", "folder", "npy", "celeba", "lsun", "patches", "prepared")
DEFAULT_SIZES = {"celeba": 80, "lsun": 80}  # the paper's resolution; other sources keep theirs
# The paper's 0.95 threshold (after 20x20 pooling) suits faces. On Fashion-MNIST it would remove
# most images, different garments of similar silhouette, so there the default removes near-copies only.
DEFAULT_THRESHOLDS = {"fashion-mnist": 0.999}


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset spec string (see the module docstring)."""

    kind: str
    path: Path | None = None
    key: str | None = None
    text: str = ""
    options: dict | None = None  # kind "patches": the key=value options given (gahb.data.patches)

    def describe(self) -> str:
        where = f":{self.path}" if self.path is not None else ""
        options = ":" + ",".join(f"{k}={v}" for k, v in self.options.items()) if self.options else ""
        return f"{self.kind}{where}" + (f"#{self.key}" if self.key else "") + options


def parse_dataset_spec(spec: str | os.PathLike) -> DatasetSpec:
    """Parse ``kind[:path]`` strings, a prepared directory, or a bare ``.npy``/``.npz`` path."""
    text = os.fspath(spec).strip()
    if not text:
        raise ValueError("empty dataset spec")
    kind, sep, rest = text.partition(":")
    kind = kind.lower()
    if kind == "npz":
        kind = "npy"
    if sep and kind in KINDS:
        if not rest:
            raise ValueError(f"dataset spec {text!r} has no path after '{kind}:'")
        if kind == "patches":
            folder, options = parse_patches(rest)
            return DatasetSpec(kind, folder, None, text, options)
        path, key = rest, None
        if kind == "npy" and "#" in rest:
            path, key = rest.rsplit("#", 1)
            key = key or None
        return DatasetSpec(kind, Path(path).expanduser().resolve(), key, text)
    if text.lower() == "fashion-mnist":
        return DatasetSpec("fashion-mnist", None, None, text)
    path = Path(text).expanduser()
    if path.is_dir() and (path / "manifest.json").is_file():
        return DatasetSpec("prepared", path.resolve(), None, text)
    if path.suffix.lower() in (".npy", ".npz") and path.is_file():
        return DatasetSpec("npy", path.resolve(), None, text)
    if kind == "synthetic":
        raise ValueError(f"{text!r} is generated on the fly, not prepared: use it with load_split / "
                         "`gahb train --dataset` (see gahb.data.datasets.synthetic_split)")
    hint = (f"{text!r} is a folder without manifest.json; use 'folder:{text}', 'celeba:{text}' or "
            f"'lsun:{text}' to prepare it" if path.is_dir() else f"unknown dataset spec {text!r}")
    raise ValueError(f"{hint}. Accepted: fashion-mnist, fashion-mnist:DIR, folder:DIR, npy:FILE.npy, "
                     "npy:FILE.npz#KEY, celeba:DIR, lsun:DIR, patches:DIR[:size=40,stride=40], or a prepared "
                     "dataset directory")


def _source_path(spec: DatasetSpec) -> Path:
    return spec.path if spec.path is not None else readers.FASHION_MNIST_DIR


def default_threshold(dataset: str | DatasetSpec) -> float:
    """The dedup threshold used when none is given: 0.95 (the paper) except per DEFAULT_THRESHOLDS."""
    spec = dataset if isinstance(dataset, DatasetSpec) else parse_dataset_spec(dataset)
    return DEFAULT_THRESHOLDS.get(spec.kind, DEDUP_THRESHOLD)
