"""One self-contained HTML report of a reproduction: claims beside measurements, figures, numbers.

The page needs nothing but itself: CSS is inline, figures are embedded as base64 ``data:`` URIs, and
no script, font or stylesheet is fetched, so it opens offline and can be mailed as one file.
Every text that comes from results (claims, captions, commands, error messages) is HTML-escaped.

Input: one dict per report section (as :mod:`gahb.studies.reproduce` assembles them)::

    {"section": "gahb", "title": "...", "status": "ok" | "reused" | "failed" | "missing",
     "study_preset": "quick", "out_dir": "runs/reproduce-quick/gahb",
     "results": <a study's results.json dict, or None>, "error": "...", "wall_time_s": 12.3}

and ``meta`` (title, preset, scale, git_revision, versions, device, wall_time_s, date, command).
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from pathlib import Path
from typing import Any

from gahb.utils.io import atomic_write_text

CSS = """
:root { --fg:#1d232a; --muted:#5b6670; --line:#d8dee4; --bg-alt:#f5f7f9;
        --pass:#1a7f37; --pass-bg:#dafbe1; --fail:#b42318; --fail-bg:#ffe4e1;
        --info:#475467; --info-bg:#eef1f4; --warn-bg:#fff4d6; }
* { box-sizing: border-box; }
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); margin: 0; line-height: 1.45; font-size: 15px; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 1.65em; margin: 0 0 4px; }
h2 { font-size: 1.3em; margin: 38px 0 8px; padding-top: 10px; border-top: 2px solid var(--line); }
h3 { font-size: 1.05em; margin: 20px 0 6px; }
.subtitle { color: var(--muted); margin: 0 0 16px; }
.scale { background: var(--warn-bg); border-left: 4px solid #d4a72c; padding: 8px 12px; margin: 12px 0; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 10px 0; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em;
             overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 14px; font-size: 0.92em; }
th, td { border: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: var(--bg-alt); font-weight: 600; }
td.num { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.92em;
         overflow-wrap: anywhere; }
td.detail { color: var(--muted); font-size: 0.9em; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600; font-size: 0.85em;
         white-space: nowrap; }
