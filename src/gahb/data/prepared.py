"""The prepared-dataset cache: read a source once, deduplicate it, keep it as one array on disk.

Preparing a dataset reads it once, converts it to grayscale (by default), deduplicates it
(:mod:`gahb.data.dedup`) and writes into one directory:

* ``images.npy`` -- the pool, (P, C, H, W), in the compact stored form of
  :mod:`gahb.data.readers.stored` (uint8 for 8-bit gray sources such as Fashion-MNIST, uint16 =
  R+G+B for gray from 8-bit RGB, float32 for float arrays); pixel = stored /
  ``manifest["array"]["scale"]``;
* ``source_index.npy`` -- for each pool row, its index in the source order before dedup;
* ``duplicates.json`` -- each removed image with its most similar earlier image;
* ``groups.npy`` -- patches of photographs only (:mod:`gahb.data.patches`): for each pool row, the
  index of its source photograph in ``manifest["source"]["photographs"]``, by which
  :meth:`Pool.split` keeps every photograph within one of S1, S2 and the test set;
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
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gahb import __version__
from gahb.data import readers
from gahb.data.dedup import DEDUP_POOL, deduplicate
from gahb.data.patches import PatchGeometry, PatchImages, patch_geometry, read_patches_raw
from gahb.data.readers import RawImages
from gahb.data.readers.stored import _check_channels
from gahb.data.specs import DEFAULT_SIZES, DatasetSpec, _source_path, default_threshold, parse_dataset_spec
from gahb.data.splits import split_groups, split_pool
from gahb.utils.io import _atomic, atomic_write_json

FORMAT_VERSION = 1
MEMMAP_BYTES = 256 * 2**20  # raw arrays larger than this are staged on disk while preparing
VERIFY_FULL_BYTES = 2**30  # "auto" verification hashes arrays up to this size, else checks shape


def _request(spec: DatasetSpec, size: int | None, channels: int, dedup: bool, threshold: float | None) -> dict:
    """What a prepared directory must have been built from to be reused."""
    if threshold is None:
        threshold = default_threshold(spec)
    if size is not None and (isinstance(size, bool) or int(size) != size or size < 1):
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if spec.kind == "patches":  # the patch side is the spec's; a size given beside it must agree
        geometry = patch_geometry(spec.options, size)
        return {"format_version": FORMAT_VERSION, "kind": spec.kind, "path": str(spec.path), "key": None,
                "size": geometry.size, "patch": geometry.to_dict(), "channels": int(channels), "dedup": bool(dedup),
                "threshold": float(threshold) if dedup else None, "dedup_pool": DEDUP_POOL if dedup else None}
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
    groups: np.ndarray | None = None  # the source photograph of each row (patch pools), else None

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
        """S1, S2 and the test set (:mod:`gahb.data.splits`); disjoint by photograph for patch pools."""
        if self.groups is not None:
            return split_groups(self.groups, seed, n_test)
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
    return Pool(raw=raw, scale=float(info["scale"]), manifest=manifest, path=path,
                groups=_open_groups(path, manifest) if "groups" in manifest else None)


def _open_groups(path: Path, manifest: dict) -> np.ndarray:
    """The ``groups.npy`` of a patch pool, checked against the manifest (always: it is small)."""
    info, gpath = manifest["groups"], path / manifest["groups"]["file"]
    try:
        groups = np.load(gpath, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{gpath} is missing or unreadable ({exc}); prepare the dataset again (--force)") from None
    if groups.shape != (manifest["n_images"],) or _hash_array(groups) != info["sha256"]:
        raise ValueError(f"{gpath} does not match the manifest (shape {groups.shape}, or its sha256); prepare "
                         "the dataset again (--force)")
    return groups


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
    if spec.kind == "patches":
        geometry = PatchGeometry(size=request["patch"]["size"], stride=request["patch"]["stride"])
        return read_patches_raw(spec.path, geometry, channels, factory=factory, progress=progress)
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
        source_extra, groups_info = {}, {}
        if isinstance(raw, PatchImages):  # each kept patch's photograph, for the grouped split
            groups = np.ascontiguousarray(raw.groups[kept])
            _atomic(out / "groups.npy", lambda tmp: _save_npy(tmp, groups))
            source_extra = {"n_photographs": len(raw.photographs), "photographs": raw.photographs}
            groups_info = {"groups": {"file": "groups.npy", "by": "photograph", "n_groups": int(len(np.unique(groups))),
                                      "sha256": _hash_array(groups)}}
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
                   "n_images": n_before, **source_extra},
        "preprocessing": {"size": request["size"], "channels": request["channels"], **raw.meta},
        "dedup": {"enabled": bool(dedup), **dedup_info},
        **groups_info,
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
