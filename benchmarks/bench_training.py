"""Training throughput (images/s) of the blind-denoiser training step on this machine.

One step = what :func:`gahb.training.train` does per batch: draw sigmas (quadratic law) and noise,
residual forward in train mode (BF-BN batch statistics), eq.-4 loss, backward, Adam update.
A few warm-up steps are discarded, then the timed steps are averaged.

    python benchmarks/bench_training.py                      # both default cases, CPU
    python benchmarks/bench_training.py --channels-last both --threads 1
    python benchmarks/bench_training.py --device cuda --bf16 --case paper --batch 512

Cases: ``paper`` = unet-80 (3 blocks, width 64, 7.66M parameters) at 80x80;
``small`` = unet-small (2 blocks, width 32) at 28x28 (Fashion-MNIST).
This is a script, not a test: timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time

import torch

from gahb.models import build_model, count_parameters
from gahb.training import denoising_loss, draw_noise
from gahb.utils.device import resolve_device

CASES = {
    # name: (model preset, image size, default CPU batch, default GPU batch)
    "paper": ("unet-80", 80, 8, 512),
    "small": ("unet-small", 28, 64, 512),
}


def bench(case: str, batch: int, device: torch.device, channels_last: bool, bf16: bool, compile: bool,
          warmup: int, steps: int) -> dict:
    preset, size, _, _ = CASES[case]
    torch.manual_seed(0)
    model = build_model(preset).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fwd = torch.compile(model.residual) if compile else model.residual
    g = torch.Generator().manual_seed(0)
    x_all = torch.rand(4 * batch, 1, size, size, generator=g)

    def step(i: int) -> None:
        x = x_all[(i % 4) * batch : (i % 4 + 1) * batch]
        _, z = draw_noise(x.shape, "quadratic", 1.0, generator=g)
        x, z = x.to(device, non_blocking=True), z.to(device, non_blocking=True)
        y = x + z
        if channels_last:
            y = y.contiguous(memory_format=torch.channels_last)
        amp = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with amp:
            r = fwd(y)
        loss = denoising_loss(r, z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for i in range(warmup):
        step(i)
    sync()
    t0 = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    sync()
    dt = time.perf_counter() - t0
    return {"case": case, "model": preset, "params": count_parameters(model), "image": f"{size}x{size}",
            "batch": batch, "device": str(device), "channels_last": channels_last, "bf16": bf16, "compile": compile,
            "warmup_steps": warmup, "timed_steps": steps, "s_per_step": dt / steps,
            "images_per_s": batch * steps / dt}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", choices=("paper", "small", "all"), default="all")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: per case and device)")
    p.add_argument("--device", default="auto")
    p.add_argument("--channels-last", choices=("off", "on", "both"), default="both")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the residual (CUDA)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 3 on CPU for paper, 10 otherwise)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="one JSON line per measurement")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cases = ("paper", "small") if args.case == "all" else (args.case,)
    layouts = {"off": (False,), "on": (True,), "both": (False, True)}[args.channels_last]
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, device {device}, "
          f"{torch.get_num_threads()} CPU thread(s)")
    for case in cases:
        batch = args.batch or CASES[case][3 if device.type == "cuda" else 2]
        steps = args.steps or (3 if (case == "paper" and device.type == "cpu") else 10)
        for cl in layouts:
            r = bench(case, batch, device, cl, args.bf16, args.compile, args.warmup, steps)
            if args.json:
                print(json.dumps(r), flush=True)
            else:
                print(f"{r['model']:>10} ({r['params'] / 1e6:.2f}M) {r['image']:>5} batch {batch:>4} "
                      f"channels_last={'on ' if cl else 'off'}: {r['images_per_s']:8.1f} images/s "
                      f"({r['s_per_step']:.3f} s/step)", flush=True)


if __name__ == "__main__":
    main()
