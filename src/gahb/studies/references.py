"""References the claims are compared with, measured by gahb on the lab's published networks.

A claim such as "the Jacobian is nearly symmetric" means something only beside the same number
measured the same way on a network known to be good. The published study (``gahb study
published``) measures the lab's converged BF-CNN on Set12 crops; :func:`build_jacobian_reference`
condenses its committed ``results.json`` into ``published_reference.json`` beside this module
(``python scripts/update_references.py``), so the reference travels with the package while the
published checkpoints themselves do not.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

REFERENCE_FILE = Path(__file__).with_name("published_reference.json")
STATS = ("asymmetry", "lambda_max", "lambda_min", "trace", "negative_eigenvalues")


def spread(values: list[float]) -> dict:
    """Mean, standard deviation (n - 1), range and count of ``values``."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "sd": sd, "min": min(values), "max": max(values), "n": n}


def build_jacobian_reference(results: dict, source: str) -> dict:
    """Per-statistic mean, standard deviation and range over the published study's dense crops."""
    crops = results["numbers"]["dense"]["per_crop"]
    if not crops:
        raise ValueError(f"{source}: the published study has no dense Jacobian crops")
    sigmas = sorted({c["sigma"] for c in crops})
    models = results["numbers"].get("models") or {}
    first = next(iter(models.values()), {}) if isinstance(models, dict) else {}
    return {"network": (first.get("imported") or {}).get("source_example_path") or results["config"].get("weights"),
            "images": "Set12 crops", "crop": results["numbers"]["crops"]["size"], "sigmas": sigmas,
            "source": source, "command": results.get("command"),
            **{k: spread([float(c[k]) for c in crops]) for k in STATS}}


def build_sampler_reference(results: dict) -> dict:
    """How many of the published study's samples failed, per image size: {"40": {"failed", "samples"}}."""
    return {size: {"failed": int(s["num_failed"]), "samples": len(s["status"])}
            for size, s in results["numbers"]["samples"].items()}


def _reference(key: str) -> dict | None:
    if not REFERENCE_FILE.is_file():
        return None
    return json.loads(REFERENCE_FILE.read_text()).get(key)


def jacobian_reference() -> dict | None:
    """The committed Jacobian reference (None when the file is missing, e.g. in a stripped install)."""
    return _reference("jacobian")


def sampler_reference() -> dict | None:
    """The committed sampler reference: failed samples of the published BF-CNN's prior per image size."""
    return _reference("samples")


def compare_with_reference(value: float, ref: dict) -> bool:
    """'Comparable': ``value`` lies within the reference's range over its images."""
    return ref["min"] <= value <= ref["max"]


def interval_text(d: dict | None, digits: int = 3) -> str:
    """'[0.41, 0.58]' from an Interval dict ('-' when there is none)."""
    return "-" if d is None else f"[{d['lo']:.{digits}g}, {d['hi']:.{digits}g}]"
