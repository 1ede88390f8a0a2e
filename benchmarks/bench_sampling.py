"""Sampler cost per sample: a one-sample reference loop vs the batched sampler vs exact inference speed-ups.

All three draw the same samples (same seeds, same per-sample random streams, same stopping rule)
from the same small UNet at 28x28 on the CPU:

  (a) reference: one sample at a time, one network call per step, the network as trained (eval mode,
      torch.no_grad), in the style of the official ``univ_inv_sol`` loop (written independently);
  (b) batched:   ``gahb.sampling.sample`` (torch.inference_mode) with up to --batch samples together;
  (c) fast:      (b) on ``optimize_for_inference(model)``: BF-BN folded into the convolutions and
      channels_last; --fold-only adds (c0), folding without channels_last; --compile adds (c'),
      (c) under torch.compile.

Configurations are timed round-robin, --repeats times each. It prints, per sample, the best and
median wall time, the best CPU time (all threads; steadier on a shared machine), denoiser
evaluations, the speed-ups over (a), and the largest difference between the samples of (a) and
the others (the same samples up to float rounding of batched/folded convolutions).

The network is a trained run folder (--checkpoint, e.g. a unet-small Fashion-MNIST run), or else
unet-small (2 blocks, width 32) trained here for --train-steps Adam steps (a few minutes on two
cores; a denoiser that has learned something samples in ~60-100 evaluations, a random one diverges).

    python benchmarks/bench_sampling.py --checkpoint runs/fm_n1000_s1_unet2w32
    python benchmarks/bench_sampling.py --checkpoint RUN --threads 1 --batch 16 64 --fold-only --compile
    python benchmarks/bench_sampling.py                      # trains unet-small briefly first

A script, not a test: wall times depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from gahb.models import ModelConfig, build_model, optimize_for_inference
from gahb.sampling import NoiseStreams, get_config, sample


def brief_training(steps: int, batch: int, seed: int, n_images: int = 4096) -> torch.nn.Module:
    """unet-small trained for ``steps`` Adam steps on Fashion-MNIST (synthetic blobs if not installed)."""
    from gahb.training import denoising_loss, draw_noise

    torch.manual_seed(seed)
    try:
        from gahb.data import read_fashion_mnist

        data = read_fashion_mnist()[:n_images]
        source = "fashion-mnist"
    except (FileNotFoundError, OSError):
        g = torch.Generator().manual_seed(seed)
        data = torch.nn.functional.avg_pool2d(torch.rand(n_images, 1, 56, 56, generator=g), 2)
        data = (data - data.amin((2, 3), keepdim=True)) / (data.amax((2, 3), keepdim=True) - data.amin((2, 3), keepdim=True))
        source = "smoothed noise"
    model = build_model(ModelConfig(arch="unet", num_blocks=2, width=32)).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for step in range(steps):
        x = data[torch.randint(0, len(data), (batch,), generator=g)]
        _, z = draw_noise(x.shape, "quadratic", 1.0, generator=g)
        loss = denoising_loss(model.residual(x + z), z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    print(f"trained unet-small for {steps} steps (batch {batch}, {source}) in {time.perf_counter() - t0:.0f} s; "
          f"last loss per image {loss.item():.2f}")
    return model.eval()


@torch.no_grad()
def reference_sample(model, shape, seed: int, cfg) -> tuple[torch.Tensor, int]:
    """One sample, one network call per step: the plain loop of Algorithm 1 (official-code style).

    Uses the same per-sample stream as gahb (x_0 noise, then one z_t per step) and the same
    stopping rule, so its output should match the batched sampler's for that seed.
    """
    gen = NoiseStreams([seed], shape).generators[0]
    d = shape[0] * shape[1] * shape[2]
    x = (torch.randn(shape, generator=gen) * cfg.sigma_0 + cfg.init_mean).unsqueeze(0)
    for t in range(1, cfg.max_steps + 1):
        fx = model(x)
        s = fx - x
        sigma = s.norm().item() / d**0.5
        if sigma < cfg.sigma_final or sigma > cfg.divergence_bound or t == cfg.max_steps:
            return fx[0], t
        h, g = cfg.step_size(t), cfg.noise_scale(t)
        x = x + s * h
        if g > 0:
            x = x + torch.randn(shape, generator=gen) * (sigma * g)
    raise AssertionError("unreachable")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="trained run folder (default: train unet-small briefly)")
    ap.add_argument("--train-steps", type=int, default=300, help="brief-training steps when no --checkpoint")
    ap.add_argument("--train-batch", type=int, default=32)
    ap.add_argument("--preset", default="paper", help="sampler preset")
    ap.add_argument("--size", type=int, default=28, help="image side")
    ap.add_argument("--num", type=int, default=64, help="samples for (b) and (c)")
    ap.add_argument("--num-ref", type=int, default=8, help="samples for the reference loop (a)")
    ap.add_argument("--batch", type=int, nargs="+", default=[64], help="batch size(s) for (b) and (c)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--compile", action="store_true", help="also time (c) with torch.compile")
    ap.add_argument("--fold-only", action="store_true", help="also time folding without channels_last (c0)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per configuration (round-robin)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint:
        from gahb.training.checkpoint import load_denoiser

        model, _ = load_denoiser(args.checkpoint)
    else:
        model = brief_training(args.train_steps, args.train_batch, args.seed)
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = get_config(args.preset)
    shape = (1, args.size, args.size)
    seeds = list(range(args.seed, args.seed + args.num))
    ref_seeds = seeds[: args.num_ref]
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"load average {load}; preset {args.preset}: {cfg.to_dict()}")

    # Configurations are timed round-robin (one repeat of each in turn), so that a burst of load
    # from other processes on a shared machine hits all of them rather than one.
    fast = optimize_for_inference(model, channels_last=True)
    folded = optimize_for_inference(model, channels_last=False)
    configs = [("(a) reference loop, 1 sample/call", None, None)]
    for batch in args.batch:
        configs.append((f"(b) batched, batch {batch}", model, batch))
        if args.fold_only:
            configs.append((f"(c0) batched + folded BN (NCHW), batch {batch}", folded, batch))
        configs.append((f"(c) batched + folded BN + channels_last, batch {batch}", fast, batch))
        if args.compile:
            compiled = torch.compile(fast, dynamic=True)
            sample(compiled, shape, seeds[:batch], cfg.replace(max_steps=3), progress=False)  # compile now
            configs.append((f"(c') (c) + torch.compile, batch {batch}", compiled, batch))

    times = {name: [] for name, _, _ in configs}
    cpu = {name: [] for name, _, _ in configs}
    outputs = {}
    for rep in range(args.repeats):
        for name, net, batch in configs:
            t0, c0 = time.perf_counter(), time.process_time()
            if net is None:
                ref = [reference_sample(model, shape, s, cfg) for s in ref_seeds]
                outputs[name] = (torch.stack([r[0] for r in ref]), sum(r[1] for r in ref) / len(ref), 0)
                n = len(ref_seeds)
            else:
                res = sample(net, shape, seeds, cfg, progress=False, batch_size=batch)
                outputs[name] = (res.samples[: len(ref_seeds)], res.evaluations.double().mean().item(),
                                 len(res.failed))
                n = len(seeds)
            times[name].append((time.perf_counter() - t0) / n)
            cpu[name].append((time.process_time() - c0) / n)
            print(f"  repeat {rep + 1}/{args.repeats} {name}: {times[name][-1] * 1e3:.1f} ms/sample wall, "
                  f"{cpu[name][-1] * 1e3:.1f} ms/sample CPU", flush=True)

    ref_x = outputs[configs[0][0]][0]
    rows = []
    print(f"per sample: {'configuration':<55s} {'wall best':>10s} {'median':>8s} {'CPU best':>9s}  evals  "
          "max|diff vs (a)|")
    for name, _, batch in configs:
        x, ev, failed = outputs[name]
        row = {"config": name, "batch": batch, "s_per_sample_best": min(times[name]),
               "s_per_sample_median": statistics.median(times[name]), "cpu_s_per_sample_best": min(cpu[name]),
               "all_s_per_sample": times[name], "all_cpu_s_per_sample": cpu[name],
               "evals_per_sample": ev, "failed": failed, "max_abs_diff_vs_a": (x - ref_x).abs().max().item()}
        rows.append(row)
        print(f"  {name:<66s} {row['s_per_sample_best'] * 1e3:7.1f}ms {row['s_per_sample_median'] * 1e3:6.1f}ms "
              f"{row['cpu_s_per_sample_best'] * 1e3:7.1f}ms {ev:6.1f}  {row['max_abs_diff_vs_a']:.2e}")
    a = rows[0]

    # Wall time is what a user waits; CPU time (all threads) is steadier on a machine shared with
    # other jobs, where a 2-thread process often waits for its second thread.
    print("speed-up per sample over (a): wall best / wall median / CPU best")
    for r in rows[1:]:
        r["speedup_vs_a_best"] = a["s_per_sample_best"] / r["s_per_sample_best"]
        r["speedup_vs_a_median"] = a["s_per_sample_median"] / r["s_per_sample_median"]
        r["speedup_vs_a_cpu"] = a["cpu_s_per_sample_best"] / r["cpu_s_per_sample_best"]
        print(f"  {r['config']:<66s} {r['speedup_vs_a_best']:.2f}x / {r['speedup_vs_a_median']:.2f}x / "
              f"{r['speedup_vs_a_cpu']:.2f}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": {"platform": platform.platform(), "threads": torch.get_num_threads(),
                                   "cores": os.cpu_count(), "loadavg": load, "torch": torch.__version__},
                       "preset": cfg.to_dict(), "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
