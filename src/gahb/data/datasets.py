"""Dataset specs, the prepared-dataset cache, and the API training code uses.

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
``/path/to/prepared/dir``           a directory written by :func:`prepare_dataset`
``synthetic:calpha:alpha=2,size=32``  generated on the fly (:mod:`gahb.data.synthetic`; also
                                    ``synthetic:disks?size=32&min_radius=3``); no cache, no
                                    dedup; :func:`load_split` only (see :func:`synthetic_split`)
==================================  ===========================================================

Preparing a dataset reads it once, converts it to grayscale (by default), deduplicates it
(``dedup.py``) and writes into one directory:

* ``images.npy`` -- the pool, (P, C, H, W), in the compact stored form of ``readers.py``
  (uint8 for 8-bit gray sources such as Fashion-MNIST, uint16 = R+G+B for gray from 8-bit
  RGB, float32 for float arrays); pixel = stored / ``manifest["array"]["scale"]``;
* ``source_index.npy`` -- for each pool row, its index in the source order before dedup;
* ``duplicates.json`` -- each removed image with its most similar earlier image;
* ``manifest.json`` -- source, preprocessing, dedup counts, sha256 of the array's C-order data
  bytes (not of the .npy header), gahb version, and the ``request`` that must match for reuse.

Every file is written atomically and the manifest last, so a directory with a manifest is
complete. The default location is ``$GAHB_CACHE/datasets/<name>`` or, without
``GAHB_CACHE``, ``~/.cache/gahb/datasets/<name>``; a ``cache_dir`` argument replaces the
``.../datasets`` root. Sources are read once: if the files behind a spec change, prepare again
with ``force=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gahb import __version__
from gahb.data import readers
from gahb.data.dedup import DEDUP_POOL, DEDUP_THRESHOLD, deduplicate
from gahb.data.readers import RawImages
from gahb.data.readers.stored import _check_channels
from gahb.data.splits import SPLIT_METHOD, check_subset, split_pool
from gahb.utils.io import _atomic, atomic_write_json

FORMAT_VERSION = 1
KINDS = ("fashion-mnist", "folder", "npy", "celeba", "lsun", "prepared")
DEFAULT_SIZES = {"celeba": 80, "lsun": 80}  # the paper's resolution; other sources keep theirs
# The paper's 0.95 threshold (after 20x20 pooling) suits faces: it removes ~2% of CelebA. On
# Fashion-MNIST it removes 44,804 of 70,000 images that are different garments of similar
# silhouette (measured: 0.95 -> 44,804 removed, 0.99 -> 5,296, 0.999 -> 49), which would leave
# halves of only 12k images. For Fashion-MNIST the default therefore removes near-copies only.
DEFAULT_THRESHOLDS = {"fashion-mnist": 0.999}
MEMMAP_BYTES = 256 * 2**20  # raw arrays larger than this are staged on disk while preparing
VERIFY_FULL_BYTES = 2**30  # "auto" verification hashes arrays up to this size, else checks shape


# ------------------------------------------------------------------------------------------------
# Specs


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset spec string (see the module docstring)."""

    kind: str
    path: Path | None = None
    key: str | None = None
    text: str = ""

    def describe(self) -> str:
        where = f":{self.path}" if self.path is not None else ""
        return f"{self.kind}{where}" + (f"#{self.key}" if self.key else "")


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
                     "npy:FILE.npz#KEY, celeba:DIR, lsun:DIR, or a prepared dataset directory")


def _source_path(spec: DatasetSpec) -> Path:
    return spec.path if spec.path is not None else readers.FASHION_MNIST_DIR


def default_threshold(dataset: str | DatasetSpec) -> float:
    """The dedup threshold used when none is given: 0.95 (the paper) except per DEFAULT_THRESHOLDS."""
    spec = dataset if isinstance(dataset, DatasetSpec) else parse_dataset_spec(dataset)
    return DEFAULT_THRESHOLDS.get(spec.kind, DEDUP_THRESHOLD)


