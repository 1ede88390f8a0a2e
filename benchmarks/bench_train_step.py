"""The training step against the machine's limits: a roofline per convolution, in one run.

For each case (unet-small at 28x28, batch 64; unet-40 at 40x40, batch 32) it measures, in the same
process and on the same thread count:

* the machine's float32 matrix-product rate (4096 x 4096), the ceiling;
* one training step (eq.-4 loss, backward, Adam) of the **old path** (BF-BN statistics with
  ``Tensor.var``, autograd through them, NCHW: gahb before issue 18), of the two-pass BF-BN alone
  (statistics in two passes, closed-form gradient: :class:`gahb.models.bfbn._BatchScale`), of the
  **new path** (that, with channels_last weights and activations: the training loop's default), and of
  the new path with fused Adam or with ``torch.compile`` (its compile time is the first step's); FLOPs
  counted with ``torch.utils.flop_counter``; images/s and GFLOP/s;
* per convolution of the step (forward and both backward products, from ``torch.profiler``): its time
  inside the step against the same convolution shape run alone, and the share of the step that is not
  convolution (normalisation, ReLU, pooling, loss, optimizer, data);
* the losses of the first ``--check-steps`` steps of the old and the new path from the same seeds,
  in float64 and float32: the largest relative difference (the rewrite is exact up to float rounding;
  float32 rounding differences grow through the optimizer steps as any reordering's do).

    python benchmarks/bench_train_step.py --threads 2 --out docs/benchmarks_train_step.json

A script, not a test: timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time
from collections import defaultdict

import torch
import torch.nn.functional as F

from gahb.models import build_model
from gahb.models.bfbn import BFBatchNorm2d

CASES = {"unet-small-28": ("unet-small", 28, 64), "unet-40-40": ("unet-40", 40, 32)}


def matmul_rate(n: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of an n x n float32 matrix product (the machine's ceiling on these threads)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 / ((time.perf_counter() - t0) / repeats) / 1e9


@contextlib.contextmanager
def old_bfbn():
    """BF-BN's training statistics as before: ``Tensor.var`` over (N, H, W), autograd through it."""
    current = BFBatchNorm2d.forward

    def forward(self, x):
        if not self.training:
            return current(self, x)
        sd = torch.sqrt(x.var(dim=(0, 2, 3), keepdim=True, unbiased=False) + self.eps)
        with torch.no_grad():
            self.running_sd.mul_(1.0 - self.momentum).add_(self.momentum * sd.detach())
        return x * (self.gammas / sd)

    BFBatchNorm2d.forward = forward
    try:
        yield
    finally:
        BFBatchNorm2d.forward = current


class Step:
    """One training step of gahb's loop (fresh noise, eq.-4 loss, Adam) on a fixed batch stream."""

    def __init__(self, preset: str, size: int, batch: int, channels_last: bool = False, fused_adam: bool = False,
                 dtype: torch.dtype = torch.float32, compile: bool = False):
        torch.manual_seed(0)
        self.model = build_model(preset).train().to(dtype)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.residual = torch.compile(self.model.residual) if compile else self.model.residual
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, fused=fused_adam or None)
        self.g = torch.Generator().manual_seed(1)
        self.x = torch.rand(4 * batch, 1, size, size, generator=self.g, dtype=dtype)
        self.batch, self.channels_last, self.i = batch, channels_last, 0

    def __call__(self) -> float:
        b = self.batch
        x = self.x[(self.i % 4) * b:(self.i % 4 + 1) * b]
        self.i += 1
        sig = torch.rand(b, 1, 1, 1, generator=self.g, dtype=x.dtype) ** 2
        z = sig * torch.randn(x.shape, generator=self.g, dtype=x.dtype)
        y = x + z
        if self.channels_last:
            y = y.contiguous(memory_format=torch.channels_last)
        loss = (self.residual(y) - z).pow(2).sum() / b
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def step_flops(step: Step) -> tuple[float, float]:
    """(all FLOPs, convolution FLOPs: forward and backward) of one step, by ``torch.utils.flop_counter``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    conv = sum(n for op, n in counter.get_flop_counts().get("Global", {}).items() if "convolution" in str(op))
    return float(counter.get_total_flops()), float(conv)


def time_steps(step: Step, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def conv_breakdown(step: Step, steps: int = 3) -> dict:
    """Per-convolution time inside the step (profiler) against the same shape alone; non-convolution share."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - t0) / steps
    inside = defaultdict(float)
    shapes = {}
    conv_total = 0.0
    for ev in prof.key_averages(group_by_input_shape=True):
        if ev.key in ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution",
                      "aten::convolution_overrideable", "aten::slow_conv2d_forward", "aten::slow_conv_transpose2d"):
            if ev.key in ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::slow_conv2d_forward",
                          "aten::slow_conv_transpose2d"):
                key = str(ev.input_shapes[:2])
                inside[key] += ev.self_cpu_time_total / 1e6 / steps
                shapes[key] = ev.input_shapes
                conv_total += ev.self_cpu_time_total / 1e6 / steps
    return {"step_s": wall, "conv_s": conv_total, "non_conv_share": 1 - conv_total / wall, "per_shape": dict(inside),
            "shapes": {k: [list(s) for s in v if s] for k, v in shapes.items()}}