.pass { color: var(--pass); background: var(--pass-bg); }
.fail { color: var(--fail); background: var(--fail-bg); }
.info { color: var(--info); background: var(--info-bg); }
.counts span { margin-right: 10px; }
.error { background: var(--fail-bg); border-left: 4px solid var(--fail); padding: 8px 12px; margin: 10px 0; }
.error pre { margin: 6px 0 0; white-space: pre-wrap; font-size: 0.85em; }
figure { margin: 14px 0 22px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 0.9em; margin-top: 4px; max-width: 900px; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre.cmd { background: var(--bg-alt); padding: 8px 10px; white-space: pre-wrap; overflow-wrap: anywhere;
          font-size: 0.86em; margin: 4px 0; }
details { margin: 8px 0; }
details summary { cursor: pointer; color: var(--muted); }
details pre { background: var(--bg-alt); padding: 10px; max-height: 480px; overflow: auto; font-size: 0.8em; }
nav.toc ol { margin: 6px 0; padding-left: 22px; }
footer { margin-top: 40px; color: var(--muted); font-size: 0.85em; }
"""

STATUS_TEXT = {
    "ok": "computed in this run",
    "reused": "reused from an earlier run with the same configuration",
    "failed": "FAILED",
    "missing": "not run",
    "pending": "not run yet (the reproduction is in progress)",
}


# -- formatting ------------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def format_value(value: Any, max_items: int = 8) -> str:
    """A compact, human-readable rendering of a claim value (number, text, list or dict); not escaped."""
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0:
            return "0"  # also -0.0, which rounding leaves behind
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        items = [format_value(v, max_items) for v in value[:max_items]]
        more = f", \u2026 ({len(value)} values)" if len(value) > max_items else ""
        return "[" + ", ".join(items) + more + "]"
    if isinstance(value, dict):  # "k: v; k: v", nested as "k: (a: 1, b: 2)": no Python syntax for a reader
        items = []
        for k, v in list(value.items())[:max_items]:
            inner = format_value(v, max_items)
            if isinstance(v, dict):
                inner = "(" + inner.replace("; ", ", ") + ")"
            items.append(f"{k}: {inner}")
        more = "; \u2026" if len(value) > max_items else ""
        return "; ".join(items) + more
    return str(value)


def format_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(float(seconds)):
        return "\u2014"
    s = int(round(float(seconds)))
    if s < 60:
        return f"{float(seconds):.1f} s"
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {sec:02d} s"


def badge(passed: bool | None | str) -> str:
    """The result cell: ``passed`` True/False/None, or a status string (``"invalid"``, ...)."""
    if passed == "invalid":
        return '<span class="badge fail">invalid</span>'
    if passed is None or passed == "info":
        return '<span class="badge info">info</span>'
    return '<span class="badge pass">pass</span>' if passed in (True, "pass") else '<span class="badge fail">FAIL</span>'


def embed_png(path: str | os.PathLike) -> str | None:
    """The PNG at ``path`` as a ``data:`` URI (None when the file is missing)."""
    p = Path(path)
    if not p.is_file():
        return None
    mime = "image/svg+xml" if p.suffix.lower() == ".svg" else \
        "image/jpeg" if p.suffix.lower() in (".jpg", ".jpeg") else "image/png"
    return f"data:{mime};base64," + base64.b64encode(p.read_bytes()).decode("ascii")


def _anchor(section: str) -> str:
    return "sec-" + "".join(c if c.isalnum() else "-" for c in str(section))


# -- pieces ----------------------------------------------------------------------------------------
def _claims_table(rows: list[tuple[str | None, dict]]) -> str:
    with_section = any(sec is not None for sec, _ in rows)
    with_standard = any("standard" in c for _, c in rows)
    head = ("<th>section</th>" if with_section else "") + \
        "<th>claim</th><th>paper</th><th>measured</th><th>uncertainty</th><th>target and reference</th>" \
        "<th>result</th>" + ("<th>standard preset (committed)</th>" if with_standard else "")
    out = [f"<table><thead><tr>{head}</tr></thead><tbody>"]
    for sec, c in rows:
        cells = ""
        if with_section:
            cells += f'<td><a href="#{_anchor(sec)}">{_e(sec)}</a></td>'
        name = _e(c.get("name", ""))
        if c.get("inputs") is not None:
            name += (f'<div class="detail" style="color:var(--muted);font-size:0.88em">{c["failed"]} of '
                     f'{c["inputs"]} inputs failed (left out)</div>')
        if c.get("detail"):
            name += f'<div class="detail" style="color:var(--muted);font-size:0.88em">{_e(c["detail"])}</div>'
        cells += (f"<td>{name}</td><td class='num'>{_e(format_value(c.get('paper')))}</td>"
                  f"<td class='num'>{_e(format_value(c.get('measured')))}</td>"
                  f"<td class='detail'>{_e(c.get('uncertainty') or chr(0x2014))}</td>"
                  f"<td>{_e(c.get('target') or chr(0x2014))}{_reference(c)}{_target_note(c)}</td>"
                  f"<td>{badge(_status(c))}{_why(c)}{_variant_note(c)}</td>")
        if with_standard:
            std = c.get("standard")
            cells += f"<td>{badge(std) if std in ('pass', 'fail', 'info', 'invalid') else _e(std or chr(0x2014))}</td>"
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _reference(c: dict) -> str:
    ref = c.get("reference")
    return f'<div class="detail" style="color:var(--muted);font-size:0.85em">compared with: {_e(ref)}</div>' if ref else ""


def _target_note(c: dict) -> str:
    note = c.get("target_note")
    return f'<div class="detail" style="color:#9a6700;font-size:0.85em">target changed: {_e(note)}</div>' if note else ""


def _variant_note(c: dict) -> str:
    """Under a FAIL of the paper's recipe: the variants of the same claim that pass (see gahb.studies.reproduce)."""
    v = c.get("passes_for_variant")
    return (f'<div class="detail" style="color:#9a6700;font-size:0.85em">passes only for the variant: {_e(v)}</div>'
            if v else "")


def _why(c: dict) -> str:
    """The one line under a FAIL or invalid badge that says why."""
    why = c.get("why")
    if not why and c.get("invalid"):
        why = f"{c.get('failed')} of {c.get('inputs')} inputs failed"
    if not why or _status(c) not in ("fail", "invalid"):
        return ""
    return f'<div class="detail" style="color:var(--muted);font-size:0.85em">{_e(why)}</div>'


def _counts(claims: list[dict]) -> dict:
    n = {"pass": 0, "fail": 0, "info": 0, "invalid": 0}
    for c in claims:
        n[_status(c)] += 1
    return n


def _status(c: dict) -> str:
    from gahb.studies.common import claim_status

    return claim_status(c)


def _section_html(sec: dict) -> str:
    name = sec.get("section", "?")
    title = sec.get("title") or name
    status = sec.get("status", "missing")
    res = sec.get("results") or None
    out = [f'<section id="{_anchor(name)}"><h2>{_e(title)}</h2>']
    bits = [f"section <code>{_e(name)}</code>", f"study preset <code>{_e(sec.get('study_preset'))}</code>",
            _e(STATUS_TEXT.get(status, status))]
    if res is not None:
        bits.append(f"wall time {_e(format_seconds(res.get('wall_time_s')))}")
    out.append(f'<p class="subtitle">{" &middot; ".join(bits)}</p>')
    if sec.get("description"):
        out.append(f"<p>{_e(sec['description'])}</p>")
    if sec.get("scale"):
        out.append(f'<p class="subtitle">scale of this run: {_e(sec["scale"])}</p>')
    if status == "failed" or res is None:
        msg = sec.get("error") or "this section produced no results"
        why = {"failed": "it failed", "pending": "it has not run yet"}.get(status, "it was not run")
        out.append(f'<div class="error"><strong>This section has no results: {why}.</strong>'
                   f"<pre>{_e(msg)}</pre></div>")
        if sec.get("command"):
            out.append(f'<h3>Command</h3><pre class="cmd">{_e(sec["command"])}</pre>')
        out.append("</section>")
        return "".join(out)

    claims = res.get("claims") or []
    out.append("<h3>Claims</h3>")
    out.append(_claims_table([(None, c) for c in claims]) if claims else "<p>(no claims recorded)</p>")
    figures = res.get("figures") or []
    if figures:
        out.append("<h3>Figures</h3>")
    base = Path(sec.get("out_dir") or ".")
    for fig in figures:
        uri = embed_png(base / fig["path"])
        cap = _e(fig.get("caption") or fig["path"])
        if uri is None:
            out.append(f'<div class="error">figure <code>{_e(fig["path"])}</code> is missing.</div>')
            continue
        out.append(f'<figure><img src="{uri}" alt="{cap}"><figcaption>{cap} '
                   f'<code style="font-size:0.85em">({_e(fig["path"])})</code></figcaption></figure>')
    out.append("<h3>Command that produced it</h3>")
    if sec.get("command"):
        out.append(f'<pre class="cmd">{_e(sec["command"])}</pre>')
    if res.get("command") and res.get("command") != sec.get("command"):
        out.append(f'<p class="subtitle">as recorded by the study:</p><pre class="cmd">{_e(res["command"])}</pre>')
    env = res.get("environment") or {}
    if env:
        out.append(f'<p class="subtitle">git {_e(env.get("git_revision"))}, torch {_e(env.get("torch"))}, '
                   f'device {_e(env.get("device"))}, {_e(env.get("torch_threads"))} thread(s); '
                   f'output folder <code>{_e(sec.get("out_dir"))}</code></p>')
    out.append("<details><summary>configuration (JSON)</summary><pre>"
               + _e(json.dumps(res.get("config"), indent=2, default=str)) + "</pre></details>")
    out.append("<details><summary>every number (JSON)</summary><pre>"
               + _e(json.dumps(res.get("numbers"), indent=2, default=str)) + "</pre></details>")
    out.append("</section>")
    return "".join(out)


def build_report(sections: list[dict], meta: dict) -> str:
    """The whole report as one HTML string (see the module docstring for the inputs)."""
    title = meta.get("title") or "gahb reproduction report"
    all_rows = [(s.get("section"), c) for s in sections for c in ((s.get("results") or {}).get("claims") or [])]
    counts = _counts([c for _, c in all_rows])
    failed = [s.get("section") for s in sections if s.get("status") == "failed" or not s.get("results")]
    versions = meta.get("versions") or {}
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>",
           f"<h1>{_e(title)}</h1>",
           '<p class="subtitle">Kadkhodaie, Guth, Simoncelli, Mallat: <em>Generalization in diffusion models '
           "arises from geometry-adaptive harmonic representations</em> (ICLR 2024), reproduced with gahb.</p>"]
    if meta.get("complete") is False:
        out.append('<div class="error"><strong>Partial report:</strong> the reproduction is still running '
                   "(or was interrupted); sections not run yet say so below.</div>")
    if meta.get("scale"):
        out.append(f'<div class="scale"><strong>Preset <code>{_e(meta.get("preset"))}</code>:</strong> '
                   f'{_e(meta["scale"])}</div>')
    rows = [("preset", meta.get("preset")), ("date", meta.get("date")),
            ("git revision", meta.get("git_revision")), ("device", meta.get("device")),
            ("wall time of this command", format_seconds(meta.get("wall_time_s"))),
            ("wall time of the studies", None if meta.get("studies_wall_time_s") is None else
             format_seconds(meta.get("studies_wall_time_s"))
             + (f" (summed from their results: recorded compute where a study keeps it, else the wall "
                f"time of the run that wrote them; reused here: {', '.join(meta['reused_sections'])})"
                if meta.get("reused_sections") else "")),
            ("versions", ", ".join(f"{k} {v}" for k, v in versions.items())),
            ("machine", meta.get("machine")), ("command", meta.get("command")),
            ("output folder", meta.get("out_dir"))]
    out.append('<dl class="meta">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows if v is not None)
               + "</dl>")
    out.append('<nav class="toc"><strong>Sections</strong><ol>')
    for s in sections:
        n = _counts((s.get("results") or {}).get("claims") or [])
        state = {"failed": "failed", "pending": "not run yet"}.get(s.get("status"), "not run") \
            if not s.get("results") else \
            f"{n['pass']} pass, {n['fail']} fail, {n['info']} info" + (f", {n['invalid']} invalid" if n["invalid"] else "")
        out.append(f'<li><a href="#{_anchor(s.get("section"))}">{_e(s.get("title") or s.get("section"))}</a> '
                   f'<span class="subtitle">({_e(state)})</span></li>')
    out.append("</ol></nav>")
    out.append("<h2>Summary: the paper's claims beside our measurements</h2>")
    out.append(f'<p class="counts"><span>{badge(True)} {counts["pass"]}</span>'
               f'<span>{badge(False)} {counts["fail"]}</span><span>{badge(None)} {counts["info"]}</span>'
               + (f'<span>{badge("invalid")} {counts["invalid"]}</span>' if counts["invalid"] else "")
               + (f' <span class="badge fail">{len(failed)} section(s) without results: '
                  f'{_e(", ".join(map(str, failed)))}</span>' if failed else "") + "</p>")
    out.append('<p class="subtitle">"pass"/"FAIL" compares our measurement with the stated target; '
               '"info" rows have no acceptance target and are shown for comparison only; "invalid" rows had '
               'more than 10% of their inputs fail (samples that diverged) and are not judged.</p>')
    out.append(_claims_table(all_rows) if all_rows else "<p>(no claims: no section produced results)</p>")
    for s in sections:
        out.append(_section_html(s))
    out.append(f"<footer>Written by <code>gahb reproduce</code> (gahb {_e(versions.get('gahb', ''))}). "
               "Self-contained: figures are embedded; the page loads nothing from the network.</footer>")
    out.append("</main></body></html>")
    return "\n".join(out)


def write_report(path: str | os.PathLike, sections: list[dict], meta: dict) -> Path:
    """:func:`build_report` written atomically to ``path``."""
    return atomic_write_text(path, build_report(sections, meta))
