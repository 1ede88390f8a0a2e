"""What every study shares: the study contract, result files, claims, reuse of trained runs.

The study contract (each module ``gahb.studies.<name>`` listed in :data:`gahb.studies.STUDIES`):

* ``Config``: a dataclass of everything the study computes from (with ``device`` and ``threads``),
* ``PRESETS``: ``{"test" | "quick" | "standard" | "paper": Config}`` (``test`` is for the test suite),
* ``run(config, out_dir, *, progress=True, preset=None) -> dict``: does the work, reusing finished training runs
  and resuming unfinished ones found under ``out_dir``, and writes ``out_dir/results.json``
  (see :func:`finish`) and the figures it lists.

The results dict has the keys of :data:`RESULT_KEYS`: ``claims`` sets the paper's statement beside
our measured value (the report renders them as a table), ``numbers`` holds every measured number
(study-specific, JSON-able, all finite), ``figures`` lists ``{"path": relative to out_dir,
"caption": ...}``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gahb.utils.config import apply_overrides
from gahb.utils.io import atomic_write_json, read_json

__all__ = ["RESULT_KEYS", "apply_overrides", "begin", "claim", "claim_status", "compute_seconds", "config_from_dict",
           "config_to_dict", "finish", "label_variant", "load_results", "recipe_variant", "rejudge", "run_phases",
           "runs_dir", "train_or_reuse", "training_seconds", "unsupported_claims"]

RESULT_KEYS = ("study", "preset", "config", "claims", "numbers", "figures", "wall_time_s",
               "environment", "command")


# -- configs -------------------------------------------------------------------------------------
def config_to_dict(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


# -- environment -----------------------------------------------------------------------------------
def git_revision() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: str | None = None) -> dict:
    """Versions, git revision, device and CPU facts recorded beside every result."""
    import numpy
    import torch

    import gahb

    env = {
        "gahb": gahb.__version__,
        "git_revision": git_revision(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device) if device is not None else "cpu",
    }
    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def command_line() -> str:
    """The command that is running, as typed (``gahb ...`` when run through the console script)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("gahb", "__main__.py"):
        argv[0] = "gahb"
    return " ".join(argv)


# -- claims and results ----------------------------------------------------------------------------
# A claim is not judged when more than this fraction of its inputs (samples that diverged or ran out
# of steps) failed: it is reported as "invalid", neither pass nor fail.
MAX_FAILED_FRACTION = 0.1


def claim(name: str, paper: Any, measured: Any, passed: bool | None, target: str = "",
          detail: str = "", failed: int | None = None, inputs: int | None = None, why: str = "",
          reference: str = "", uncertainty: str = "", target_note: str = "") -> dict:
    """One row of a study's claims table: the paper's statement beside our measurement.

    ``passed`` is None where the comparison is informative only (no acceptance target).
    ``why``: one line saying why the row fails (shown under its FAIL badge); ``reference``: what
    the measurement is compared with (a calibration set, a published network, a known optimum);
    ``uncertainty``: the spread of the measurement in words (an interval, a standard error), or why
    it has none (an exact identity). A judged row needs at least one of the two
    (:func:`unsupported_claims`). ``target_note``: when and why the target changed after results
    of an earlier run were read.
    ``failed`` of ``inputs`` (e.g. samples that did not converge, left out of ``measured``) are
    recorded with the row; above :data:`MAX_FAILED_FRACTION` the row is ``invalid``: ``passed`` is
    None and ``status`` says why, whatever the measurement.
    """
    row = {"name": name, "paper": paper, "measured": measured, "target": target,
           "passed": None if passed is None else bool(passed), "detail": detail}
    if why:
        row["why"] = why
    if reference:
        row["reference"] = reference
    if uncertainty:
        row["uncertainty"] = uncertainty
    if target_note:
        row["target_note"] = target_note
    if inputs is not None:
        failed = int(failed or 0)
        row.update(inputs=int(inputs), failed=failed)
        if inputs == 0 or failed > MAX_FAILED_FRACTION * inputs:
            row.update(passed=None, invalid=True)
    row["status"] = claim_status(row)
    return row


def claim_status(row: dict) -> str:
    """``"pass"``, ``"fail"``, ``"info"`` or ``"invalid"`` (too many failed inputs) of a claim row."""
    if row.get("invalid"):
        return "invalid"
    return "info" if row.get("passed") is None else "pass" if row["passed"] else "fail"


