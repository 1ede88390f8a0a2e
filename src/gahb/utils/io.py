"""Atomic writes: a file is either the old version or the complete new one, never a torn mix.

Every checkpoint, manifest and result file goes through these, so a run killed at any moment
loses at most the work since its last completed write.
"""

from __future__ import annotations

import json
import math
import os
import signal
import tempfile
from pathlib import Path
from typing import Any, Callable


# Fault injection for the kill-and-resume tests: "<file name>:<phase>:<k>" SIGKILLs this process the
# k-th time a write of that file reaches the phase: "before" (empty temporary file created), "torn" (the
# temporary file written, then cut to half its size), "written" (temporary file complete and fsynced,
# not renamed), "renamed" (the new file in place). Inert when unset.
_HOOK_KILL_AT_WRITE = "GAHB_TEST_KILL_AT_WRITE"
_hook_counts: dict[tuple[str, str], int] = {}


def _kill_point(path: Path, phase: str, tmp: str | None = None) -> None:
    spec = os.environ.get(_HOOK_KILL_AT_WRITE)
    if not spec:
        return
    name, when, k = spec.rsplit(":", 2)
    if name == path.name and when == phase:
        _hook_counts[name, when] = _hook_counts.get((name, when), 0) + 1
        if _hook_counts[name, when] == int(k):
            if tmp is not None:  # a write torn by the kill
                with open(tmp, "r+b") as fh:
                    fh.truncate(os.path.getsize(tmp) // 2)
            os.kill(os.getpid(), signal.SIGKILL)


class WriteError(OSError):
    """An atomic write that failed (a full disk, a lost mount): the file keeps its previous content."""


def _atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Write ``path`` through a temporary file in its folder: write, fsync, rename (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        _kill_point(path, "before")
        write(tmp)
        _kill_point(path, "torn", tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        _kill_point(path, "written")
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):  # e.g. a full disk
            prev = "is unchanged" if path.exists() else "did not exist"
            raise WriteError(exc.errno, f"could not write {path} ({exc.strerror or exc}); the previous "
                                        f"{path.name} {prev}") from exc
        raise
    _kill_point(path, "renamed")
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def w(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return _atomic(path, w)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, paths and non-finite floats into plain JSON."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if np is not None and isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if np is not None and isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # torch tensor
        return _jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else (1e308 if obj > 0 else -1e308)
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(_jsonable(obj), indent=indent, sort_keys=False) + "\n")


class CorruptFileError(ValueError):
    """A file that exists but cannot be read as what it should be (truncated, torn, or not ours)."""


def read_json(path: str | os.PathLike) -> Any:
    """The JSON document in ``path``; a file that does not parse raises :class:`CorruptFileError` naming it."""
    with open(path, "r", encoding="utf-8") as fh:
        text = fh.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"{path} is not valid JSON ({len(text)} bytes; truncated or corrupted?): {exc}") from None


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and flush it to disk (metrics logs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(_jsonable(record)) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def atomic_save_torch(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    return _atomic(path, lambda tmp: torch.save(obj, tmp))


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks (provenance of imported checkpoints and test images)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
