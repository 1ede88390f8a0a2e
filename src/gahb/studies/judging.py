"""Claims judged again from results files alone: the committed standard verdicts, variants, ``gahb report``.

A study's claims are a function of its ``results.json`` (each study's ``judge``), so a report can be
re-judged and re-rendered without training or measuring anything:

* :func:`with_standard_verdicts`: beside each claim of a smaller preset, the verdict of the same claim
  in the committed standard results (``docs/results``), so a reader sees which failures come from
  the small scale;
* :func:`mark_variant_passes`: under a failing claim of the paper's recipe, the variants (sections
  of the same study off that recipe) in which it passes;
* :func:`rejudge_study` and :func:`rejudge_reproduction`: rewrite the claims of a study folder or of
  a whole reproduction with the current judging code, and re-render its report.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from gahb.studies import common


# The committed standard results of each section, relative to the repository root (docs/results).
COMMITTED = {"transition": "transition", "gahb": "gahb", "calpha": "calpha", "calpha_eps": "calpha-eps",
             "manifold": "manifold", "shuffled": "shuffled", "published": "published/study"}


def committed_results(section: str, root: Path | None = None) -> dict | None:
    """The committed standard ``results.json`` of a section (None when this checkout has none)."""
    root = root or Path(__file__).resolve().parents[3]
    path = root / "docs" / "results" / COMMITTED.get(section, section) / "results.json"
    return common.read_json(path) if path.is_file() else None


def _base_name(name: str) -> str:
    return name.split(" [variant: ")[0]


def with_standard_verdicts(section: str, claims: list[dict], root: Path | None = None) -> list[dict]:
    """``claims`` with ``standard``: the verdict of the claim of the same name in the committed standard
    results ("pass", "fail", "info", "invalid"), or "not in the committed results"."""
    std = committed_results(section, root)
    verdicts = {} if std is None else {_base_name(c["name"]): common.claim_status(c) for c in std.get("claims", [])}
    return [{**c, "standard": verdicts.get(_base_name(c["name"]), "not in the committed results")} for c in claims]


def mark_variant_passes(entries: list[dict]) -> None:
    """Under each failing claim of a section on the paper's recipe, record the variants (sections of the
    same study off that recipe) in which the same claim passes: ``passes_for_variant``."""
    passing: dict[tuple, list[str]] = {}
    for e in entries:
        res = e.get("results") or {}
        if res.get("variant"):
            for c in res.get("claims") or []:
                if common.claim_status(c) == "pass":
                    passing.setdefault((e["study"], _base_name(c["name"])), []).append(f"{res['variant']} "
                                                                                     f"(section {e['section']})")
    for e in entries:
        res = e.get("results") or {}
        if not res or res.get("variant"):
            continue
        claims = []
        for c in res.get("claims") or []:
            where = passing.get((e["study"], _base_name(c["name"])))
            claims.append({**c, "passes_for_variant": "; ".join(where)} if where and common.claim_status(c) == "fail"
                          else c)
        e["results"] = {**res, "claims": claims}


def _stamp() -> dict:
    return {"git_revision": common.git_revision(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": common.command_line()}


def rejudge_study(folder: str | os.PathLike) -> dict:
    """Re-judge ``folder/results.json`` with its study's ``judge`` and rewrite it (numbers untouched)."""
    from gahb.utils.io import atomic_write_json

    path = Path(folder) / "results.json"
    results = common.load_results(folder)
    if results is None:
        raise FileNotFoundError(f"{path}: no results.json to re-judge")
    if not results.get("study"):
        raise ValueError(f"{path}: not a study's results (no 'study' field)")
    try:
        claims = common.rejudge(results["study"], results)
    except KeyError as exc:
        raise ValueError(f"{path}: these results lack {exc}, which the current judging needs: they were measured "
                         "by an older gahb; re-run the study (finished training runs are reused)") from None
    results = {**results, "claims": claims, "judged": _stamp()}
    atomic_write_json(path, results)
    return results


def rejudge_reproduction(out: str | os.PathLike, log=print) -> dict:
    """Re-judge every section of the reproduction in ``out`` (``reproduce.json``) and re-render its report.

    Each section's ``results.json`` in its folder is rewritten with the new claims; the reproduction's
    ``meta`` keeps what it recorded of the original run and gains ``rejudged``.
    """
    from gahb.report.html import write_report
    from gahb.utils.io import atomic_write_json, read_json

    out = Path(out)
    path = out / "reproduce.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no reproduce.json (give the folder a `gahb reproduce` wrote)")
    doc = read_json(path)
    for e in doc["sections"]:
        if not e.get("results"):
            continue
        # OUT/<section> when the reproduction was moved or copied, else the folder it recorded
        # (a section kept elsewhere with --section-dir)
        inside = out / e["section"]
        folder = inside if (inside / "results.json").is_file() else Path(e["out_dir"])
        e["out_dir"] = str(folder)
        if (folder / "results.json").is_file():
            e["results"] = rejudge_study(folder)
        else:  # the section folder is gone: judge the copy kept in reproduce.json
            e["results"] = {**e["results"], "claims": common.rejudge(e["study"], e["results"]), "judged": _stamp()}
        log(f"[report] {e['section']}: {len(e['results']['claims'])} claims re-judged")
    if doc["meta"].get("preset") != "standard":
        for e in doc["sections"]:
            if e.get("results"):
                e["results"] = {**e["results"], "claims": with_standard_verdicts(e["section"], e["results"]["claims"])}
    mark_variant_passes(doc["sections"])
    from gahb.studies.reproduce import claims_and_summary

    doc["claims"], doc["summary"] = claims_and_summary(doc["sections"])
    doc["meta"]["rejudged"] = _stamp()
    atomic_write_json(path, doc)
    write_report(out / "report.html", doc["sections"], doc["meta"])
    return doc
