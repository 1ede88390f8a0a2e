"""Print the Markdown tables of docs/divergence.md from the probes' JSON files (issue 15).

    python scripts/divergence_tables.py docs/divergence

reads ``divergence.json`` (scripts/probe_divergence.py), ``running_sd*.json``
(scripts/probe_running_sd.py) and every ``recipes_*.json`` (scripts/probe_recipes.py) in that
folder and prints one table per file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _f(v, fmt: str = ".3f") -> str:
    return "—" if v is None else format(v, fmt)


def networks_table(d: dict) -> str:
    groups = list(dict.fromkeys(r["group"] for r in d["networks"]))
    by = {(r["group"], r["run"]): r for r in d["networks"]}
    runs = list(dict.fromkeys(r["run"] for r in d["networks"]))
    head = "| network | " + " | ".join(f"{g}: failed | radial gain g (mean / max) | image gain c at sigma 0.5 / 1"
                                      for g in groups) + " |"
    lines = [head, "|---|" + "---|---|---|" * len(groups)]
    for run in runs:
        cells = []
        for g in groups:
            r = by.get((g, run))
            c = (r or {}).get("image_gain_train")
            cells += ["—", "—", "—"] if r is None else [
                f"{r['failed']}/{r['samples']}", f"{r['gain_train_mean']:.3f} / {r['gain_train_max']:.3f}",
                "—" if c is None else f"{c['0.5']:.3f} / {c['1']:.3f}"]
        n, s = run[1:].split("_")
        lines.append(f"| N = {n}, {s.upper()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def first_image_table(d: dict) -> str:
    lines = []
    for r in d["networks"]:
        rows = r.get("on_its_first_training_image")
        if not rows:
            continue
        lines.append(f"{r['group']}, {r['run']}:\n")
        lines.append("| σ of the input | " + " | ".join(f"{x['sigma']:g}" for x in rows) + " |")
        lines.append("|---|" + "---|" * len(rows))
        lines.append("| ‖f(x + σz)‖ / ‖x‖ | " + " | ".join(f"{x['norm_ratio']:.3f}" for x in rows) + " |")
        lines.append("| cos(f, x) | " + " | ".join(f"{x['cos']:.3f}" for x in rows) + " |\n")
    return "\n".join(lines)


def _c(c: dict | None) -> str:
    return "—" if c is None else f"{c['0.5']:.3f} / {c['1']:.3f}"


def recipes_table(d: dict) -> str:
    lines = ["| N | model, steps | recipe | radial gain g (mean / max) | image gain c at sigma 0.5 / 1 | failed | "
             "nearest-training cosine (median) |", "|---|---|---|---|---|---|---|"]
    for r in d["networks"]:
        lines.append(f"| {r['n']} | {r.get('model', 'unet-small')}, {r.get('steps', 200)} | {r['recipe']} | {r['gain_mean']:.3f} / {r['gain_max']:.3f} | "
                     f"{_c(r.get('image_gain'))} | "
                     f"{r['failed']}/{r['samples']} | {_f(r['nearest_median'])} |")
    return "\n".join(lines)


def running_sd_table(d: dict) -> str:
    lines = ["| network | gain, eval statistics | failed | gain, recalibrated | failed | largest change of running_sd |",
             "|---|---|---|---|---|---|"]
    for r in d["networks"]:
        b, a = r["before"], r["recalibrated"]
        lines.append(f"| {r['run']} | {b['gain_train_mean']:.3f} | {b['failed']} | {a['gain_train_mean']:.3f} | "
                     f"{a['failed']} | x{2.718281828 ** r['max_abs_log_change_of_running_sd']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/divergence")
    div = folder / "divergence.json"
    if div.is_file():
        d = json.loads(div.read_text())
        print(f"## {div} ({d['command']})\n\n{networks_table(d)}\n\n{first_image_table(d)}")
    for rsd in sorted(folder.glob("running_sd*.json")):
        d = json.loads(rsd.read_text())
        print(f"## {rsd} ({d['command']})\n\n{running_sd_table(d)}\n")
    for path in sorted(folder.glob("recipes_*.json")):
        d = json.loads(path.read_text())
        print(f"## {path} ({d['command']})\n\n{recipes_table(d)}\n")


if __name__ == "__main__":
    main()
