"""All of gahb's speed claims in one run on this machine, as one table of ratios.

One process, ``--threads`` torch threads (1 or 2), same model for every row where a model is needed
(unet-small at 28x28: a trained run folder, or trained here briefly). Measured:

1. training throughput, images/s of the full training step (quadratic sigma law, residual loss,
   backward, Adam) at batch 64: NCHW (`--no-channels-last`) vs channels_last (the trainer's default)
   (:func:`benchmarks.bench_training.bench`);
2. sampling (Algorithm 1, ``paper`` preset), seconds per sample: one sample at a time, one network
   call per step, as in the official loop (:func:`benchmarks.bench_sampling.reference_sample`), vs
   gahb's batched sampler on the BN-folded channels_last network (same seeds, same samples);
3. the dense 784x784 Jacobian at a noisy 28x28 image: one backward pass per output pixel (the
   official method, :func:`gahb.analysis.jacobian.jacobian_loop`) vs gahb's batched columns through
   the frozen-activation linear network (:func:`gahb.analysis.jacobian.jacobian`);
4. exact nearest-neighbour search (L2) of 64 queries in 35,000 random 28x28 images: a per-query
   loop over the whole database vs :func:`gahb.analysis.memorization.nearest_neighbors` (chunked
   matrix products, running top-k); the two must return the same indices.

Every ratio is baseline time / gahb time measured in this one process, so it is meaningful even on a
shared machine; the absolute rates depend on the machine and its load (printed).

    python benchmarks/bench_all.py --threads 1
    python benchmarks/bench_all.py --threads 2 --write docs/benchmarks.md --note "machine shared with 2 jobs"

A script, not a test. About 3-5 minutes on 2 cores (plus ~1 min of brief training without a run).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_jacobian import images as calpha_like  # noqa: E402
from bench_sampling import brief_training, reference_sample  # noqa: E402
from bench_training import bench as bench_train  # noqa: E402

from gahb.models import optimize_for_inference  # noqa: E402

DEFAULT_RUN = "runs/reproduce-quick/transition/runs/N1000_s1"  # written by the README main job


def load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def best_of(fn, repeats: int) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls (the least disturbed by other jobs) and the last output."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def get_model(checkpoint: str | None, steps: int):
    from gahb.training.checkpoint import load_denoiser

    if checkpoint == "auto":
        checkpoint = DEFAULT_RUN if Path(DEFAULT_RUN, "model.safetensors").is_file() else None
    if checkpoint:
        model, cfg = load_denoiser(checkpoint)
        desc = f"trained run {checkpoint} ({cfg['model'].get('arch')}, {cfg['model'].get('num_blocks')} blocks, " \
               f"width {cfg['model'].get('width')})"
    else:
        model = brief_training(steps, 32, 0)
        desc = f"unet-small trained here for {steps} Adam steps"
    model.requires_grad_(False)
    return model.eval(), desc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, choices=(1, 2), default=1, help="torch intra-op threads")
    ap.add_argument("--checkpoint", default="auto",
                    help=f"trained unet-small run folder (auto: {DEFAULT_RUN} if present, else brief training)")
    ap.add_argument("--train-steps", type=int, default=200, help="brief training steps when there is no run")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (best is kept)")
    ap.add_argument("--train-timed-steps", type=int, default=8)
    ap.add_argument("--samples", type=int, default=32, help="samples for the batched sampler")
    ap.add_argument("--ref-samples", type=int, default=4, help="samples for the one-at-a-time loop")
    ap.add_argument("--nn-database", type=int, default=35_000)
    ap.add_argument("--nn-queries", type=int, default=64)
    ap.add_argument("--write", default=None, help="also write the markdown (e.g. docs/benchmarks.md)")
    ap.add_argument("--note", default="", help="a sentence about the machine's state, written with --write")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from gahb.studies.reproduce import machine_description

    started = time.perf_counter()
    machine = machine_description()
    load_start = load()
    print(f"# {machine}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); load average {load_start}",
          flush=True)
    rows = []  # (quantity, unit, baseline label, baseline value, ours label, ours value, higher_is_better, check)

    # 1. training ---------------------------------------------------------------------------------
    dev = torch.device("cpu")
    tr = {}
    for cl in (False, True, False, True):  # alternated, so a burst of load hits both
        r = bench_train("small", 64, dev, cl, False, False, 2, args.train_timed_steps)
        tr[cl] = max(tr.get(cl, 0.0), r["images_per_s"])
    rows.append(("training, unet-small 28x28, batch 64", "images/s", "NCHW (`gahb train --no-channels-last`)", tr[False],
                 "channels_last (`gahb train` default)", tr[True], True, ""))
    print(f"training: {tr[False]:.1f} images/s NCHW, {tr[True]:.1f} channels_last", flush=True)

    # 2. sampling ---------------------------------------------------------------------------------
    from gahb.sampling import get_config, sample

    model, model_desc = get_model(args.checkpoint, args.train_steps)
    print(f"model: {model_desc}", flush=True)
    cfg = get_config("paper")
    shape = (1, 28, 28)
    seeds = list(range(args.samples))
    fast = optimize_for_inference(model, channels_last=True)
    ref_t, ref_out = best_of(lambda: [reference_sample(model, shape, s, cfg) for s in seeds[: args.ref_samples]],
                             args.repeats)
    ours_t, res = best_of(lambda: sample(fast, shape, seeds, cfg, progress=False, batch_size=args.samples),
                          args.repeats)
    ref_x = torch.stack([r[0] for r in ref_out])
    diff = (res.samples[: args.ref_samples] - ref_x).abs().max().item()
    evals = statistics.mean(r[1] for r in ref_out)
    rows.append((f"sampling, paper preset ({evals:.0f} evaluations/sample)", "samples/s", "one at a time (loop)",
                 args.ref_samples / ref_t, f"batched {args.samples} + folded BN + channels_last",
                 args.samples / ours_t, True, f"same samples to {diff:.1e}"))
    print(f"sampling: {args.ref_samples / ref_t:.2f} samples/s one at a time, {args.samples / ours_t:.2f} batched "
          f"(max diff {diff:.1e})", flush=True)

    # 3. dense Jacobian ---------------------------------------------------------------------------
    from gahb.analysis.jacobian import JacobianOperator, jacobian, jacobian_loop

    x = calpha_like(1, 28, seed=99)
    y = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    loop_t, J_ref = best_of(lambda: jacobian_loop(model, y), max(1, args.repeats - 1))
    ours_jt, J = best_of(lambda: jacobian(JacobianOperator(model, y, chunk=32, channels_last=True)),
                         max(1, args.repeats - 1))
    jerr = float((J.double() - J_ref.double()).abs().max() / J_ref.double().abs().max())
    rows.append(("dense Jacobian 784x784 at 28x28", "s", "per-pixel backward loop", loop_t,
                 "batched columns, frozen-activation network", ours_jt, False, f"same J to {jerr:.1e} (relative)"))
    print(f"jacobian: loop {loop_t:.2f} s, ours {ours_jt:.2f} s (max rel diff {jerr:.1e})", flush=True)

    # 4. nearest neighbours -----------------------------------------------------------------------
    from gahb.analysis.memorization import nearest_neighbors

    g = torch.Generator().manual_seed(0)
    db = torch.rand(args.nn_database, 1, 28, 28, generator=g)
    q = torch.rand(args.nn_queries, 1, 28, 28, generator=g)
    dbf = db.reshape(len(db), -1)

    def naive():
        return torch.stack([((dbf - qi.reshape(1, -1)) ** 2).sum(1).argmin() for qi in q])

    naive_t, idx_ref = best_of(naive, args.repeats)
    ours_nt, (_, idx) = best_of(lambda: nearest_neighbors(q, db, k=1, metric="l2"), args.repeats)
    same = bool((idx[:, 0] == idx_ref).all())
    rows.append((f"nearest neighbour, {args.nn_queries} queries in {args.nn_database:,} images (L2)", "s",
                 "per-query loop", naive_t, "chunked matrix products", ours_nt, False,
                 "same indices" if same else "INDICES DIFFER"))
    print(f"nearest neighbours: loop {naive_t:.2f} s, ours {ours_nt:.2f} s, same indices: {same}", flush=True)

    # -- table -------------------------------------------------------------------------------------
    total = time.perf_counter() - started
    lines = ["| quantity | unit | baseline | gahb | gahb / baseline speed | check |", "|---|---|---|---|---|---|"]
    for qty, unit, bl, bv, ol, ov, higher, check in rows:
        ratio = ov / bv if higher else bv / ov
        lines.append(f"| {qty} | {unit} | {bl}: {bv:.3g} | {ol}: {ov:.3g} | **{ratio:.2f}x** | {check or '-'} |")
    table = "\n".join(lines)
    facts = (f"- machine: {machine}\n- torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
             f"load average at start {load_start}, at end {load()}\n- model for sampling and Jacobian: {model_desc}\n"
             f"- total run time {total:.0f} s; date {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}")
    print("\n" + table + "\n\n" + facts)
    if args.write:
        from gahb.utils.io import atomic_write_text

        argv = list(sys.argv[1:])
        if "--note" in argv:  # the note is printed below the table, not in the command
            i = argv.index("--note")
            del argv[i:i + 2]
        cmd = shlex.join(["python", "benchmarks/bench_all.py", *argv])
        text = ("# Benchmarks\n\nLatest output of `benchmarks/bench_all.py` (one process, every ratio measured in "
                "the same run; absolute rates depend on the machine and its load).\n\n"
                f"Command: `{cmd}`\n\n{table}\n\n{facts}\n"
                + (f"\n{args.note}\n" if args.note else ""))
        atomic_write_text(args.write, text)
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