def alone(x_shape, w_shape, transposed: bool, input_grad: bool, repeats: int = 10,
          channels_last: bool = False) -> tuple[float, float]:
    """(forward, backward) seconds of one convolution of these shapes run alone (in the step's memory
    format): the forward, then the gradients for the weight (and for the input when the step needs it)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(x_shape).contiguous(memory_format=fmt).requires_grad_(input_grad)
    w = torch.randn(w_shape).contiguous(memory_format=fmt).requires_grad_(True)
    pad = w_shape[-1] // 2 if not transposed else 0

    def fwd():
        return F.conv_transpose2d(x, w, stride=2) if transposed else F.conv2d(x, w, padding=pad)

    gy = torch.randn_like(fwd())
    for _ in range(2):
        fwd().backward(gy)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fwd()
    t1 = time.perf_counter()
    for _ in range(repeats):
        fwd().backward(gy)
    t2 = time.perf_counter()
    f = (t1 - t0) / repeats
    return f, (t2 - t1) / repeats - f


def roofline(preset: str, size: int, batch: int, steps: int = 5, channels_last: bool = True) -> dict:
    """Each convolution's forward and backward time inside the training step (module hooks) against the
    same shapes run alone: ratio = time alone / time in the step (1: the step runs it as fast as alone)."""
    step = Step(preset, size, batch, channels_last=channels_last)
    for m in step.model.modules():  # backward hooks cannot follow an in-place ReLU of the hooked output
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    for _ in range(2):
        step()
    fwd, bwd, shapes, t = defaultdict(float), defaultdict(float), {}, {}

    def pre(mod, inp):
        t[mod] = time.perf_counter()

    def post(mod, inp, out):
        fwd[mod] += time.perf_counter() - t[mod]
        shapes[mod] = (tuple(inp[0].shape), tuple(mod.weight.shape), isinstance(mod, torch.nn.ConvTranspose2d),
                       bool(inp[0].requires_grad))

    def bpre(mod, gout):
        t[(mod, "b")] = time.perf_counter()

    def bpost(mod, gin, gout):
        bwd[mod] += time.perf_counter() - t[(mod, "b")]

    convs = [m for m in step.model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    handles = []
    for m in convs:
        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post),
                    m.register_full_backward_pre_hook(bpre), m.register_full_backward_hook(bpost)]
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    step_s = (time.perf_counter() - t0) / steps
    for h in handles:
        h.remove()
    rows = []
    for m in convs:
        xs, ws, tr, grad_in = shapes[m]
        fa, ba = alone(xs, ws, tr, grad_in, channels_last=channels_last)
        fs, bs = fwd[m] / steps, bwd[m] / steps
        rows.append({"input": list(xs), "weight": list(ws), "transposed": tr, "forward_in_step_ms": 1e3 * fs,
                     "backward_in_step_ms": 1e3 * bs, "forward_alone_ms": 1e3 * fa, "backward_alone_ms": 1e3 * ba,
                     "ratio": (fa + ba) / (fs + bs)})
    conv_s = sum(r["forward_in_step_ms"] + r["backward_in_step_ms"] for r in rows) / 1e3
    return {"convolutions": rows, "step_ms_with_hooks": 1e3 * step_s, "non_conv_share_hooks": 1 - conv_s / step_s}


def loss_agreement(preset: str, size: int, batch: int, steps: int, dtype: torch.dtype) -> list[float]:
    """Relative difference of each of the first ``steps`` losses, old path against new, same seeds.

    In float64 it stays at rounding level (the rewrite is exact); in float32 the rounding differences
    of the two orders of operations grow through the optimizer steps as any reordering's do."""
    with old_bfbn():
        a = Step(preset, size, batch, dtype=dtype)
        old = [a() for _ in range(steps)]
    b = Step(preset, size, batch, channels_last=True, dtype=dtype)
    new = [b() for _ in range(steps)]
    return [abs(o - n) / abs(o) for o, n in zip(old, new)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--check-steps", type=int, default=50)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--out", default=None, help="JSON file to write")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = {"machine": platform.processor() or platform.machine(), "threads": args.threads, "torch": torch.__version__,
           "matmul_gflops": matmul_rate(), "cases": {}}
    print(f"matrix product 4096^2 float32: {out['matmul_gflops']:.0f} GFLOP/s ({args.threads} threads)")
    for name in args.cases:
        preset, size, batch = CASES[name]
        res = {"preset": preset, "size": size, "batch": batch}
        flops, conv_flops = step_flops(Step(preset, size, batch))
        res["gflop_per_image"] = flops / batch / 1e9
        res["conv_flop_share"] = conv_flops / flops
        variants = {"old": dict(), "two-pass BF-BN": dict(), "new (+channels_last)": dict(channels_last=True),
                    "new+fused Adam": dict(channels_last=True, fused_adam=True),
                    "new+torch.compile": dict(channels_last=True, compile=True)}
        for vname, kw in variants.items():
            ctx = old_bfbn() if vname == "old" else contextlib.nullcontext()
            with ctx:
                try:
                    step = Step(preset, size, batch, **kw)
                    t0 = time.perf_counter()
                    step()  # the first step (compiles when asked)
                    first = time.perf_counter() - t0
                    t = time_steps(step, args.warmup, args.steps)
                except (RuntimeError, TypeError) as exc:  # e.g. fused Adam unsupported here
                    res[vname] = {"error": str(exc)[:200]}
                    continue
            res[vname] = {"step_ms": 1e3 * t, "first_step_s": first, "images_per_s": batch / t, "gflops": flops / t / 1e9,
                          "of_matmul_rate": flops / t / 1e9 / out["matmul_gflops"]}
        with old_bfbn():
            res["old_breakdown"] = conv_breakdown(Step(preset, size, batch))
        res["new_breakdown"] = conv_breakdown(Step(preset, size, batch, channels_last=True))
        res.update(roofline(preset, size, batch))
        alone_s = sum(r["forward_alone_ms"] + r["backward_alone_ms"] for r in res["convolutions"]) / 1e3
        # The limit of this step on this machine: its convolutions at the rate each reaches alone, the rest free.
        res["convolutions_alone"] = {"seconds": alone_s, "gflops": conv_flops / alone_s / 1e9,
                                     "of_matmul_rate": conv_flops / alone_s / 1e9 / out["matmul_gflops"],
                                     "images_per_s_if_the_rest_were_free": batch / alone_s}
        res["loss_relative_difference_float64"] = loss_agreement(preset, size, batch, args.check_steps, torch.float64)
        res["loss_relative_difference_float32"] = loss_agreement(preset, size, batch, args.check_steps, torch.float32)
        out["cases"][name] = res
        old = res["old"]
        print(f"\n{name}: {res['gflop_per_image']:.3f} GFLOP per image per step")
        for vname in variants:
            v = res[vname]
            if "error" in v:
                print(f"  {vname:<24} {v['error']}")
                continue
            print(f"  {vname:<24} {v['images_per_s']:7.1f} images/s  {v['gflops']:6.1f} GFLOP/s  "
                  f"({100 * v['of_matmul_rate']:.0f}% of the matrix product)  x{v['images_per_s'] / old['images_per_s']:.2f}"
                  f"  (first step {v['first_step_s']:.1f} s)")
        for key in ("old_breakdown", "new_breakdown"):
            print(f"  {key.split('_')[0]:<8} non-convolution share of the step: {100 * res[key]['non_conv_share']:.0f}%")
        ratios = [r["ratio"] for r in res["convolutions"]]
        print(f"  new path, each convolution (forward + backward) alone / in the step: min {min(ratios):.2f}, median "
              f"{sorted(ratios)[len(ratios) // 2]:.2f}; non-convolution share (hooks) "
              f"{100 * res['non_conv_share_hooks']:.0f}%")
        ca = res["convolutions_alone"]
        print(f"  the convolutions alone run at {ca['gflops']:.0f} GFLOP/s ({100 * ca['of_matmul_rate']:.0f}% of the "
              f"matrix product): with everything else free the step would reach {ca['images_per_s_if_the_rest_were_free']:.0f} images/s")
        d64, d32 = res["loss_relative_difference_float64"], res["loss_relative_difference_float32"]
        print(f"  losses of the first {args.check_steps} steps, old vs new, largest relative difference: "
              f"float64 {max(d64):.1e}; float32 {max(d32):.1e} (step 1: {d32[0]:.1e}, step 10: {d32[min(9, len(d32) - 1)]:.1e})")
    if args.out:
        from gahb.utils.io import atomic_write_json

        atomic_write_json(args.out, out)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