def _request(spec: DatasetSpec, size: int | None, channels: int, dedup: bool, threshold: float | None) -> dict:
    """What a prepared directory must have been built from to be reused."""
    if threshold is None:
        threshold = default_threshold(spec)
    if size is not None and (isinstance(size, bool) or int(size) != size or size < 1):
        raise ValueError(f"size must be a positive integer, got {size!r}")
    return {"format_version": FORMAT_VERSION, "kind": spec.kind, "path": str(_source_path(spec)),
            "key": spec.key, "size": DEFAULT_SIZES.get(spec.kind) if size is None else int(size),
            "channels": int(channels), "dedup": bool(dedup),
            "threshold": float(threshold) if dedup else None, "dedup_pool": DEDUP_POOL if dedup else None}


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where prepared datasets live: ``cache_dir``, ``$GAHB_CACHE/datasets`` or ``~/.cache/gahb/datasets``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("GAHB_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "gahb") / "datasets"


def dataset_dir_name(request: dict) -> str:
    """E.g. ``fashion-mnist-native-gray-dedup-1a2b3c4d``: readable, and unique per request."""
    size = f"{request['size']}px" if request["size"] else "native"
    color = "gray" if request["channels"] == 1 else "rgb"
    dd = "dedup" if request["dedup"] else "nodedup"
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:8]
    return f"{request['kind']}-{size}-{color}-{dd}-{digest}"


