"""The GPU check: gahb's numeric tests, its fast paths and a short data-parallel paper-preset training
on the accelerators of this machine, with the peaks they are judged against, in one JSON.

    bash scripts/gpu_check.sh                 # on a machine with CUDA GPUs (the short mode: < 10 min)
    bash scripts/gpu_check.sh --dry-run       # anywhere: the same steps on the CPU at toy sizes (CI)

Steps, each timed and written to ``--out`` (default ``runs/gpu_check.json``) as it finishes:

1. ``peaks``: the float32 and bfloat16 matrix-product rates (GFLOP/s) of one device: the ceilings.
2. ``tests``: the test suite, whose ``device`` fixture adds a CUDA case to every numeric identity
   (``--dry-run``: the model identities only, on the CPU).
3. ``jacobian``: the dense Jacobian of a unet-40 at 40x40 (d = 1600), batched columns
   (:func:`gahb.analysis.jacobian.jacobian`) against the per-pixel backward loop of the official code
   (:func:`~gahb.analysis.jacobian.jacobian_loop`). Target: > 20x.
4. ``sampler``: Algorithm 1 on 64 samples at once against one at a time (same seeds, same samples).
5. ``training``: images/s of the training step (eq.-4 loss, Adam) of unet-80 at 80x80 in float32 and
   in bfloat16 autocast, ``torch.compile`` off and on; FLOPs counted by ``torch.utils.flop_counter``
   and set against the bfloat16 peak. Target: >= 40% of it.
6. ``ddp``: ``torchrun`` over every visible GPU: ``gahb train --preset paper`` (unet-80, batch 512) on
   synthetic C^alpha images at 80x80 for a few steps; its images/s.

A script, not a test (``tests/test_gpu_check.py`` runs the dry run). Heavy imports are inside steps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHORT = {"matmul": 8192, "jac_size": 40, "jac_model": "unet-40", "samples": 64, "sample_size": 40, "sample_steps": 50,
         "train_model": "unet-80", "train_size": 80, "train_batch": 64, "train_steps": 10,
         "ddp_steps": 20, "ddp_batch": 512, "ddp_model": "paper", "ddp_size": 80, "ddp_procs": None}
DRY = {"matmul": 512, "jac_size": 12, "jac_model": "unet-tiny", "samples": 4, "sample_size": 12, "sample_steps": 5,
       "train_model": "unet-tiny", "train_size": 16, "train_batch": 8, "train_steps": 2,
       "ddp_steps": 2, "ddp_batch": 8, "ddp_model": "quick", "ddp_size": 16, "ddp_procs": 2}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _time(fn, dev: torch.device, repeats: int = 3) -> float:
    """Best of ``repeats`` wall times of ``fn()`` (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    return best


def peaks(dev: torch.device, n: int) -> dict:
    out = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
        out[f"{name}_gflops"] = 2 * n**3 / _time(lambda: a @ b, dev) / 1e9
    return out


def tests(dry: bool) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    cmd += ["tests/test_models.py", "-k", "cpu"] if dry else ["tests"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    tail = proc.stdout.strip().splitlines()[-1:] or [""]
    return {"command": " ".join(cmd[1:]), "returncode": proc.returncode, "summary": tail[0],
            "seconds": time.perf_counter() - t0}


def _model(preset: str, dev: torch.device) -> torch.nn.Module:
    """An eval-mode network whose BF-BN layers have O(1) gains and running sds, as after training (a fresh
    network's gains are ~0.003: its residual is ~0 and the sampler would stop at once)."""
    from gahb.models import BFBatchNorm2d, build_model

    torch.manual_seed(0)
    model = build_model(preset)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BFBatchNorm2d):
                m.gammas.copy_(0.5 + torch.rand(m.gammas.shape, generator=g))
                m.running_sd.copy_(0.5 + torch.rand(m.running_sd.shape, generator=g))
    return model.to(dev).eval()


def jacobian_rows(dev: torch.device, preset: str, size: int) -> dict:
    from gahb.analysis.jacobian import jacobian, jacobian_loop

    model = _model(preset, dev)
    y = torch.rand(1, 1, size, size, device=dev)
    loop_s = _time(lambda: jacobian_loop(model, y), dev, repeats=1)
    ours_s = _time(lambda: jacobian(model, y, chunk=256 if dev.type == "cuda" else 16), dev)
    err = (jacobian(model, y) - jacobian_loop(model, y).double()).abs().max().item()
    return {"d": size * size, "loop_s": loop_s, "batched_s": ours_s, "speedup": loop_s / ours_s,
            "max_abs_difference": err, "target": "> 20x", "meets_target": loop_s / ours_s > 20}


def sampler_rows(dev: torch.device, preset: str, size: int, n: int, steps: int) -> dict:
    from gahb.sampling import sample

    model = _model(preset, dev)
    # A fixed number of evaluations per sample (sigma_final out of reach): the work is the same either way.
    cfg = f"paper:sigma_final=1e-9,max_steps={steps}"

    def run(shape, seeds):
        with warnings.catch_warnings():  # every sample "fails" by reaching max_steps, on purpose
            warnings.simplefilter("ignore")
            return sample(model, shape, seeds=seeds, config=cfg, progress=False, device=dev)

    batched = lambda: run((n, 1, size, size), 0)  # noqa: E731
    single = lambda: [run((1, 1, size, size), i) for i in range(n)]  # noqa: E731
    b_s, s_s = _time(batched, dev, repeats=1), _time(single, dev, repeats=1)
    same = torch.cat([r.samples for r in single()]).cpu()
    diff = (batched().samples.cpu() - same).abs().max().item()
    return {"samples": n, "evaluations_per_sample": steps, "batched_s": b_s, "one_at_a_time_s": s_s, "speedup": s_s / b_s,
            "max_abs_difference": diff}


def training_rows(dev: torch.device, preset: str, size: int, batch: int, steps: int, bf16_peak: float,
                  compile_too: bool = True) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from gahb.models import build_model

    out = {}
    for bf16 in (False, True):
        for compiled in (False, True) if compile_too else (False,):
            torch.manual_seed(0)
            model = build_model(preset).to(dev).train()
            opt = torch.optim.Adam(model.parameters(), lr=1e-4)
            residual = torch.compile(model.residual) if compiled else model.residual
            x = torch.rand(batch, 1, size, size, device=dev)
            amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16)

            def step():
                z = 0.5 * torch.rand(batch, 1, 1, 1, device=dev) * torch.randn_like(x)
                with amp:
                    r = residual(x + z)
                loss = (r.float() - z).pow(2).sum() / batch
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            name = f"{'bf16' if bf16 else 'fp32'}{'+compile' if compiled else ''}"
            try:
                t0 = time.perf_counter()
                step()  # compiles when asked
                first = time.perf_counter() - t0
                counter = FlopCounterMode(display=False)
                with counter:
                    step()
                flops = counter.get_total_flops()
                sec = _time(lambda: [step() for _ in range(steps)], dev, repeats=1) / steps
            except Exception as exc:  # e.g. no C compiler for the CPU inductor backend
                out[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                continue
            out[name] = {"images_per_s": batch / sec, "gflops": flops / sec / 1e9, "first_step_s": first,
                         "of_bf16_peak": flops / sec / 1e9 / bf16_peak}
    best = max((v.get("of_bf16_peak", 0.0) for v in out.values()), default=0.0)
    return {"model": preset, "size": size, "batch": batch, "rows": out, "target": ">= 40% of the bf16 peak",
            "best_of_bf16_peak": best, "meets_target": best >= 0.4}


def ddp_rows(cfg: dict, dev: torch.device, out_dir: Path) -> dict:
    procs = cfg["ddp_procs"] or max(torch.cuda.device_count(), 1)
    run = out_dir / "gpu_check_ddp_run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "-m", "gahb",
           "train", "--dataset", f"synthetic:calpha:size={cfg['ddp_size']}", "--n-train", "1024", "--preset",
           cfg["ddp_model"], "--steps", str(cfg["ddp_steps"]), "--batch-size", str(cfg["ddp_batch"]),
           "--fresh", "--no-progress", "--out", str(run)]
    if cfg["ddp_model"] != "paper":
        cmd += ["--model-preset", "unet-tiny"]
    if dev.type == "cuda":
        cmd += ["--bf16"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    res = {"command": " ".join(cmd[1:]), "processes": procs, "returncode": proc.returncode,
           "seconds": time.perf_counter() - t0}
    if proc.returncode == 0:
        res["result"] = json.loads(proc.stdout.strip().splitlines()[-1])
        from gahb.training import read_metrics

        rates = [m["images_per_s"] for m in read_metrics(run) if m.get("images_per_s")]
        res["images_per_s"] = rates[-1] if rates else None
    else:
        res["stderr_tail"] = proc.stderr[-2000:]
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="the same steps on the CPU at toy sizes")
    ap.add_argument("--out", default="runs/gpu_check.json")
    ap.add_argument("--skip", nargs="*", default=[], choices=["tests", "jacobian", "sampler", "training", "ddp"])
    args = ap.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --dry-run for the CPU rehearsal", file=sys.stderr)
        return 2
    cfg = DRY if args.dry_run else SHORT
    dev = torch.device("cpu" if args.dry_run else "cuda")
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    from gahb.utils.io import atomic_write_json

    doc = {"mode": "dry-run (CPU, toy sizes)" if args.dry_run else "short", "torch": torch.__version__,
           "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
           "gpus": torch.cuda.device_count(), "sizes": cfg}
    steps = [("peaks", lambda: peaks(dev, cfg["matmul"])),
             ("tests", lambda: tests(args.dry_run)),
             ("jacobian", lambda: jacobian_rows(dev, cfg["jac_model"], cfg["jac_size"])),
             ("sampler", lambda: sampler_rows(dev, cfg["jac_model"], cfg["sample_size"], cfg["samples"],
                                              cfg["sample_steps"])),
             ("training", lambda: training_rows(dev, cfg["train_model"], cfg["train_size"], cfg["train_batch"],
                                                cfg["train_steps"], doc["peaks"]["bfloat16_gflops"],
                                                compile_too=not args.dry_run)),  # CPU inductor: minutes
             ("ddp", lambda: ddp_rows(cfg, dev, out_path.parent))]
    failed = []
    for name, fn in steps:
        if name in args.skip:
            continue
        t0 = time.perf_counter()
        print(f"[gpu_check] {name} ...", file=sys.stderr, flush=True)
        try:
            doc[name] = {**fn(), "step_seconds": time.perf_counter() - t0}
        except Exception as exc:
            doc[name] = {"error": f"{type(exc).__name__}: {exc}"}
        if "error" in doc[name] or doc[name].get("returncode", 0) != 0:
            failed.append(name)
        atomic_write_json(out_path, doc)
    doc["failed_steps"] = failed
    atomic_write_json(out_path, doc)
    print(json.dumps({k: doc[k] for k in ("mode", "device", "failed_steps")}), flush=True)
    print(f"wrote {out_path}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