def unsupported_claims(claims: list[dict]) -> list[str]:
    """Names of the judged rows (pass or fail) that carry neither a reference nor an uncertainty."""
    return [c["name"] for c in claims if claim_status(c) in ("pass", "fail")
            and not (c.get("reference") or c.get("uncertainty"))]


def config_from_dict(cls, d: dict):
    """The frozen ``Config`` dataclass ``cls`` from a ``results.json`` config (lists back to tuples,
    the training recipe rebuilt, also from the flat form of older results)."""
    from gahb.utils.config import from_dict

    return from_dict(cls, d)


def rejudge(study: str, results: dict) -> list[dict]:
    """The claims of ``results`` (a study's ``results.json``) recomputed by the study's ``judge``
    from its config and numbers alone, labelled when its recipe is a variant."""
    from gahb.studies import get_study

    return label_variant(get_study(study).judge(results), results["config"])


# Departures from the paper's training recipe (eq. 4 loss, sigma in [0, 1]) that label a study's rows as
# a variant: field -> the paper's value.
PAPER_RECIPE = {"loss_weight": "none", "sigma_max": 1.0, "bn_recalibration_batches": 0}


def recipe_variant(config) -> str:
    """'' for the paper's recipe, else e.g. 'loss weight eps, sigma_max 0.4' (see :data:`PAPER_RECIPE`)."""
    from gahb.utils.config import flat

    d = flat(config_to_dict(config) if not isinstance(config, dict) else config)
    parts = [f"{k.replace('_', ' ')} {d[k]}" for k, paper in PAPER_RECIPE.items()
             if k in d and d[k] is not None and d[k] != paper]
    return ", ".join(parts)


def label_variant(claims: list[dict], config) -> list[dict]:
    """The claims with ' [variant: ...]' after each name when ``config`` departs from the paper's recipe."""
    variant = recipe_variant(config)
    if not variant:
        return claims
    return [c if c.get("variant") else {**c, "name": f"{c['name']} [variant: {variant}]", "variant": variant}
            for c in claims]


