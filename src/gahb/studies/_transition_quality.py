"""Sample quality in the transition study (paper section 2, Fig 2: at the largest N the samples are
"distinct from the training set, and of high visual quality"), with :mod:`gahb.analysis.quality`.

Once per run (:func:`prepare`): the classifier of the pool and split (``Config.quality`` names its
preset; trained once and cached, :mod:`gahb.analysis.classifier`) and the references at the set size
m = min(n_samples, n_test), each against the held-out test images T = test[:m]: new real images (the
first m images of training half 1, which the classifier never saw: the floor), the same images
lightly and heavily blurred, and noise images.

Per N and network (:func:`measure`): its converged samples (the first m) against T[:k], k their
count: the Frechet distance and the classifier's mean confidence, each with its interval.

Per-N numbers are cached in ``per_n/N{n}_quality.json``, keyed by the N's measurement key, the
classifier's weights and :data:`gahb.analysis.quality.QUALITY_VERSION`. The quality is not part of
the measurement key, so a measurement cached before the quality existed keeps its numbers and only
the quality is computed, from the same samples redrawn from their seeds.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class QualityContext:
    """What every N's quality is measured with: the classifier, the set size, T's features, the references."""

    classifier: object | None
    set_size: int = 0
    target: torch.Tensor | None = None
    references: dict | None = None
    unavailable: str = ""
    seconds: float = 0.0


def prepare(cfg, pool, progress: bool = True) -> QualityContext | None:
    """The classifier and references of this run (module docstring); None when ``cfg.quality`` is
    "off", a context saying why when the pool has no class labels."""
    from gahb.analysis.classifier import has_labels, load_classifier
    from gahb.analysis.quality import quality_references
    from gahb.data.splits import split_pool

    if cfg.quality == "off":
        return None
    if not has_labels(pool):
        return QualityContext(None, unavailable=f"{cfg.dataset} has no class labels for the classifier "
                                                "(Fashion-MNIST's ship with its images)")
    clf = load_classifier(pool, seed=cfg.split_seed, config=cfg.quality, cache_dir=cfg.cache_dir, progress=progress)
    t0 = time.perf_counter()
    split = split_pool(len(pool), cfg.split_seed)
    m = min(cfg.n_samples, split.n_test)
    test = pool.get(split.test[:m])
    refs = quality_references(clf, test, pool.get(split.half1[:m]), m, seed=cfg.sample_seed)
    target, _ = clf.embed(test)
    return QualityContext(clf, m, target, refs, seconds=time.perf_counter() - t0)


def usable(ctx: QualityContext | None) -> bool:
    return ctx is not None and ctx.classifier is not None


def cache_key(cfg, ctx: QualityContext, measure_key: dict) -> dict:
    """What one N's cached quality was computed from (JSON form, compared as saved)."""
    from gahb.analysis.quality import QUALITY_VERSION

    return json.loads(json.dumps({"measurement": measure_key, "quality": cfg.quality, "set_size": ctx.set_size,
                                  "classifier_sha256": ctx.classifier.manifest["weights"]["sha256"],
                                  "version": QUALITY_VERSION}, default=str))


def cached(path: Path, key: dict | None) -> dict | None:
    """The quality numbers cached in ``path`` for ``key``, else None."""
    from gahb.utils.io import read_json

    if key is None or not path.is_file():
        return None
    try:
        saved = read_json(path)
    except (OSError, ValueError):
        return None
    return saved.get("numbers") if saved.get("key") == key else None


def measure(cfg, ctx: QualityContext, samples: dict, status: dict) -> dict:
    """One N's quality, per network: the first m converged samples against T (module docstring)."""
    from gahb.analysis.quality import quality_of

    t0 = time.perf_counter()
    out = {}
    for s in ("s1", "s2"):
        ok = [i for i, st in enumerate(status[s]) if st == "converged"]
        rows = ok[: ctx.set_size]
        q = quality_of(ctx.classifier, samples[s][rows], ctx.target, seed=cfg.sample_seed) if len(rows) >= 2 \
            else {"n": len(rows), "frechet": None, "confidence": None}
        out[s] = {**q, "failed": len(status[s]) - len(ok), "samples": len(status[s])}
    out["measure_seconds"] = round(time.perf_counter() - t0, 2)
    return out


def numbers(ctx: QualityContext | None, per_n: dict[int, dict]) -> dict | None:
    """``numbers["quality"]`` of results.json: None when off, the reason when unavailable."""
    from gahb.analysis.quality import QUALITY_VERSION

    if ctx is None:
        return None
    if ctx.classifier is None:
        return {"unavailable": ctx.unavailable}
    return {"classifier": ctx.classifier.summary(), "set_size": ctx.set_size, "version": QUALITY_VERSION,
            "references": ctx.references, "per_n": {str(n): v for n, v in sorted(per_n.items())},
            "reference_seconds": round(ctx.seconds, 2)}


def seconds(quality: dict | None) -> float:
    """Seconds the quality cost: training its classifier (once, from its manifest), the references and
    every N; 0 when it was not measured."""
    if not quality or "per_n" not in quality:
        return 0.0
    return (float(quality["classifier"]["train_seconds"]["wall"]) + float(quality.get("reference_seconds", 0.0))
            + sum(v.get("measure_seconds", 0.0) for v in quality["per_n"].values()))
