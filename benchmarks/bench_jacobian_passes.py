"""What one product of S = (J + J^T)/2 costs, and what did not make it cheaper (issue 4).

Lanczos needs a fixed number of products for a given spectrum, so its speed is the speed of one
J pass plus one J^T pass on a single vector. This times, on the frozen-activation network of
``bench_jacobian.py``'s small model at one 40x40 image (interleaved rounds, median and best of
``--rounds``):

* J v (the linear network) and J^T v (the explicit adjoint network), float32, NCHW and
  channels_last, one vector and a batch of 4;
* the same in bfloat16 (fast where the CPU has bf16 instructions, but only 8 mantissa bits);
* ``torch.jit.optimize_for_inference`` of the traced linear network;
* one product with J v and J^T v run side by side on one thread each, against both passes in
  turn on all threads.

    python benchmarks/bench_jacobian_passes.py --threads 2
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch

from gahb.analysis.jacobian import JacobianOperator
from bench_jacobian import bench_image, cached_model


def rounds_of(cands: dict, rounds: int, reps: int = 10) -> dict:
    """Milliseconds per vector of each candidate (fn, batch), interleaved so drift hits all alike."""
    out = {k: [] for k in cands}
    with torch.no_grad():
        for fn, _ in cands.values():
            for _ in range(3):
                fn()
        for _ in range(rounds):
            for k, (fn, b) in cands.items():
                t0 = time.perf_counter()
                for _ in range(reps):
                    fn()
                out[k].append((time.perf_counter() - t0) / reps / b * 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-steps", type=int, default=3000, help="the bench_jacobian model to load (cached)")
    ap.add_argument("--cache", default="~/.cache/gahb/bench_jacobian")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    model, desc = cached_model("unet-40", 40, args.train_steps, args.cache, True)
    x = bench_image("calpha", 40)
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).unsqueeze(0)
    print(f"torch {torch.__version__}, {threads} threads; {desc}", flush=True)

    cands = {}
    for cl in (False, True):
        op = JacobianOperator(model, y, channels_last=cl)
        fmt = torch.channels_last if cl else torch.contiguous_format
        tag = "channels_last" if cl else "NCHW"
        for dtype in (torch.float32, torch.bfloat16):
            lin = op._lin if dtype == torch.float32 else copy.deepcopy(op._lin).to(dtype)
            if dtype != torch.float32:
                for m in lin.modules():
                    if hasattr(m, "gate"):
                        m.gate = m.gate.to(dtype)
            for b in (1, 4):
                X = torch.randn(b, 1, 40, 40).to(dtype).contiguous(memory_format=fmt)
                cands[f"J v    {tag:13s} {str(dtype)[6:]:8s} batch {b}"] = (lambda f=lin, X=X: f(X), b)
        for b in (1, 4):
            X = torch.randn(b, 1, 40, 40).contiguous(memory_format=fmt)
            cands[f"J^T v  {tag:13s} float32  batch {b}"] = (lambda f=op._adjoint, X=X: f(X), b)
        if not cl:
            X = torch.randn(1, 1, 40, 40)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ofi = torch.jit.optimize_for_inference(torch.jit.trace(op._lin, X))
            cands[f"J v    {tag:13s} float32  batch 1, jit.optimize_for_inference"] = (lambda f=ofi, X=X: f(X), 1)
    res = rounds_of(cands, args.rounds)
    for k, v in res.items():
        print(f"  {k:60s} median {statistics.median(v):6.2f}  best {min(v):6.2f} ms/vector")

    # One product: J v and J^T v in turn on all threads, or side by side on one thread each.
    op = JacobianOperator(model, y)
    X = torch.randn(1, 1, 40, 40)
    pool = ThreadPoolExecutor(1)

    def in_turn():
        return op._lin(X) + op._adjoint(X)

    def side_by_side():
        other = pool.submit(op._adjoint, X)
        return op._lin(X) + other.result()

    turn, side = [], []
    for _ in range(3):
        torch.set_num_threads(threads)
        turn += rounds_of({"t": (in_turn, 1)}, 3)["t"]
        torch.set_num_threads(1)
        side += rounds_of({"s": (side_by_side, 1)}, 3)["s"]
    torch.set_num_threads(threads)
    print(f"  one product of S, J and J^T in turn on {threads} threads: median {statistics.median(turn):.2f} ms; "
          f"side by side on 1 thread each: {statistics.median(side):.2f} ms")


if __name__ == "__main__":
    main()
