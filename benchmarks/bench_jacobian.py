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

The small model is ``--model`` (default the paper's 40x40 UNet, 1.8M parameters) trained on C^alpha
images for ``--train-steps`` Adam steps (3000 by default: a denoiser, not a memoriser, of that
class), or ``--checkpoint`` of a real run. How fast Lanczos converges depends on the spectrum, so
the Lanczos ratio depends on the model: ``--train-steps 150`` gives a barely trained network
whose top eigenvalues cluster at 1, the hardest case we have measured. Times are wall-clock
seconds on whatever CPU this runs on; the load average is printed because the machine may be
shared.

    python benchmarks/bench_jacobian.py                      # ~5 min on 2 cores (+22 min first-time training)
    python benchmarks/bench_jacobian.py --checkpoint RUN --image fashion-mnist --skip-80   # RUN trained on Fashion-MNIST
    python benchmarks/bench_jacobian.py --train-80 0 100 --dense-80 full   # ~15 min: also a briefly
                                                             # trained unet-80, full 80x80 dense J + eigh
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from gahb.analysis.jacobian import (
    JacobianOperator, jacobian, jacobian_loop, topk_eigs, trace_hutchinson,
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


def bench_image(kind: str, size: int) -> torch.Tensor:
    """The clean image (1, size, size) every small-model measurement uses: a C^alpha image, or
    Fashion-MNIST test image 0 of the default split zero-padded from 28x28 (its background is 0),
    so that the 28x28 crop is the image itself."""
    if kind == "calpha":
        return images(1, size, seed=99)[0]
    from gahb.data import load_split

    x = load_split("fashion-mnist", n=1, subset="s1", seed=0).test[0]
    p = size - x.shape[-1]
    if p < 0:
        raise ValueError(f"Fashion-MNIST images are 28x28; --sizes must be >= 28, got {size}")
    return torch.nn.functional.pad(x, (p // 2, p - p // 2, p // 2, p - p // 2))


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
    from tqdm.auto import trange

    for _ in trange(steps, desc="training the benchmark model", leave=False):
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        clean = x[idx]
        noise = 0.4 * torch.rand(batch, 1, 1, 1, generator=g) * torch.randn(clean.shape, generator=g)
        loss = ((model.residual(clean + noise) - noise) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return loss.item()


REPEATS = 1  # --repeats: every compared timing is the best of this many runs


def timed(fn, repeats: int = 1):
    """(result, seconds): the fastest of ``repeats`` runs (timeit's convention: slower runs measure
    interference from the rest of the machine, not the code)."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def rel_eig_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def cached_model(preset: str, size: int, steps: int, cache: str, calibrate: bool) -> tuple[torch.nn.Module, str]:
    """``preset`` briefly trained on C^alpha images of ``size`` (kept in ``cache``), or BN-calibrated only."""
    from gahb.models import MODEL_PRESETS, ModelConfig
    from gahb.training.checkpoint import load_denoiser, save_release

    torch.manual_seed(0)
    model = build_model(preset)
    n_params = count_parameters(model)
    if steps <= 0:
        if calibrate:
            calibrate_bn(model, images(16, size, seed=3))
        return model.eval(), f"{preset} ({n_params:,} params), fresh init with calibrated BF-BN statistics"
    where = os.path.join(os.path.expanduser(cache), f"{preset}_calpha{size}_{steps}steps")
    if os.path.exists(os.path.join(where, "model.safetensors")):
        model, _ = load_denoiser(where)
        note = "cached"
    else:
        # 512 images suffice for a brief run; a longer one gets ~8 passes over its set, so that it
        # learns a denoiser of the image class rather than memorising the training images.
        batch = 16 if size <= 40 else 8
        n_img = max(512, steps * batch // 8)
        loss, t = timed(lambda: train_briefly(model, images(n_img, size, seed=1), steps, batch=batch))
        save_release(model, where, {"model": ModelConfig.to_dict(MODEL_PRESETS[preset]),
                                    "note": f"bench_jacobian: {steps} Adam steps on C^alpha {size}x{size}"})
        note = f"trained in {t:.0f}s, final loss {loss:.4f}"
    return model.eval(), f"{preset} ({n_params:,} params), {steps} Adam steps on C^alpha ({note}; {where})"


def topk_row(make_op, k: int, tol: float, blocks, dense_total: float | None, w_ref, row: dict, label: str) -> None:
    for block in blocks:
        def run():
            return topk_eigs(make_op(), k, tol=tol, block=block)
        top, t = timed(run, REPEATS)
        key = f"lanczos_b{block}"
        row[f"{key}_s"], row[f"{key}_products"], row[f"{key}_converged"] = t, top.matvecs, top.converged
        row[f"{key}_product_s"] = top.info["product_seconds"]
        msg = (f"  top-{k} Lanczos block={block}: {t:7.2f}s ({top.matvecs} products of S taking "
               f"{top.info['product_seconds']:.2f}s, converged={top.converged})")
        if w_ref is not None:
            row[f"{key}_eig_relerr"] = rel_eig_err(top.eigenvalues, w_ref[:k])
            msg += f", max rel. eigenvalue diff to dense {row[f'{key}_eig_relerr']:.1e}"
        if dense_total is not None:
            row[f"{key}_speedup"] = dense_total / t
            msg += f"  -> {dense_total / t:.1f}x faster than {label}"
        print(msg, flush=True)
        row.setdefault("lambda_top", [float(v) for v in top.eigenvalues[:5]])
        row["_last_top"] = top


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="unet-40", help="preset of the small model (28x28 and 40x40)")
    ap.add_argument("--checkpoint", default=None, help="use a trained run instead of the C^alpha-trained unet-40")
    ap.add_argument("--train-steps", type=int, default=3000,
                    help="Adam steps for the small model (3000: a trained denoiser, ~22 min once on 2 cores, "
                         "then cached; 150: barely trained, its top eigenvalues cluster at 1 and Lanczos "
                         "needs ~50%% more products)")
    ap.add_argument("--image", choices=["calpha", "fashion-mnist"], default="calpha",
                    help="the image of the small-model measurements (fashion-mnist: for a --checkpoint "
                         "trained on it; needs the dataset installed)")
    ap.add_argument("--train-80", type=int, nargs="+", default=[0],
                    help="Adam steps for unet-80, one 80x80 run per value (0: fresh init with calibrated BF-BN)")
    ap.add_argument("--cache", default="~/.cache/gahb/bench_jacobian", help="where trained benchmark models are kept")
    ap.add_argument("--sigma", type=float, default=0.1)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--tol", type=float, default=1e-3,
                    help="Lanczos residual tolerance relative to lambda_1 (1e-3 leaves the top-32 eigenvalues "
                         "within ~1e-5 of dense, inside the 1e-4 target; each run prints the difference)")
    ap.add_argument("--blocks", type=int, nargs="+", default=[1, 2, 4], help="Lanczos block sizes to time")
    ap.add_argument("--block-80", type=int, default=2, help="Lanczos block size at 80x80 (the library default)")
    ap.add_argument("--probes", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=32, help="vectors per batched pass for the dense J")
    ap.add_argument("--sizes", type=int, nargs="*", default=[28, 40], help="small-model sizes (none: 80x80 only)")
    ap.add_argument("--dense-80", choices=["skip", "estimate", "full"], default="estimate",
                    help="80x80 dense J + eigh: skip, extrapolate from 320 of the 6400 columns, or compute it")
    ap.add_argument("--skip-80", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=1,
                    help="time the loop, dense J, eigh, Lanczos and ARPACK this many times each and keep the best")
    ap.add_argument("--json", default=None, help="write all numbers to this JSON file")
    args = ap.parse_args()
    global REPEATS
    REPEATS = max(1, args.repeats)
    if args.threads:
        torch.set_num_threads(args.threads)
    res: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                 "machine": platform.processor() or platform.machine(), "load_start": load(), "args": vars(args)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {res['load_start']}", flush=True)

    # ---------------------------------------------------------------- small model, same image
    if not args.sizes:
        pass
    elif args.checkpoint:
        from gahb.training.checkpoint import load_denoiser

        model, _ = load_denoiser(args.checkpoint)
        res["small_model"] = args.checkpoint
    else:
        model, res["small_model"] = cached_model(args.model, max(args.sizes), args.train_steps, args.cache, True)
    if args.sizes:
        print(f"small model: {res['small_model']}", flush=True)
        for p in model.parameters():
            p.requires_grad_(False)
        x_big = bench_image(args.image, max(args.sizes))
        noise = torch.randn(x_big.shape, generator=torch.Generator().manual_seed(0))

    for size in args.sizes:
        off = (x_big.shape[-1] - size) // 2
        y = (x_big + args.sigma * noise)[:, off:off + size, off:off + size].unsqueeze(0)
        d = size * size
        row: dict = {"d": d}
        J_ref, row["loop_s"] = timed(lambda: jacobian_loop(model, y), REPEATS)
        J_ref = J_ref.double()
        scale = float(J_ref.abs().max())
        print(f"\n[{size}x{size}] d={d}: dense J by the per-pixel loop (official method) {row['loop_s']:.2f}s", flush=True)
        best = None
        for mode, cl in [("columns", True), ("columns", False), ("rows", False)]:
            def run():
                return jacobian(JacobianOperator(model, y, chunk=args.chunk, channels_last=cl), mode=mode)
            J, t = timed(run, REPEATS)
            err = float((J - J_ref).abs().max()) / scale
            name = f"ours_{mode}{'_channels_last' if cl else ''}"
            row[name + "_s"], row[name + "_maxrel_diff"] = t, err
            print(f"  {name:<24} {t:7.2f}s  = {row['loop_s'] / t:5.2f}x the loop's speed;  "
                  f"max|J - J_loop| / max|J| = {err:.1e}", flush=True)
            if best is None or t < best[1]:
                best = (J, t, name)
        J, t_dense, name = best
        row["best_dense"], row["best_dense_s"] = name, t_dense
        if size == max(args.sizes):
            S = (0.5 * (J + J.T)).numpy()
            (w, _), t_eigh = timed(lambda: np.linalg.eigh(S), REPEATS)
            w = w[::-1].copy()
            row["eigh_s"] = t_eigh
            print(f"  eigh of S (float64, {d}x{d}): {t_eigh:.2f}s; dense+eigh = {t_dense + t_eigh:.2f}s "
                  f"(ours), {row['loop_s'] + t_eigh:.2f}s (loop)", flush=True)
            topk_row(lambda: JacobianOperator(model, y, channels_last=True), args.k, args.tol, args.blocks,
                     t_dense + t_eigh, w, row, "our dense J + eigh")
            row["speedup_vs_loop_dense_eigh"] = {f"b{b}": (row["loop_s"] + t_eigh) / row[f"lanczos_b{b}_s"]
                                                 for b in args.blocks}
            print("  vs the loop's dense J + eigh: " + ", ".join(
                f"block={b}: {v:.1f}x" for b, v in zip(args.blocks, row["speedup_vs_loop_dense_eigh"].values())))
            top, t_a = timed(lambda: topk_eigs(JacobianOperator(model, y, channels_last=True), args.k, tol=args.tol,
                                               method="arpack"), REPEATS)
            row.update({"arpack_s": t_a, "arpack_products": top.matvecs,
                        "arpack_eig_relerr": rel_eig_err(top.eigenvalues, w[:args.k])})
            print(f"  (ARPACK eigsh, same operator and tol: {t_a:.2f}s, {top.matvecs} products, "
                  f"max rel. eigenvalue diff {row['arpack_eig_relerr']:.1e})", flush=True)
            row.pop("_last_top", None)
            row["trace_exact"] = float(np.sum(w))
            h, t_h = timed(lambda: trace_hutchinson(JacobianOperator(model, y), args.probes))
            row["hutchinson"] = {"value": h.value, "stderr": h.stderr, "seconds": t_h, "probes": args.probes}
            print(f"  lambda_1..5 = {', '.join(f'{v:.3f}' for v in w[:5])}; tr J exact {np.sum(w):.2f}, "
                  f"Hutchinson ({args.probes} probes) {h.value:.2f} +- {h.stderr:.2f} in {t_h:.2f}s", flush=True)
        res[f"{size}x{size}"] = row

    # ---------------------------------------------------------------- paper UNet at 80x80
    for steps80 in ([] if args.skip_80 else args.train_80):
        big, desc = cached_model("unet-80", 80, steps80, args.cache, True)
        for p in big.parameters():
            p.requires_grad_(False)
        x = images(1, 80, seed=98)
        y = x + args.sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
        row = {"model": desc, "d": 6400}
        print(f"\n[80x80] {desc}", flush=True)
        op1 = JacobianOperator(big, y, check=False)
        _, t_fwd = timed(lambda: op1.jvp(torch.randn(1, 6400)))
        op1.vjp(torch.randn(1, 6400))  # the first J^T v builds the cached reverse graph
        _, t_bwd = timed(lambda: op1.vjp(torch.randn(1, 6400)))
        row["jvp_s"], row["vjp_s"] = t_fwd, t_bwd
        print(f"  one J v {t_fwd:.3f}s, one J^T v {t_bwd:.3f}s (batch of 1, graph cached)", flush=True)
        topk_row(lambda: JacobianOperator(big, y, chunk=8, channels_last=True), args.k, args.tol, [args.block_80],
                 None, None, row, "")
        top = row.pop("_last_top")
        t_top = row[f"lanczos_b{args.block_80}_s"]
        op = JacobianOperator(big, y, chunk=8, channels_last=True)
        h, t_h = timed(lambda: trace_hutchinson(op, args.probes))
        hd, t_hd = timed(lambda: trace_hutchinson(op, args.probes, deflate=top.eigenvectors,
                                                  deflate_values=top.eigenvalues))
        row["hutchinson"] = {"value": h.value, "stderr": h.stderr, "seconds": t_h, "probes": args.probes}
        row["hutchinson_deflated"] = {"value": hd.value, "stderr": hd.stderr, "seconds": t_hd}
        print(f"  lambda_1..5 = {', '.join(f'{v:.3f}' for v in top.eigenvalues[:5])}", flush=True)
        print(f"  Hutchinson trace ({args.probes} probes): {h.value:.1f} +- {h.stderr:.1f} in {t_h:.1f}s; "
              f"deflated by the top-{args.k}: {hd.value:.1f} +- {hd.stderr:.1f} in {t_hd:.1f}s", flush=True)
        if args.dense_80 != "skip":
            op = JacobianOperator(big, y, chunk=16, channels_last=True)
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
                _, t_part = timed(lambda: op.jvp(E))
                t_dense = t_part * 6400 / n_cols
                rng = np.random.default_rng(0)
                A = rng.standard_normal((6400, 6400))
                S = 0.5 * (A + A.T)
                del A
                how = f"extrapolated from {n_cols} columns; eigh timed on a random symmetric 6400x6400"
            (w, _), t_eigh = timed(lambda: np.linalg.eigh(S))
            del S
            ratio = (t_dense + t_eigh) / t_top
            row.update({"dense_s": t_dense, "dense_how": how, "eigh_s": t_eigh, "speedup_topk_vs_dense_eigh": ratio})
            if args.dense_80 == "full":
                w = w[::-1]
                row["topk_eig_relerr"] = rel_eig_err(top.eigenvalues, w[:args.k])
                print(f"  exact trace {row['trace_exact']:.1f}; top-{args.k} max rel. eigenvalue diff "
                      f"{row['topk_eig_relerr']:.1e}", flush=True)
            print(f"  dense J {t_dense:.0f}s ({how}) + eigh {t_eigh:.0f}s = {t_dense + t_eigh:.0f}s -> "
                  f"top-{args.k} Lanczos is {ratio:.1f}x faster", flush=True)
        res[f"80x80_{steps80}steps"] = row
    res["load_end"] = load()
    print(f"\nload average at the end: {res['load_end']}")
    if args.json:
        from gahb.utils.io import atomic_write_json

        atomic_write_json(args.json, res)


if __name__ == "__main__":
    main()
