"""``gahb report``: re-judge the claims of a reproduction or a study from its results files and re-render."""

from __future__ import annotations

from gahb.cli.common import HelpFormatter, add_runtime_flags

EPILOG = """\
Judging is a function of each study's results.json alone, so this neither trains nor measures: it
recomputes every claim row with the current judging code (targets, references, uncertainty text),
rewrites the claims in each results.json (the numbers are untouched) and, for a reproduction,
re-renders report.html and reproduce.json.

examples:
  gahb report runs/reproduce-quick          # a `gahb reproduce` folder: every section and the report
  gahb report docs/results/calpha           # one `gahb study` folder: its results.json
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="re-judge the claims of a reproduction or study from its results, "
                                             "and re-render the report (no training, no measurement)",
                              description="Re-judge claims from results files alone and re-render the report.",
                              epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("folder", help="a `gahb reproduce` output folder (reproduce.json) or a `gahb study` folder "
                                  "(results.json)")
    add_runtime_flags(p, device=False)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from pathlib import Path

    from gahb.cli import GahbError
    from gahb.studies.common import claim_status
    from gahb.studies.judging import rejudge_reproduction, rejudge_study

    folder = Path(args.folder)
    if (folder / "reproduce.json").is_file():
        doc = rejudge_reproduction(folder)
        s = doc["summary"]
        print(f"gahb report: {s['pass']} pass, {s['fail']} fail, {s['info']} info, {s['invalid']} invalid; "
              f"{folder / 'report.html'}")
        for name in s["claims_without_reference_or_uncertainty"]:
            print(f"  judged without a reference or an uncertainty: {name}")
        return 0
    if (folder / "results.json").is_file():
        res = rejudge_study(folder)
        for c in res["claims"]:
            print(f"  {claim_status(c):<7} {c['name']}")
        print(f"gahb report: {len(res['claims'])} claims re-judged in {folder / 'results.json'}")
        return 0
    raise GahbError(f"{folder}: holds neither reproduce.json nor results.json")