def default_dataset_dir(dataset: str, size: int | None = None, channels: int = 1, dedup: bool = True,
                        threshold: float | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    spec = parse_dataset_spec(dataset)
    if spec.kind == "prepared":
        return spec.path
    return cache_root(cache_dir) / dataset_dir_name(_request(spec, size, channels, dedup, threshold))


# ------------------------------------------------------------------------------------------------
# Pool


@dataclass
class Pool:
    """A prepared dataset: the (deduplicated) pool every split is drawn from.

    ``raw`` is the stored array (read-only memmap of ``images.npy``, pixel = raw / ``scale``);
    ``images`` materialises the whole pool as float32 (N, C, H, W) in [0, 1] (cached; for large
    pools prefer ``get(indices)``, which converts only the requested rows).
    """

    raw: np.ndarray
    scale: float
    manifest: dict
    path: Path

    def __len__(self) -> int:
        return int(self.raw.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.raw.shape[1:])

    @property
    def sha256(self) -> str:
        return self.manifest["array"]["sha256"]

    def get(self, indices) -> torch.Tensor:
        """Float32 tensor (len(indices), C, H, W) in [0, 1] of the given pool rows, in that order."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        order = np.argsort(idx, kind="stable")  # sequential memmap reads, then restore the order
        rows = np.empty((idx.shape[0],) + self.raw.shape[1:], dtype=self.raw.dtype)
        rows[order] = self.raw[idx[order]]
        return readers.to_float(rows, self.scale)

    @cached_property
    def images(self) -> torch.Tensor:
        return readers.to_float(self.raw, self.scale)

    def split(self, seed: int = 0, n_test: int | None = None):
        return split_pool(len(self), seed, n_test)


def _hash_array(arr: np.ndarray, chunk_bytes: int = 64 * 2**20) -> str:
    h = hashlib.sha256()
    rows = max(1, chunk_bytes // max(1, arr[0].nbytes)) if arr.shape[0] else 1
    for lo in range(0, arr.shape[0], rows):
        h.update(np.ascontiguousarray(arr[lo:lo + rows]).data)
    return h.hexdigest()


def open_prepared(path: str | os.PathLike, verify: str = "auto") -> Pool:
    """Open a prepared directory, checking the array against its manifest.

    ``verify``: "full" re-hashes the array (sha256, about 1 s per GB), "shape" checks shape and
    dtype only, "auto" does "full" up to 1 GiB and "shape" above.
    """
    if verify not in ("auto", "full", "shape"):
        raise ValueError(f"verify must be 'auto', 'full' or 'shape', got {verify!r}")
    path = Path(path).expanduser()
    mpath = path / "manifest.json"
    if not mpath.is_file():
        raise FileNotFoundError(f"{path} is not a prepared dataset (no manifest.json); create it with "
                                "`gahb data prepare`")
    with open(mpath, encoding="utf-8") as fh:
        manifest = json.load(fh)
    if manifest.get("format") != "gahb-dataset" or "array" not in manifest:
        raise ValueError(f"{mpath} is not a gahb dataset manifest")
    info = manifest["array"]
    apath = path / info["file"]
    try:
        raw = np.load(apath, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{apath} is missing; prepare the dataset again (--force)") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{apath} is unreadable ({exc}); prepare the dataset again (--force)") from None
    if list(raw.shape) != list(info["shape"]) or str(raw.dtype) != info["dtype"]:
        raise ValueError(f"{apath} holds {raw.dtype} {list(raw.shape)} but the manifest says "
                         f"{info['dtype']} {info['shape']}; prepare the dataset again (--force)")
    if verify == "full" or (verify == "auto" and raw.nbytes <= VERIFY_FULL_BYTES):
        digest = _hash_array(raw)
        if digest != info["sha256"]:
            raise ValueError(f"{apath} is corrupt: sha256 {digest[:16]}... differs from the manifest's "
                             f"{info['sha256'][:16]}...; prepare the dataset again (--force)")
    return Pool(raw=raw, scale=float(info["scale"]), manifest=manifest, path=path)


# ------------------------------------------------------------------------------------------------
# Preparing


def _read_source(spec: DatasetSpec, request: dict, factory, progress: bool, workers: int) -> RawImages:
    size, channels = request["size"], request["channels"]
    if spec.kind == "fashion-mnist":
        if channels != 1:
            raise ValueError("Fashion-MNIST is grayscale; use channels=1")
        return readers.read_fashion_mnist_raw(spec.path, size, progress=progress)
    if spec.kind == "folder":
        return readers.read_image_folder_raw(spec.path, channels, size, factory=factory, progress=progress,
                                             workers=workers)
    if spec.kind == "npy":
        return readers.read_array_raw(spec.path, spec.key, channels, size, factory=factory, progress=progress)
    if spec.kind == "celeba":
        return readers.read_celeba_raw(spec.path, size, channels, factory=factory, progress=progress,
                                       workers=workers)
    if spec.kind == "lsun":
        return readers.read_lsun_raw(spec.path, size, channels, factory=factory, progress=progress,
                                     workers=workers)
    raise ValueError(f"cannot read a source of kind {spec.kind!r}")


def _compact(raw: RawImages, chunk: int = 8192) -> tuple[np.dtype, float, int]:
    """Final stored dtype: gray sums (scale 765) that are all multiples of 3 come from gray
    8-bit images and are stored as uint8 / 255 instead (exact). Returns (dtype, scale, divisor)."""
    if raw.data.dtype == np.uint16 and raw.scale == 765.0:
        for lo in range(0, len(raw), chunk):
            if np.any(np.asarray(raw.data[lo:lo + chunk]) % 3):
                return np.dtype(np.uint16), 765.0, 1
        return np.dtype(np.uint8), 255.0, 3
    return raw.data.dtype, raw.scale, 1


def _write_array(path: Path, src: np.ndarray, rows: np.ndarray, dtype: np.dtype, divisor: int,
                 chunk: int = 8192) -> str:
    """Atomically write ``src[rows] // divisor`` as ``path`` (.npy), returning sha256 of its data."""
    digest = hashlib.sha256()

    def write(tmp: str) -> None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(rows),) + src.shape[1:])
        for lo in range(0, len(rows), chunk):
            block = np.asarray(src[rows[lo:lo + chunk]])
            block = (block // divisor if divisor != 1 else block).astype(dtype, copy=False)
            block = np.ascontiguousarray(block)
            out[lo:lo + len(block)] = block
            digest.update(block.data)
        out.flush()
        del out

    _atomic(path, write)
    return digest.hexdigest()


def _save_npy(path: str, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: np.save would append ".npy" to a bare name
        np.save(fh, arr, allow_pickle=False)


def prepare_dataset(dataset: str = "fashion-mnist", out_dir: str | os.PathLike | None = None, *,
                    size: int | None = None, channels: int = 1, dedup: bool = True,
                    threshold: float | None = None, cache_dir: str | os.PathLike | None = None,
                    force: bool = False, workers: int = 1, progress: bool = True,
                    verify: str = "auto", device: str = "auto") -> Pool:
    """Read, preprocess and deduplicate a dataset once, writing it to ``out_dir`` (module docstring).

    Reuses ``out_dir`` when its manifest records the same request (source, size, channels, dedup
    settings) unless ``force``. ``out_dir`` defaults to ``cache_root(cache_dir) / <name>``.
    ``size`` defaults to 80 for CelebA/LSUN and to the native size otherwise. ``device`` runs the
    dedup pair pass there ("auto": a GPU when present; the result does not depend on it beyond
    float rounding at the threshold).
    """
    spec = parse_dataset_spec(dataset)
    if spec.kind == "prepared":
        return open_prepared(spec.path, verify)
    request = _request(spec, size, _check_channels(channels), dedup, threshold)
    out = Path(out_dir).expanduser() if out_dir is not None else cache_root(cache_dir) / dataset_dir_name(request)
    if not force and _manifest_matches(out, request):
        return open_prepared(out, verify)
    out.mkdir(parents=True, exist_ok=True)
    # Several processes (e.g. DDP ranks, a sweep) may ask for the same dataset at once: the first
    # one builds it, the others wait on the lock and then reuse its result.
    with _dir_lock(out):
        if not force and _manifest_matches(out, request):
            return open_prepared(out, verify)
        return _build(spec, request, out, threshold=request["threshold"], dedup=dedup, workers=workers,
                      progress=progress, device=device)


def _manifest_matches(out: Path, request: dict) -> bool:
    try:
        return json.loads((out / "manifest.json").read_text(encoding="utf-8")).get("request") == request
    except (OSError, ValueError, AttributeError):
        return False


@contextmanager
def _dir_lock(path: Path):
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no inter-process lock
        yield
        return
    with open(path / ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _build(spec: DatasetSpec, request: dict, out: Path, *, threshold: float, dedup: bool, workers: int,
           progress: bool, device: str) -> Pool:
    mpath = out / "manifest.json"
    if mpath.exists():
        mpath.unlink()  # the directory is incomplete until the new manifest lands

    t0 = time.perf_counter()
    stage = tempfile.NamedTemporaryFile(dir=out, prefix=".stage-", suffix=".npy", delete=False)
    stage.close()

    def factory(shape: tuple, dtype: np.dtype) -> np.ndarray:
        if int(np.prod(shape)) * np.dtype(dtype).itemsize > MEMMAP_BYTES:
            return np.lib.format.open_memmap(stage.name, mode="w+", dtype=dtype, shape=shape)
        return np.empty(shape, dtype=dtype)

    try:
        raw = _read_source(spec, request, factory, progress, workers)
        t_read = time.perf_counter() - t0
        n_before, image_shape = len(raw), [int(s) for s in raw.data.shape[1:]]
        if dedup:
            from gahb.utils.device import resolve_device

            result = deduplicate(raw.data, threshold=threshold, pool_size=DEDUP_POOL, progress=progress,
                                 device=resolve_device(device))
            kept, dedup_info, pairs = result.kept, result.summary(), result.pairs()
        else:
            kept = np.arange(n_before, dtype=np.int64)
            dedup_info, pairs = {"n_before": n_before, "n_after": n_before, "n_removed": 0}, []
        t_dedup = time.perf_counter() - t0 - t_read
        dtype, scale, divisor = _compact(raw)
        digest = _write_array(out / "images.npy", raw.data, kept, dtype, divisor)
        _atomic(out / "source_index.npy", lambda tmp: _save_npy(tmp, kept))
        names = raw.names
        atomic_write_json(out / "duplicates.json", [
            {"removed": j, "duplicate_of": i, "abs_corr": round(c, 6),
             **({"removed_name": names[j], "duplicate_of_name": names[i]} if names else {})}
            for i, j, c in pairs])
    finally:
        # POSIX keeps a mapped file alive after unlink, so the staging array can go right away
        if os.path.exists(stage.name):
            os.unlink(stage.name)

    manifest: dict[str, Any] = {
        "format": "gahb-dataset",
        "format_version": FORMAT_VERSION,
        "name": out.name,
        "spec": spec.text,
        "source": {"kind": spec.kind, "path": str(_source_path(spec)), "key": spec.key,
                   "n_images": n_before},
        "preprocessing": {"size": request["size"], "channels": request["channels"], **raw.meta},
        "dedup": {"enabled": bool(dedup), **dedup_info},
        "n_images": int(len(kept)),
        "array": {"file": "images.npy", "shape": [int(len(kept))] + image_shape,
                  "dtype": str(np.dtype(dtype)), "scale": scale, "layout": "NCHW",
                  "pixel": f"stored / {scale:g}", "sha256": digest},
        "timing_s": {"read": round(t_read, 3), "dedup": round(t_dedup, 3),
                     "total": round(time.perf_counter() - t0, 3)},
        "gahb_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "request": request,
    }
    atomic_write_json(mpath, manifest)
    return open_prepared(out, verify="shape")


def load_pool(dataset: str = "fashion-mnist", size: int | None = None, cache_dir: str | os.PathLike | None = None,
              dedup: bool = True, *, channels: int = 1, threshold: float | None = None,
              prepare: bool = True, progress: bool = True, verify: str = "auto") -> Pool:
    """The prepared pool for ``dataset``, preparing (and caching) it on first use.

    For a prepared directory the stored pool is used as is; a ``size`` that disagrees with it is
    an error. With ``prepare=False`` a missing cache is an error instead of being built.
    """
    spec = parse_dataset_spec(dataset)
    if spec.kind == "prepared":
        pool = open_prepared(spec.path, verify)
        stored = pool.image_shape[1]
        if size is not None and size != stored:
            raise ValueError(f"{spec.path} holds {stored}x{stored} images, not size={size}")
        return pool
    if not prepare:
        where = default_dataset_dir(dataset, size, channels, dedup, threshold, cache_dir)
        if not (where / "manifest.json").is_file():
            flags = "".join([f" --size {size}" if size is not None else "",
                             f" --channels {channels}" if channels != 1 else "",
                             " --no-dedup" if not dedup else "",
                             f" --threshold {threshold:g}" if dedup and threshold is not None else "",
                             f" --cache-dir {cache_dir}" if cache_dir is not None else ""])
            raise FileNotFoundError(f"{dataset} is not prepared yet (expected {where}); run "
                                    f"`gahb data prepare {dataset}{flags}`")
        return open_prepared(where, verify)
    return prepare_dataset(dataset, size=size, channels=channels, dedup=dedup, threshold=threshold,
                           cache_dir=cache_dir, progress=progress, verify=verify)


# ------------------------------------------------------------------------------------------------
# Splits


@dataclass
class Split:
    """One training subset and the shared held-out test set (see ``splits.py``).

    ``train``/``test`` are float32 (n, C, H, W) in [0, 1]; the index arrays are int64 pool rows;
    ``info`` is JSON-able and identifies the split exactly (dataset, pool hash, n, subset, seed).
    """

    train: torch.Tensor
    test: torch.Tensor
    train_indices: np.ndarray
    test_indices: np.ndarray
    info: dict = field(default_factory=dict)


def load_split(dataset: str = "fashion-mnist", n: int = 1000, subset: str = "s1", seed: int = 0,
               n_test: int | None = None, size: int | None = None, cache_dir: str | None = None,
               dedup: bool = True, *, channels: int = 1, threshold: float | None = None,
               progress: bool = True, pool: Pool | None = None) -> Split:
    """Training subset S1(n) or S2(n) of a dataset plus its held-out test set.

    S1 and S2 are disjoint halves of one seeded permutation of the deduplicated pool, nested in
    n; the test set (default min(1000, P // 10) images) depends on ``seed`` and ``n_test`` only.
    n above the half size raises ValueError naming the maximum N. Pass ``pool`` to reuse an
    already opened pool. A ``synthetic:...`` spec is generated instead (:func:`synthetic_split`).
    """
    subset = check_subset(subset)
    if is_synthetic_spec(dataset):
        return synthetic_split(dataset, n=n, subset=subset, seed=seed, n_test=n_test, size=size,
                               progress=progress)
    if pool is None:
        pool = load_pool(dataset, size=size, cache_dir=cache_dir, dedup=dedup, channels=channels,
                         threshold=threshold, progress=progress)
    split = split_pool(len(pool), seed, n_test)
    train_idx = split.subset(subset, n)
    info = {
        "dataset": str(dataset),
        "pool_path": str(pool.path),
        "pool_size": len(pool),
        "pool_sha256": pool.sha256,
        "image_shape": list(pool.image_shape),
        "n": int(n),
        "subset": subset,
        "seed": int(seed),
        "n_test": split.n_test,
        "max_n": split.max_n,
        "split_method": SPLIT_METHOD,
    }
    return Split(train=pool.get(train_idx), test=pool.get(split.test), train_indices=train_idx,
                 test_indices=split.test.copy(), info=info)


# ------------------------------------------------------------------------------------------------
# Synthetic datasets (generated, not prepared)

SYNTHETIC_PREFIX = "synthetic:"
SYNTHETIC_N_TEST = 1000


def is_synthetic_spec(dataset) -> bool:
    """True for ``synthetic:NAME[:k=v,...]`` (or ``synthetic:NAME?k=v&...``) specs."""
    return isinstance(dataset, str) and dataset.strip().lower().startswith(SYNTHETIC_PREFIX)


def parse_synthetic_dataset(dataset: str) -> tuple[str, dict]:
    """``"synthetic:calpha:alpha=2,size=32"`` or ``"synthetic:calpha?alpha=2&size=32"`` -> (name, kwargs)."""
    from gahb.data.synthetic import parse_synthetic_spec

    if not is_synthetic_spec(dataset):
        raise ValueError(f"not a synthetic dataset spec: {dataset!r} (expected 'synthetic:NAME:key=value,...')")
    body = dataset.strip()[len(SYNTHETIC_PREFIX):]
    if "?" in body:  # URL-like form: name?k=v&k=v
        name, _, query = body.partition("?")
        body = f"{name}:{query.replace('&', ',')}"
    name, kw = parse_synthetic_spec(body)
    for key in ("n", "seed"):
        if key in kw:
            raise ValueError(f"synthetic dataset spec {dataset!r}: {key!r} is not part of the spec; the "
                             "training-set size and seed come from load_split (gahb train --n / --data-seed)")
    return name, kw


def synthetic_split(dataset: str, n: int = 1000, subset: str = "s1", seed: int = 0, n_test: int | None = None,
                    size: int | None = None, progress: bool = False) -> Split:
    """Training subset and test set of a generated synthetic dataset (spec section 8).

    The three sets come from independent generator streams: test ``3 * seed``, S1 ``3 * seed + 1``,
    S2 ``3 * seed + 2`` (so they are disjoint with probability one, and S1(n) is a prefix of S1(m)
    for n < m, as for prepared pools). The image size is the spec's ``size`` or ``size`` (they
    must agree when both are given; default 80, the paper's). ``n_test`` defaults to 1000.
    """
    from gahb.data.synthetic import SyntheticConfig

    subset = check_subset(subset)
    name, kw = parse_synthetic_dataset(dataset)
    spec_size = kw.pop("size", None)
    if spec_size is not None and size is not None and spec_size != size:
        raise ValueError(f"{dataset!r} has size={spec_size} but size={size} was requested")
    size = spec_size if spec_size is not None else (size if size is not None else 80)
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    n_test = SYNTHETIC_N_TEST if n_test is None else int(n_test)
    if n_test < 1:
        raise ValueError(f"n_test must be a positive integer, got {n_test}")
    seed = int(seed)
    train_seed = 3 * seed + (1 if subset == "s1" else 2)
    train_cfg = SyntheticConfig(name=name, n=int(n), size=size, seed=train_seed, params=kw)
    test_cfg = SyntheticConfig(name=name, n=n_test, size=size, seed=3 * seed, params=kw)
    train_images = train_cfg.generate(progress=progress)
    test_images = test_cfg.generate(progress=False)
    info = {
        "dataset": str(dataset),
        "synthetic": name,
        "params": train_cfg.to_dict()["params"],
        "image_shape": list(train_images.shape[1:]),
        "n": int(n),
        "subset": subset,
        "seed": seed,
        "n_test": n_test,
        "train_seed": train_seed,
        "test_seed": 3 * seed,
        "split_method": "synthetic-streams-v1",
    }
    return Split(train=train_images, test=test_images, train_indices=np.arange(int(n), dtype=np.int64),
                 test_indices=np.arange(n_test, dtype=np.int64), info=info)
