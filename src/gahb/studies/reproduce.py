"""``gahb reproduce``: every study of the paper in order, one HTML report and one JSON of every number.

Sections run in :data:`SECTIONS` order, each into ``OUT/<section>/`` at the study preset that the
reproduce preset maps it to (:data:`PRESETS`). A section whose ``results.json`` holds the same
configuration (and whose upstream sections were reused too) is reused as it is; otherwise its
study's ``run`` is called, which itself reuses finished training runs and resumes unfinished ones,
so an interrupted reproduction continues where it stopped when the same command is run again.
A failing section is recorded (error and traceback in the JSON and on the page) and the others
still run; :func:`reproduce` reports the failure to its caller, which exits non-zero.

Outputs: ``OUT/report.html`` (self-contained, see :mod:`gahb.report.html`) and
``OUT/reproduce.json``: ``meta`` (preset and its scale, git revision, versions, device, machine,
date, total wall time, command), ``sections`` (each section's status, command, wall time and full
results dict), ``claims`` (every claim of every section, flat, with the command that produced
it) and ``summary`` (pass/fail/info counts, sections without results).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from gahb.studies import common
from gahb.studies.judging import mark_variant_passes, with_standard_verdicts


@dataclass(frozen=True)
class Section:
    """One part of the report: which study computes it and what it is called on the page."""

    name: str
    study: str
    title: str
    description: str
    depends: tuple = ()
    # (field, value) pairs that make this section a variant of its study's preset (e.g. another loss)
    overrides: tuple = ()
    # the reproduce presets that include this section (None: all)
    presets: tuple | None = None


SECTIONS: tuple[Section, ...] = (
    Section("transition", "transition", "1. Memorization to generalization as N grows (Figs 1, 2, 15)",
            "Denoisers trained on two disjoint subsets S1, S2 of size N: train/test PSNR gap, and whether "
            "the two networks sample the same images (generalization) or their own training images "
            "(memorization)."),
    Section("gahb", "gahb_basis", "2. Geometry-adaptive harmonic bases: the Jacobian (Fig 3, eqs. 6-7)",
            "Eigen-decomposition of the denoiser's Jacobian at a held-out image for the smallest and the "
            "largest N of section 1: adaptive basis, shrinkage spectrum, effective dimension tr J vs sigma.",
            depends=("transition",)),
    Section("calpha", "calpha", "3. C^alpha images: near-optimal denoising rate (Fig 4)",
            "Output vs input PSNR slope of networks trained on geometric C^alpha images against the optimal "
            "alpha/(alpha+1) of a GAHB (eq. 13)."),
    Section("calpha_eps", "calpha", "3b. C^alpha images, variant: noise-prediction loss (Fig 4)",
            "The same study trained with the loss weighted by 1/(sigma^2 + 0.01^2) (DDPM's noise prediction) "
            "instead of the paper's eq. 4, which on a CPU budget leaves the small-noise end of the fit window "
            "least trained. Its rows are labelled as the variant; a claim of section 3 that passes only here "
            "says so.", overrides=(("loss_weight", "eps"),), presets=("standard",)),
    Section("manifold", "manifold", "4. Disks, a 5-dimensional manifold (Fig 5)",
            "Top Jacobian eigenvectors against the tangent space of the disk manifold; PSNR slope."),
    Section("shuffled", "shuffled", "5. Pixel-shuffled images (Fig 21)",
            "The same data with a fixed pixel permutation: lower PSNR, slower spectral decay (no GAHB "
            "fits the shuffled geometry)."),
    Section("published", "published", "6. Published blind denoisers of the lab (Mohan et al. 2020; Fig 3 on natural images)",
            "Converged networks nobody here trained, imported exactly: the bias-free DnCNNs' Set68 table against "
            "the published numbers, the adaptive basis of the universal_inverse_problem BF-CNN on Set12 crops "
            "(asymmetry, spectra, tr J, SURE), samples and inverse problems from its prior. Runs only when given "
            "the published files (--published-weights, --published-images)."),
)
# Sections that need inputs from outside the repository: {section: (config fields, what to pass)}.
EXTERNAL_INPUTS = {"published": (("weights_dir", "images_dir"), "--published-weights DIR --published-images DIR")}
SECTION_NAMES = tuple(s.name for s in SECTIONS)


def preset_sections(preset: str) -> tuple[Section, ...]:
    """The sections a reproduce preset includes, in report order."""
    return tuple(s for s in SECTIONS if s.presets is None or preset in s.presets)


@dataclass(frozen=True)
class Preset:
    """A reproduce preset: its scale in words (every section runs its study's preset of the same name)."""

    scale: str
    expected_s: dict = field(default_factory=dict)  # rough per-section seconds, for the first ETA


PRESETS: dict[str, Preset] = {
    "test": Preset(
        "tiny, for the test suite: a handful of tiny images and training steps per study. "
        "The numbers exercise the pipeline and mean nothing about the paper.",
        expected_s={"transition": 15, "gahb": 7, "calpha": 3, "manifold": 3, "shuffled": 3, "published": 30}),
    "quick": Preset(
        "tiny networks (unet-tiny, 114k parameters, on Fashion-MNIST 28x28 at a few N up to the full half of the "
        "pool, and on small synthetic images), 5,000 to 16,000 training images seen per network, about 5 minutes "
        "on 2 CPU cores. The paper trains 7.6M-parameter UNets on 80x80 faces for 2.5x10^8 images: expect its "
        "trends, not its numbers; the column 'standard preset (committed)' says which claims the larger scale passes.",
        expected_s={"transition": 150, "gahb": 16, "calpha": 90, "manifold": 20, "shuffled": 36, "published": 600}),
    "standard": Preset(
        "the acceptance scale of every study (unet-small on Fashion-MNIST, N from 1 to the full half "
        "of the pool; synthetic studies at their acceptance sizes), about 3 hours on 2 CPU cores. Smaller "
        "than the paper's; trends and slopes comparable.",
        expected_s={"transition": 4900, "gahb": 60, "calpha": 2000, "calpha_eps": 2000, "manifold": 3150,
                    "shuffled": 1080,
                    "published": 2100}),
    "paper": Preset(
        "the paper's recipe (unet-80, 80x80 images, 1000 epochs); GPU territory.",
        expected_s={"transition": 86400, "gahb": 1200, "calpha": 36000, "manifold": 36000, "shuffled": 36000,
                    "published": 3600}),
}


def load_section_module(section: Section):
    """The study module computing ``section`` (:func:`gahb.studies.get_study`)."""
    from gahb.studies import get_study

    return get_study(section.study)


# -- helpers ---------------------------------------------------------------------------------------
def machine_description() -> str:
    """CPU model and core count (from /proc/cpuinfo where there is one), plus the GPU if torch sees one."""
    import platform

    model = None
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    desc = f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"
    try:
        import torch

        if torch.cuda.is_available():
            desc += f"; GPU {torch.cuda.get_device_name(0)}"
    except Exception:  # pragma: no cover - torch import problems are reported elsewhere
        pass
    return desc


def _study_seconds(results: dict | None) -> float:
    """What a study's results cost: its recorded compute (training and measurement summed over
    sessions, ``numbers.compute_s.total``) where it keeps one, else the wall time of the run that
    wrote them (which is small when that run reused trained networks)."""
    results = results or {}
    compute = (results.get("numbers") or {}).get("compute_s")
    if isinstance(compute, dict) and compute.get("total") is not None:
        return float(compute["total"])
    return float(results.get("wall_time_s") or 0.0)


def _fmt_s(seconds: float) -> str:
    s = int(round(max(seconds, 0)))
    if s < 60:
        return f"{s} s"
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {sec:02d} s"


SCALE_FIELDS = ("dataset", "ns", "model", "size", "n_train", "epochs", "steps", "images_per_epoch", "lr_halve_every",
                "loss_weight", "alphas", "sigmas", "method")


def describe_scale(cfg: dict) -> str:
    """The fields of a study Config that set its scale, in one line (shown under each section title)."""
    from gahb.utils.config import flat

    cfg = flat(cfg)
    parts = [f"{k} {v if not isinstance(v, (list, tuple)) else ', '.join(map(str, v))}"
             for k, v in cfg.items() if k in SCALE_FIELDS and v is not None]
    return "; ".join(parts)


def study_runtime_fields() -> frozenset[str]:
    """The fields any study marks as runtime (how or where it ran, not what it computed: threads,
    folders): a finished section stays valid when only they differ (e.g. ``--set runs_dir=runs/X``)."""
    from gahb.studies import STUDIES, get_study
    from gahb.utils.config import runtime_fields

    return frozenset().union(*(runtime_fields(get_study(name).Config) for name in STUDIES))


def _same_config(old: dict | None, new: dict, legacy: dict | None = None) -> bool:
    """Whether a finished section's config matches the one requested
    (:func:`gahb.utils.config.same_result_config`, the runtime fields of the studies not compared).

    ``legacy``: the study's ``LEGACY_VALUES``, the values results written before a field existed had
    (its fields marked :func:`gahb.utils.config.added`).
    """
    from gahb.utils.config import same_result_config

    return same_result_config(old, new, ignore=study_runtime_fields(), before=legacy)


def legacy_values(mod, cfg) -> dict:
    """The values a study's results written before a field existed had: its ``LEGACY_VALUES``, else those
    of every field of its config ``cfg`` (nested recipe included) marked :func:`gahb.utils.config.added`."""
    from gahb.utils.config import before_values

    return getattr(mod, "LEGACY_VALUES", None) or before_values(type(cfg))


def section_dir(name: str, out: Path, section_dirs: dict | None) -> Path:
    """Where section ``name`` lives: ``OUT/<name>``, or the folder given for it in ``section_dirs``."""
    return Path((section_dirs or {}).get(name) or out / name)


def section_overrides(section: Section, out: Path, section_dirs: dict | None = None,
                      inputs: dict | None = None) -> dict:
    """Overrides a section needs inside a reproduction (where its upstream sections wrote, the
    outside inputs given for it)."""
    extra = dict(section.overrides)
    if section.name == "gahb":
        extra.setdefault("transition_dir", str(section_dir("transition", out, section_dirs)))
    extra.update({k: str(v) for k, v in (inputs or {}).get(section.name, {}).items() if v})
    return extra


def section_command(section: Section, study_preset: str, out_dir: Path, overrides: dict, reproduce_out: Path,
                    preset_name: str) -> str:
    """A command that recomputes this section alone."""
    from gahb.studies import STUDIES

    runtime_flags = ("dataset", "device", "threads", "executor")
    flags = [f"--{k} {shlex.quote(str(overrides[k]))}" for k in runtime_flags if k in overrides]
    if section.study not in STUDIES:
        return " ".join([f"gahb reproduce --preset {shlex.quote(preset_name)} --out {shlex.quote(str(reproduce_out))} "
                         f"--only {section.name}", *flags])
    import json

    flags += [f"--set {shlex.quote(f'{k}={json.dumps(v)}')}" for k, v in overrides.items()
              if k not in runtime_flags]
    return " ".join([f"gahb study {section.study} --preset {shlex.quote(study_preset)} --out {shlex.quote(str(out_dir))}",
                     *flags])


# -- the run ---------------------------------------------------------------------------------------
def reproduce(preset: str = "quick", out: str | os.PathLike | None = None, *, only=None, skip=None,
              dataset: str | None = None, device: str | None = None, threads: int | None = None,
              executor: str | None = None, rerun: bool = False, section_dirs: dict | None = None, progress: bool = True,
              log: Callable[[str], None] | None = None, inputs: dict | None = None) -> dict:
    """Run the sections of :data:`SECTIONS` at ``preset`` into ``out``; write the report and JSON.

    ``only``/``skip``: section names to run / leave out (left-out sections appear as "not run").
    ``dataset``, ``device``, ``threads`` and ``executor`` (where the independent trainings run,
    :mod:`gahb.studies.sweeps`) go into every study Config that has such a field.
    ``rerun`` ignores finished ``results.json`` files (the studies still reuse their trained runs).
    ``section_dirs`` ``{section: folder}`` puts a section elsewhere than ``OUT/<section>``, e.g. a study
    already run with ``gahb study`` (reused when its configuration matches, else computed there).
    ``inputs`` ``{section: {config field: value}}`` gives the sections of :data:`EXTERNAL_INPUTS`
    their outside files (e.g. ``{"published": {"weights_dir": ..., "images_dir": ...}}``); such a
    section without them is not run (an earlier result in its folder is still shown, as reused).
    Returns the ``reproduce.json`` dict; ``summary['failed_sections']`` lists the sections that failed
    (``summary['sections_without_results']`` also those left out and never run before).
    """
    from gahb.report.html import write_report
    from gahb.utils.io import atomic_write_json

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    if executor is not None:
        from gahb.studies.sweeps import parse_executor

        parse_executor(executor)
    for names in (only, skip, section_dirs):
        for n in names or ():
            if n not in SECTION_NAMES:
                raise ValueError(f"unknown section {n!r}; sections are {list(SECTION_NAMES)}")
    if log is None:
        def log(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)
    pre = PRESETS[preset]
    sections = preset_sections(preset)
    out = Path(out if out is not None else f"runs/reproduce-{preset}")
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        import torch

        torch.set_num_threads(threads)
    started = time.time()
    selected = [s for s in sections if (not only or s.name in only) and s.name not in (skip or ())]
    expected = {s.name: float(pre.expected_s.get(s.name, 60)) for s in selected}
    done_expected = done_measured = 0.0
    recomputed: set[str] = set()
    entries = []
    for s in sections:
        sec_out = section_dir(s.name, out, section_dirs)
        entry: dict = {"section": s.name, "study": s.study, "title": s.title, "description": s.description,
                       "study_preset": preset, "out_dir": str(sec_out), "status": "pending",
                       "command": None, "scale": None, "wall_time_s": 0.0,
                       "error": "not run yet: the reproduction is still in progress", "results": None}
        entries.append(entry)
        if s not in selected:
            entry.update(status="missing", error="left out of this reproduction (--only/--skip)")
            old = common.load_results(sec_out)
            if old is not None:  # an earlier run's result is still shown, marked as reused
                entry.update(status="reused", results=old, error=None, study_preset=old.get("preset"),
                             scale=describe_scale(old.get("config") or {}))

    def write(final: bool) -> dict:
        # Written after every section, so an interrupted reproduction still leaves a report behind.
        if preset != "standard":  # which of these claims the committed standard results pass
            for e in entries:
                if e.get("results"):
                    e["results"] = {**e["results"], "claims": with_standard_verdicts(e["section"], e["results"]["claims"])}
        mark_variant_passes(entries)
        doc = assemble(entries, preset, out, started, device, final)
        atomic_write_json(out / "reproduce.json", doc)
        write_report(out / "report.html", entries, doc["meta"])
        return doc

    for s, entry in zip(sections, entries):
        if s not in selected:
            continue
        sec_out = Path(entry["out_dir"])
        i = selected.index(s) + 1
        # Expected times are rough: rescale the rest by how the finished sections compared to theirs.
        speed = max(done_measured / done_expected, 0.05) if done_expected > 0 else 1.0
        left = sum(expected[x.name] for x in selected[i - 1:]) * speed
        log(f"[reproduce {i}/{len(selected)}] {s.name}: elapsed {_fmt_s(time.time() - started)}, "
            f"estimated time left ~{_fmt_s(left)} (this section ~{_fmt_s(expected[s.name] * speed)})")
        t0 = time.time()
        try:
            mod = load_section_module(s)
            study_preset = preset
            if study_preset not in mod.PRESETS:
                raise ValueError(f"study {s.study!r} has no preset {study_preset!r}")
            overrides = section_overrides(s, out, section_dirs, inputs)
            cfg = common.apply_overrides(mod.PRESETS[study_preset], overrides)
            fields = {f.name for f in dataclasses.fields(cfg)}
            extra = {k: v for k, v in (("dataset", dataset), ("device", device), ("threads", threads),
                                       ("executor", executor)) if v is not None and k in fields}
            if extra:
                cfg = dataclasses.replace(cfg, **extra)
                overrides = {**overrides, **extra}
            needs = EXTERNAL_INPUTS.get(s.name)
            if needs and any(k in fields and not getattr(cfg, k) for k in needs[0]):
                # Outside files not given: not run; an earlier result in its folder is still shown.
                prev = common.load_results(sec_out)
                if prev is not None:
                    entry.update(status="reused", results=prev, error=None, study_preset=prev.get("preset"),
                                 scale=describe_scale(prev.get("config") or {}), command=prev.get("command"))
                else:
                    entry.update(status="missing", error=f"not run: this section needs {needs[1]}")
                log(f"[reproduce {i}/{len(selected)}] {s.name}: {entry['status']} (it needs {needs[1]})")
                continue
            entry["command"] = section_command(s, study_preset, sec_out, overrides, out, preset)
            entry["scale"] = describe_scale(common.config_to_dict(cfg))
            old = None if rerun else common.load_results(sec_out)
            upstream_fresh = any(d in recomputed for d in s.depends)
            if (old is not None and not upstream_fresh
                    and _same_config(old.get("config"), common.config_to_dict(cfg), legacy_values(mod, cfg))):
                entry.update(status="reused", results=old)
                log(f"[reproduce {i}/{len(selected)}] {s.name}: reusing {sec_out / 'results.json'} (same configuration)")
            else:
                res = mod.run(cfg, sec_out, progress=progress, preset=study_preset)
                missing = [k for k in common.RESULT_KEYS if k not in res]
                if missing:
                    raise ValueError(f"study {s.study!r} returned results without {missing}")
                entry.update(status="ok", results=res)
                recomputed.add(s.name)
        except Exception as exc:  # noqa: BLE001 - a failing section is reported, the others still run
            recomputed.add(s.name)
            entry.update(status="failed", error=f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc(limit=6)}")
            log(f"[reproduce {i}/{len(selected)}] {s.name}: FAILED: {type(exc).__name__}: {exc}")
        entry["wall_time_s"] = round(time.time() - t0, 2)
        if entry["status"] == "ok":
            done_expected += expected[s.name]
            done_measured += entry["wall_time_s"]
        log(f"[reproduce {i}/{len(selected)}] {s.name}: {entry['status']} in {_fmt_s(entry['wall_time_s'])}")
        if s is not selected[-1]:
            write(final=False)

    doc = write(final=True)
    log(f"[reproduce] done in {_fmt_s(time.time() - started)}: {doc['summary']['pass']} pass, "
        f"{doc['summary']['fail']} fail, {doc['summary']['info']} info; report {out / 'report.html'}")
    if doc["summary"]["sections_without_results"]:
        log(f"[reproduce] sections without results: {', '.join(doc['summary']['sections_without_results'])}")
    return doc


def claims_and_summary(entries: list[dict]) -> tuple[list[dict], dict]:
    """Every claim of the sections, flat (with its section and command), and the summary counts."""
    claims = []
    for e in entries:
        for c in (e["results"] or {}).get("claims") or []:
            claims.append({"section": e["section"], **c,
                           "command": e["command"] or (e["results"] or {}).get("command")})
    counts = {"pass": 0, "fail": 0, "info": 0, "invalid": 0}
    for c in claims:
        counts[common.claim_status(c)] += 1
    failed = [e["section"] for e in entries if e["status"] == "failed"]
    without = [e["section"] for e in entries if e["results"] is None]
    nonfinite = [e["section"] for e in entries if e["results"] is not None and common.first_nonfinite(e["results"]) is not None]
    unsupported = [f"{e['section']}: {n}" for e in entries
                   for n in common.unsupported_claims((e["results"] or {}).get("claims") or [])]
    summary = {**counts, "sections": len(entries), "failed_sections": failed,
               # judged claims with neither a reference nor an uncertainty (should be none)
               "claims_without_reference_or_uncertainty": unsupported,
               "sections_without_results": without,
               "sections_with_nonfinite_numbers": nonfinite}
    return claims, summary


def assemble(entries: list[dict], preset: str, out: Path, started: float, device: str | None,
             final: bool = True) -> dict:
    """The ``reproduce.json`` document from the section entries."""
    env = common.environment(device)
    claims, summary = claims_and_summary(entries)
    versions = {k: env[k] for k in ("gahb", "torch", "numpy", "python") if k in env}
    try:
        import matplotlib

        versions["matplotlib"] = matplotlib.__version__
    except ImportError:  # pragma: no cover
        pass
    meta = {
        "title": "gahb reproduction report",
        "preset": preset,
        "scale": PRESETS[preset].scale,
        "git_revision": env.get("git_revision"),
        "versions": versions,
        "device": env.get("device") + (f" ({env['gpu']})" if env.get("gpu") else ""),
        "machine": machine_description(),
        "torch_threads": env.get("torch_threads"),
        "platform": env.get("platform"),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_time_s": round(time.time() - started, 2),
        # A reused section cost nothing now; what its results cost is in its own results.json.
        "studies_wall_time_s": round(sum(_study_seconds(e["results"]) for e in entries), 2),
        "reused_sections": [e["section"] for e in entries if e["status"] == "reused"],
        "command": common.command_line(),
        "out_dir": str(out),
        "complete": final,
        "sections": [e["section"] for e in entries],
    }
    return {"meta": meta, "sections": entries, "claims": claims, "summary": summary}