def first_nonfinite(obj: Any, where: str = "numbers") -> str | None:
    """The path of the first NaN/inf float inside nested dicts/lists, or None if all are finite."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else where
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for k, v in items:
        bad = first_nonfinite(v, f"{where}.{k}" if isinstance(obj, dict) else f"{where}[{k}]")
        if bad is not None:
            return bad
    return None


def finish(out_dir: str | os.PathLike, study: str, preset: str | None, config, claims: list[dict],
           numbers: dict, figures: list[dict], started: float, device: str | None = None,
           allow_nonfinite: bool = False) -> dict:
    """Assemble the results dict and write ``out_dir/results.json`` atomically; returns it.

    Non-finite measured numbers are refused (a NaN in a report hides a bug) unless
    ``allow_nonfinite``; write ``None`` for a quantity that does not exist.
    """
    out = Path(out_dir)
    for fig in figures:
        if not (out / fig["path"]).is_file():
            raise FileNotFoundError(f"study {study}: figure {fig['path']} was listed but not written")
    bad = None if allow_nonfinite else first_nonfinite(numbers)
    if bad is not None:
        raise ValueError(f"non-finite value at {bad}")
    variant = recipe_variant(config)
    claims = label_variant(claims, config)  # every row says when it belongs to a variant of the paper's recipe
    results = {
        "study": study,
        "preset": preset,
        "config": config_to_dict(config),
        "variant": variant or None,
        "claims": claims,
        "numbers": numbers,
        "figures": figures,
        "wall_time_s": round(time.time() - started, 2),
        # CPU seconds of the whole process so far (all threads): for `gahb study` that is the
        # study's own CPU time, which stays meaningful when other jobs share the machine.
        "process_cpu_time_s": round(time.process_time(), 2),
        "environment": environment(device),
        "command": command_line(),
    }
    atomic_write_json(out / "results.json", results)
    return results


def load_results(out_dir: str | os.PathLike) -> dict | None:
    path = Path(out_dir) / "results.json"
    return read_json(path) if path.is_file() else None


# -- training runs ---------------------------------------------------------------------------------
def train_or_reuse(train_cfg, train_images, test_images, run_dir: str | os.PathLike, *,
                   progress: bool = True, data_info: dict | None = None, weights: str = "ema"):
    """Train a denoiser in ``run_dir``, or reuse/resume the run already there; returns the eval-mode model
    with the ``weights`` of :func:`gahb.training.checkpoint.load_denoiser` (the EMA ones by default).

    A finished run with the same configuration and data returns at once; an interrupted one resumes
    from its last checkpoint (bit-identically); a run with a different configuration is an error
    (delete the folder or choose another ``out_dir``).
    """
    from gahb.training.checkpoint import load_denoiser
    from gahb.training.loop import train
    from gahb.utils.device import resolve_device

    train(train_cfg, train_images, test_images, run_dir, progress=progress, data_info=data_info,
          resume="auto")
    model, _ = load_denoiser(run_dir, device=resolve_device(train_cfg.device), weights=weights)
    return model


def begin(cfg, out_dir: str | os.PathLike) -> tuple[float, Path, "Stopwatch"]:
    """Start a study run: apply ``cfg.threads``, create ``out_dir/figures``; returns
    ``(started, out_dir, stopwatch)`` (``started`` is what :func:`finish` measures from)."""
    import torch

    started = time.time()
    if getattr(cfg, "threads", None):
        torch.set_num_threads(int(cfg.threads))
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    return started, out, Stopwatch()


def run_phases(study: str, cfg, out_dir, preset: str | None, *, measure, draw, claims_of, progress: bool = True,
               run_dirs=None, device: str | None = None) -> dict:
    """A study's three phases, in order, and its results.json (the study contract's ``run``):

    1. ``measure(cfg, out, watch, progress) -> (numbers, drawn)``: trains or reuses what it needs and
       measures; ``numbers`` is JSON-able, ``drawn`` what only the figures need;
    2. ``draw(cfg, numbers, drawn, out) -> figures``: writes the figures, returns their list;
    3. ``claims_of(cfg, numbers)``: the claims, from the numbers alone (as ``judge`` re-judges them).

    ``run_dirs(numbers)``: the trained runs whose training time counts in ``numbers["compute_s"]``.
    """
    started, out, watch = begin(cfg, out_dir)
    numbers, drawn = measure(cfg, out, watch, progress)
    figures = draw(cfg, numbers, drawn, out)
    watch.lap("figures")
    numbers["timing_s"] = watch.stages
    if run_dirs is not None:
        numbers["compute_s"] = compute_seconds(run_dirs(numbers), watch.stages)
    return finish(out, study, preset, cfg, claims_of(cfg, numbers), numbers, figures, started,
                  device=cfg.device if device is None else device)


def compute_seconds(run_dirs, stages: dict) -> dict:
    """What a study's results cost, summed over sessions (the report header's number): training from
    each run's ``config.json`` (resumes included, so a rerun that reuses finished networks still counts
    them) plus this run's non-training stages of ``stages`` (whose ``train*`` entries time the reuse)."""
    train_s = training_seconds(run_dirs)
    other = float(sum(v for k, v in stages.items() if not k.startswith("train")))
    return {"training": round(train_s, 1), "measurement": round(other, 1), "total": round(train_s + other, 1)}


def runs_dir(cfg, out_dir: str | os.PathLike) -> Path:
    """Where a study's trained runs live: ``cfg.runs_dir`` when given (keep them out of docs/),
    else ``out_dir/runs``."""
    return Path(cfg.runs_dir) if getattr(cfg, "runs_dir", None) else Path(out_dir) / "runs"


def training_seconds(run_dirs) -> float:
    """Wall time the training runs in ``run_dirs`` took, summed over all their sessions (each
    run's ``config.json``; resumes included), so a study rerun that reuses finished networks
    still reports what they cost."""
    from gahb.utils.io import read_json

    total = 0.0
    for d in run_dirs:
        cfg = Path(d) / "config.json"
        if cfg.is_file():
            total += float(read_json(cfg).get("metrics", {}).get("wall_time", 0.0))
    return total


class Stopwatch:
    """Wall time per named stage, for the results' ``numbers['timing_s']``."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> float:
        now = time.perf_counter()
        dt = now - self._t
        self.stages[name] = round(self.stages.get(name, 0.0) + dt, 2)
        self._t = now
        return dt
