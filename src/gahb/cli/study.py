"""``gahb study``: run one of the paper's experiments at a preset scale."""

from __future__ import annotations

import json
from gahb.cli.common import DEVICE_HELP, HelpFormatter, add_runtime_flags

EPILOG = """\
presets: test (seconds; for the test suite), quick (minutes on a CPU), standard (the acceptance runs,
within about an hour on 2 CPU cores), paper (the paper's recipe; for a GPU).
Every setting of a study's Config can be changed with --set KEY=VALUE (JSON values: --set
alphas=[1,2] --set epochs=3); --show-config prints the resolved Config and exits.
A study reuses the finished training runs under OUT/runs and resumes unfinished ones, so an
interrupted study is continued by running the same command again.
Writes OUT/results.json (config, the paper's claims beside our numbers, every number, figure list,
environment, command, wall time) and OUT/figures/*.png.

examples:
  gahb study transition --dataset fashion-mnist --preset standard --out docs/results/transition
  gahb study calpha --preset standard --out docs/results/calpha
  gahb study manifold --preset quick --set epochs=2
  gahb study shuffled --preset quick --show-config
  gahb study transition --preset standard --executor slurm:partition=gpu,gpus_per_job=1,timeout_min=240
  gahb study published --preset standard --weights ../shared/published/weights --images ../shared/published/images
"""


def register(subparsers) -> None:
    from gahb.studies import PRESET_NAMES, STUDIES

    p = subparsers.add_parser(
        "study", help="run a study of the paper (transition, calpha, manifold, shuffled)",
        description="Run one of the paper's experiments end to end: train the denoisers it needs, "
                    "measure, and write a JSON of every number with figures.\n\n"
                    + "\n".join(f"  {k:<11} {v}" for k, v in STUDIES.items()),
        epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("name", choices=list(STUDIES), help="which study")
    p.add_argument("--preset", choices=list(PRESET_NAMES), default="quick", help="scale of the study")
    p.add_argument("--out", default=None, help="output folder (default: runs/study-NAME-PRESET)")
    p.add_argument("--dataset", default=None, help="dataset spec, for studies that take one (transition, shuffled)")
    p.add_argument("--weights", default=None, help="published: folder holding the published checkpoints")
    p.add_argument("--images", default=None, help="published: folder holding Set12/ and Set68/")
    p.add_argument("--executor", default=None, metavar="KIND[:key=value,...]",
                   help="transition, calpha, shuffled: where their independent trainings run: inline (default), local or slurm "
                        "(submitit jobs that resume when requeued), e.g. slurm:partition=gpu,timeout_min=240")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a Config field (repeatable)")
    p.add_argument("--show-config", action="store_true", help="print the resolved Config as JSON and exit")
    add_runtime_flags(p, device=None, device_help=DEVICE_HELP + " (None: the preset's)", threads=True, progress="quiet")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import dataclasses

    import torch

    from gahb.cli import GahbError
    from gahb.studies import get_config, get_study
    from gahb.studies.common import config_to_dict

    overrides = list(args.overrides)
    cfg = get_config(args.name, args.preset, overrides)
    fields = {f.name for f in dataclasses.fields(cfg)}
    extra = {}
    for flag, key in (("dataset", "dataset"), ("device", "device"), ("threads", "threads"),
                      ("weights", "weights_dir"), ("images", "images_dir"), ("executor", "executor")):
        value = getattr(args, flag)
        if value is None:
            continue
        if key not in fields:
            raise GahbError(f"study {args.name!r} takes no --{flag}")
        extra[key] = value
    if extra:
        cfg = dataclasses.replace(cfg, **extra)
    if args.show_config:
        print(json.dumps(config_to_dict(cfg), indent=2))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or f"runs/study-{args.name}-{args.preset}"
    results = get_study(args.name).run(cfg, out, progress=not args.quiet, preset=args.preset)
    print(f"gahb study {args.name}: {len(results['claims'])} claims, wall time {results['wall_time_s']:.0f} s")
    for c in results["claims"]:
        from gahb.studies.common import claim_status

        mark = {"pass": "PASS", "fail": "FAIL", "info": "info", "invalid": "INVALID"}[claim_status(c)]
        print(f"  [{mark}] {c['name']}: measured {c['measured']} (paper: {c['paper']}; target: {c['target'] or '-'})")
    print(f"results: {out}/results.json")
    return 0
