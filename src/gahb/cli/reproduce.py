"""``gahb reproduce``: every study of the paper in order, one self-contained HTML report and one JSON."""

from __future__ import annotations

import textwrap
from gahb.cli.common import DEVICE_HELP, HelpFormatter, add_runtime_flags

EPILOG = """\
sections, in order (each written to OUT/<section>/):
{sections}

presets:
{presets}

Re-running the same command reuses finished sections (same configuration) and resumes unfinished
training runs, so an interrupted reproduction continues where it stopped. A failing section is
recorded in the report and the JSON, the others still run, and the command exits with status 1.
Writes OUT/report.html (self-contained: figures embedded, no network) and OUT/reproduce.json
(meta: preset, git revision, versions, device, machine, wall time; every section's results; every
claim beside our measured value with the command that produced it).

examples:
  gahb reproduce --preset quick                     # ~15 min on 2 CPU cores -> runs/reproduce-quick/report.html
  gahb reproduce --preset standard --out docs/results/reproduce-standard --threads 2
  gahb reproduce --preset quick --only gahb calpha  # just these sections (others shown as not run)
  gahb reproduce --preset standard --section-dir transition=docs/results/transition  # reuse a `gahb study` run
  gahb reproduce --preset standard --only published --published-weights ../shared/published/weights \\
      --published-images ../shared/published/images
  chromium --headless --screenshot=report.png --window-size=1280,4000 file://$PWD/runs/reproduce-quick/report.html
"""


def register(subparsers) -> None:
    from gahb.studies.reproduce import PRESETS, SECTION_NAMES, SECTIONS

    sections = "\n".join(f"  {s.name:<11} {s.title}" for s in SECTIONS)
    presets = "\n".join(textwrap.fill(f"{k:<9} {v.scale}", 100, initial_indent="  ", subsequent_indent=" " * 12)
                        for k, v in PRESETS.items())
    p = subparsers.add_parser(
        "reproduce", help="run every study in order and write one HTML report + JSON of every number",
        description="Reproduce the paper in one command: the transition, Jacobian/GAHB, C^alpha, manifold and "
                    "shuffled studies, then one self-contained HTML report with the paper's claims beside our "
                    "measured values.",
        epilog=EPILOG.format(sections=sections, presets=presets), formatter_class=HelpFormatter)
    p.add_argument("--preset", choices=list(PRESETS), default="quick", help="scale of every study")
    p.add_argument("--out", default=None, help="output folder (None: runs/reproduce-PRESET)")
    p.add_argument("--only", nargs="+", choices=list(SECTION_NAMES), default=None, metavar="SECTION",
                   help="run only these sections")
    p.add_argument("--skip", nargs="+", choices=list(SECTION_NAMES), default=None, metavar="SECTION",
                   help="leave these sections out")
    p.add_argument("--dataset", default=None, help="dataset spec for the studies that take one (None: each study preset's)")
    p.add_argument("--section-dir", action="append", default=[], metavar="SECTION=DIR",
                   help="use DIR for SECTION instead of OUT/SECTION, e.g. a study already run with `gahb study` "
                        "(reused when its configuration matches; repeatable)")
    p.add_argument("--published-weights", default=None, metavar="DIR",
                   help="folder of the lab's published checkpoints: adds the 'published' section (with --published-images)")
    p.add_argument("--published-images", default=None, metavar="DIR", help="folder holding Set12/ and Set68/")
    p.add_argument("--executor", default=None, metavar="KIND[:key=value,...]",
                   help="where the studies' independent trainings run: inline (default), local or slurm (submitit "
                        "jobs that resume when requeued), e.g. slurm:partition=gpu,gpus_per_job=1,timeout_min=240")
    p.add_argument("--rerun", action="store_true",
                   help="recompute sections even when a finished results.json matches (training runs are still reused)")
    add_runtime_flags(p, device=None, device_help=DEVICE_HELP + " (None: each study preset's)", threads=True,
                      progress="quiet")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from gahb.cli import GahbError
    from gahb.studies.reproduce import reproduce

    dirs = {}
    for item in args.section_dir:
        name, sep, folder = item.partition("=")
        if not sep or not folder:
            raise GahbError(f"--section-dir expects SECTION=DIR, got {item!r}")
        dirs[name.strip()] = folder
    doc = reproduce(args.preset, args.out, only=args.only, skip=args.skip, dataset=args.dataset,
                    device=args.device, threads=args.threads, executor=args.executor, rerun=args.rerun, section_dirs=dirs,
                    progress=not args.quiet,
                    inputs={"published": {"weights_dir": args.published_weights, "images_dir": args.published_images}})
    s = doc["summary"]
    print(f"gahb reproduce ({args.preset}): {s['pass']} pass, {s['fail']} fail, {s['info']} info, "
          f"{s['invalid']} invalid in {doc['meta']['wall_time_s']:.0f} s")
    for e in doc["sections"]:
        print(f"  {e['section']:<11} {e['status']:<8} {e['wall_time_s']:8.1f} s  {e['out_dir']}")
    print(f"report: {doc['meta']['out_dir']}/report.html\njson:   {doc['meta']['out_dir']}/reproduce.json")
    if s["sections_without_results"]:
        print(f"sections without results: {', '.join(s['sections_without_results'])}")
    if s["failed_sections"]:
        print(f"failed sections: {', '.join(s['failed_sections'])}")
        return 1
    return 0
