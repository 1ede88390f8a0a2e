"""Benchmark of the Jacobian analysis (issue 4): dense J, Lanczos top-k, traces.

One run measures, on the same model and image:

1. the dense Jacobian at 28x28 and 40x40 by the official method (one ``autograd.grad`` per output
   pixel on a retained graph, parameters frozen: :func:`gahb.analysis.jacobian.jacobian_loop`)
   against ours (chunked columns through the frozen-activation linear network, and chunked rows
   through its cached reverse graph), with the largest difference between the matrices;
2. at 40x40, Lanczos top-k of S = (J + J^T)/2 against dense J + ``eigh`` (time ratio, largest
   relative eigenvalue difference), plus block-Lanczos and ARPACK variants;
3. at 80x80, the paper's 7.6M-parameter UNet (``build_model("unet-80")``) with realistic BF-BN
   statistics (O(1) gains, running sds calibrated by a train-mode pass on noisy C^alpha images):
   top-k eigenvectors and the Hutchinson trace, against dense J + ``eigh`` (estimated from a
   fraction of the columns, or in full with ``--dense-80 full``).

The small model is ``--model`` (default the paper's 40x40 UNet, 1.8M parameters) briefly trained on
C^alpha images so that its Jacobian has a denoiser-like spectrum, or ``--checkpoint`` of a real run.
Times are wall-clock seconds on whatever CPU this runs on; the load average is printed because the
machine may be shared.

    python benchmarks/bench_jacobian.py                      # ~10 min on 2 quiet cores
    python benchmarks/bench_jacobian.py --dense-80 full      # + ~10 min: the full 80x80 dense J
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from gahb.analysis.jacobian import (
    JacobianOperator, jacobian, jacobian_loop, topk_eigs, trace_exact, trace_hutchinson,
)
from gahb.models import BFBatchNorm2d, build_model, count_parameters


def load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def images(n: int, size: int, seed: int) -> torch.Tensor:
    """C^alpha images (paper App. E) when the synthetic module is there, else blurred random disks."""
    try:
        from gahb.data.synthetic import calpha_images

        return calpha_images(n, size=size, alpha=4.0, seed=seed)
    except ImportError:  # pragma: no cover - fallback for a tree without gahb.data.synthetic
        g = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        c = torch.rand(n, 2, generator=g) * size
        r = (0.15 + 0.3 * torch.rand(n, generator=g)) * size
        inside = ((yy - c[:, :1, None]) ** 2 + (xx - c[:, 1:, None]) ** 2) < r[:, None, None] ** 2
        a, b = torch.rand(n, 1, 1, generator=g), torch.rand(n, 1, 1, generator=g)
        return torch.where(inside, a, b).unsqueeze(1).float()


def calibrate_bn(model: torch.nn.Module, x: torch.Tensor, seed: int = 0) -> torch.nn.Module:
    """O(1) BF-BN gains and running sds equal to the batch statistics of noisy images (as after training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BFBatchNorm2d):
                m.gammas.copy_(0.5 + torch.rand(m.gammas.shape, generator=g))
                m.momentum = 1.0
        sig = 0.4 * torch.rand(x.shape[0], 1, 1, 1, generator=g)
        model.train()
        model(x + sig * torch.randn(x.shape, generator=g))
        for m in model.modules():
            if isinstance(m, BFBatchNorm2d):
                m.momentum = 0.1
    return model.eval()


def train_briefly(model: torch.nn.Module, x: torch.Tensor, steps: int, batch: int = 16, seed: int = 0) -> float:
    """A few Adam steps of the paper's residual loss with sigma ~ U(0, 0.4); returns the last loss."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        clean = x[idx]
        noise = 0.4 * torch.rand(batch, 1, 1, 1, generator=g) * torch.randn(clean.shape, generator=g)
        loss = ((model.residual(clean + noise) - noise) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return loss.item()


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def rel_eig_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="unet-40", help="preset of the small model (28x28 and 40x40)")
    ap.add_argument("--checkpoint", default=None, help="use a trained run instead of a briefly trained model")
    ap.add_argument("--train-steps", type=int, default=150, help="Adam steps for the small model")
    ap.add_argument("--cache", default="~/.cache/gahb/bench_jacobian", help="where the trained small model is kept")
    ap.add_argument("--sigma", type=float, default=0.1)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--tol", type=float, default=1e-5, help="Lanczos residual tolerance (relative to lambda_1)")
    ap.add_argument("--probes", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=32, help="vectors per batched pass for the dense J")
    ap.add_argument("--sizes", type=int, nargs="+", default=[28, 40])
    ap.add_argument("--dense-80", choices=["skip", "estimate", "full"], default="estimate",
                    help="80x80 dense J + eigh: skip, extrapolate from 5%% of the columns, or compute it")
    ap.add_argument("--skip-80", action="store_true")
    ap.add_argument("--variants", action="store_true", help="also block-Lanczos and ARPACK at 40x40")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="write all numbers to this JSON file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    res: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                 "machine": platform.processor() or platform.machine(), "load_start": load()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {res['load_start']}")

    # ---------------------------------------------------------------- small model, same image
    if args.checkpoint:
        from gahb.training.checkpoint import load_denoiser

        model, _ = load_denoiser(args.checkpoint)
        res["small_model"] = args.checkpoint
    else:
        from gahb.models import ModelConfig, MODEL_PRESETS
        from gahb.training.checkpoint import load_denoiser, save_release

        cache = os.path.join(os.path.expanduser(args.cache), f"{args.model}_calpha_{args.train_steps}steps")
        if os.path.exists(os.path.join(cache, "model.safetensors")):
            model, _ = load_denoiser(cache)
            t = 0.0
        else:
            torch.manual_seed(0)
            model = build_model(args.model)
            train = images(512, max(args.sizes), seed=1)
            loss, t = timed(lambda: train_briefly(model, train, args.train_steps))
            save_release(model, cache, {"model": ModelConfig.to_dict(MODEL_PRESETS[args.model]),
                                        "note": f"bench_jacobian: {args.train_steps} Adam steps on C^alpha"})
        res["small_model"] = (f"{args.model} ({count_parameters(model):,} params), {args.train_steps} Adam steps "
                              f"on C^alpha (cached in {cache})")
        print(f"small model: {res['small_model']} (trained in {t:.0f}s)" if t else f"small model: {res['small_model']}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x_big = images(1, max(args.sizes), seed=99)[0]
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x_big.shape, generator=g)

    for size in args.sizes:
        off = (x_big.shape[-1] - size) // 2
        y = (x_big + args.sigma * noise)[:, off:off + size, off:off + size].unsqueeze(0)
        d = size * size
        row: dict = {"d": d}
        J_ref, row["loop_s"] = timed(lambda: jacobian_loop(model, y))
        J_ref = J_ref.double()
        scale = float(J_ref.abs().max())
        print(f"\n[{size}x{size}] d={d}: per-pixel loop (official method) {row['loop_s']:.2f}s")
        best = None
        for mode, cl in [("columns", False), ("columns", True), ("rows", False)]:
            def run():
                op = JacobianOperator(model, y, chunk=args.chunk, channels_last=cl)
                return jacobian(op, mode=mode)
            J, t = timed(run)
            err = float((J - J_ref).abs().max()) / scale
            name = f"ours_{mode}{'_cl' if cl else ''}"
            row[name + "_s"], row[name + "_maxrel_diff"] = t, err
            print(f"  {name:<20} {t:7.2f}s  speed-up vs loop {row['loop_s'] / t:5.2f}x   max|J - J_loop|/max|J| = {err:.1e}")
            if best is None or t < best[1]:
                best = (J, t, name)
        J, t_dense, name = best
        row["best_dense"], row["best_dense_s"] = name, t_dense
        if size == max(args.sizes):
            S = (0.5 * (J + J.T)).numpy()
            (w, _), t_eigh = timed(lambda: np.linalg.eigh(S))
            w = w[::-1]
            row["eigh_s"] = t_eigh
            op = JacobianOperator(model, y, chunk=args.chunk)
            variants = [("lanczos", 1)] + ([("lanczos", 4), ("lanczos", 8), ("arpack", 1)] if args.variants else [])
            for method, block in variants:
                def run_topk():
                    o = JacobianOperator(model, y)
                    return topk_eigs(o, args.k, tol=args.tol, method=method, block=block)
                top, t_top = timed(run_topk)
                err = rel_eig_err(top.eigenvalues, w[:args.k])
                key = f"{method}{block if method == 'lanczos' else ''}"
                row[f"{key}_s"], row[f"{key}_matvecs"], row[f"{key}_eig_relerr"] = t_top, top.matvecs, err
                ratio = (t_dense + t_eigh) / t_top
                row[f"{key}_speedup_vs_dense_eigh"] = ratio
                print(f"  top-{args.k} {key:<9} {t_top:6.2f}s ({top.matvecs} products, converged={top.converged})  "
                      f"dense+eigh {t_dense:.2f}+{t_eigh:.2f}s -> {ratio:.1f}x faster; max rel. eigenvalue diff {err:.1e}")
            row["lambda_top"] = [float(v) for v in w[:5]]
            row["trace_exact"] = float(np.sum(w))
            h, t_h = timed(lambda: trace_hutchinson(op, args.probes))
            row["hutchinson"] = {"value": h.value, "stderr": h.stderr, "seconds": t_h}
            print(f"  eigenvalues {', '.join(f'{v:.3f}' for v in w[:5])} ...; tr J exact {np.sum(w):.2f}, "
                  f"Hutchinson({args.probes}) {h.value:.2f} +- {h.stderr:.2f} in {t_h:.2f}s")
        res[f"{size}x{size}"] = row

    # ---------------------------------------------------------------- paper UNet at 80x80
    if not args.skip_80:
        torch.manual_seed(0)
        big = build_model("unet-80")
        calibrate_bn(big, images(16, 80, seed=3))
        for p in big.parameters():
            p.requires_grad_(False)
        x = images(1, 80, seed=98)
        y = x + args.sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
        row = {"params": count_parameters(big) or sum(p.numel() for p in big.parameters()), "d": 6400}
        op, t_op = timed(lambda: JacobianOperator(big, y, chunk=8))
        _, t_fwd = timed(lambda: op.jvp(torch.randn(1, 6400)))
        print(f"\n[80x80] unet-80 ({row['params']:,} params, calibrated BF-BN): operator {t_op:.2f}s, one JVP {t_fwd:.3f}s")
        top, t_top = timed(lambda: topk_eigs(op, args.k, tol=args.tol))
        row.update({"topk_s": t_top + t_op, "topk_matvecs": top.matvecs, "topk_converged": top.converged,
                    "lambda_top": [float(v) for v in top.eigenvalues[:5]]})
        print(f"  top-{args.k} Lanczos {t_top + t_op:.1f}s ({top.matvecs} products, converged={top.converged}); "
              f"lambda {', '.join(f'{v:.3f}' for v in top.eigenvalues[:5])} ...")
        h, t_h = timed(lambda: trace_hutchinson(op, args.probes))
        hd, t_hd = timed(lambda: trace_hutchinson(op, args.probes, deflate=top.eigenvectors,
                                                  deflate_values=top.eigenvalues))
        row["hutchinson"] = {"value": h.value, "stderr": h.stderr, "seconds": t_h, "probes": args.probes}
        row["hutchinson_deflated"] = {"value": hd.value, "stderr": hd.stderr, "seconds": t_hd}
        print(f"  Hutchinson trace ({args.probes} probes) {h.value:.1f} +- {h.stderr:.1f} in {t_h:.1f}s; "
              f"deflated by top-{args.k}: {hd.value:.1f} +- {hd.stderr:.1f} in {t_hd:.1f}s")
        if args.dense_80 != "skip":
            if args.dense_80 == "full":
                J, t_dense = timed(lambda: jacobian(op))
                S = (0.5 * (J + J.T)).numpy()
                del J
                row["trace_exact"] = float(np.trace(S))
                how = "measured"
            else:
                n_cols = 320
                E = torch.zeros(n_cols, 6400)
                E[torch.arange(n_cols), torch.arange(n_cols)] = 1
                _, t_part = timed(lambda: [op.jvp(E[i:i + op.chunk]) for i in range(0, n_cols, op.chunk)])
                t_dense = t_part * 6400 / n_cols
                rng = np.random.default_rng(0)
                A = rng.standard_normal((6400, 6400))
                S = 0.5 * (A + A.T)
                del A
                how = f"extrapolated from {n_cols} columns"
            (w, _), t_eigh = timed(lambda: np.linalg.eigh(S))
            del S
            row.update({"dense_s": t_dense, "dense_how": how, "eigh_s": t_eigh,
                        "speedup_topk_vs_dense_eigh": (t_dense + t_eigh) / (t_top + t_op)})
            if args.dense_80 == "full":
                w = w[::-1]
                row["topk_eig_relerr"] = rel_eig_err(top.eigenvalues, w[:args.k])
                print(f"  exact trace {row['trace_exact']:.1f}; top-{args.k} max rel. eigenvalue diff {row['topk_eig_relerr']:.1e}")
            print(f"  dense J {t_dense:.0f}s ({how}) + eigh {t_eigh:.0f}s -> top-{args.k} is "
                  f"{row['speedup_topk_vs_dense_eigh']:.1f}x faster")
        res["80x80"] = row
    res["load_end"] = load()
    print(f"\nload average at the end: {res['load_end']}")
    if args.json:
        from gahb.utils.io import atomic_write_json

        atomic_write_json(args.json, res)


if __name__ == "__main__":
    main()
