"""``gahb sample``: draw samples from the prior implicit in a trained blind denoiser."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from gahb.cli.common import HelpFormatter, add_runtime_flags, add_weights_flag, parse_size, weights_choice

EPILOG = """\
Sampler (paper App. A.2, Algorithm 1): x_0 ~ N(init_mean, sigma_0^2); each step evaluates the
network once, sets sigma_t = ||f(x) - x|| / sqrt(d), moves x by h_t (f(x) - x) and adds noise
gamma_t z_t with gamma_t^2 = ((1 - beta h_t)^2 - (1 - h_t)^2) sigma_t^2; a sample stops when
sigma_t < sigma_final and returns its denoised iterate.

presets (denoiser evaluations per sample if sigma_t shrinks by exactly 1 - beta h_t per step):
  paper             h0=0.01 beta=0.1 sigma_0=1 sigma_final=0.05 mean=0.5, increasing h_t   ~98
  paper-constant-h  the same with a constant h = 0.01 (Algorithm 1 as printed)           ~2996
  deterministic     beta=1 (no injected noise), increasing h_t                             ~26
  fast              h0=0.05 beta=0.2, increasing h_t                                       ~35
Increasing step: h_t = h0 t / (1 + h0 (t - 1)) (the official code's default).

Seeds: sample i uses seed --seed + i (or the i-th of --seeds) for its own random stream, so a
sample does not depend on --num, --batch-size or the device, and two checkpoints sampled with the
same seeds get identical initial images and injected noises (the paper's paired comparison).

Writes OUT/samples.png (grid), OUT/samples.npy (float32, N x C x H x W, after the final denoising
step) and OUT/sampling.json (config, checkpoint, per-sample seed/status/steps/evaluations/sigma).
Samples that diverge (sigma_t > --divergence-bound) or reach --max-steps are flagged there and
reported, never silently mixed in.

examples:
  gahb sample --checkpoint runs/fm_n1000_s1 --num 16 --seed 0 --preset paper --out samples/fm_s1
  gahb sample --checkpoint runs/fm_n1000_s2 --num 16 --seed 0 --preset paper --out samples/fm_s2
"""


def add_sampler_arguments(p: argparse.ArgumentParser) -> None:
    """Sampler preset and overrides, shared by ``gahb sample`` and ``gahb restore``."""
    from gahb.sampling import PRESETS, STEP_RULES
    from gahb.sampling.config import DTYPES

    g = p.add_argument_group("sampler (overrides of the preset; unset = preset value)")
    g.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="sampler preset")
    g.add_argument("--h0", type=float, default=None, help="(first) step size h0")
    g.add_argument("--beta", type=float, default=None, help="noise control beta in (0, 1]; 1 = deterministic")
    g.add_argument("--sigma-0", type=float, default=None, help="std of the initial image")
    g.add_argument("--sigma-final", type=float, default=None, help="stop when sigma_t falls below this")
    g.add_argument("--init-mean", type=float, default=None, help="mean of the initial image")
    g.add_argument("--step-rule", choices=STEP_RULES, default=None, help="step-size rule")
    g.add_argument("--max-steps", type=int, default=None, help="evaluations before a sample is stopped")
    g.add_argument("--divergence-bound", type=float, default=None, help="sigma_t above this = diverged")
    g.add_argument("--dtype", choices=DTYPES, default=None, help="working precision")
    r = p.add_argument_group("execution")
    r.add_argument("--batch-size", type=int, default=64, help="samples advanced together")
    r.add_argument("--no-optimize", action="store_true",
                   help="run the network as stored instead of with BF-BN folded into the convolutions and "
                        "channels_last (same function up to float rounding, faster)")
    add_runtime_flags(r, progress="no_progress")


def config_from_args(args):
    from gahb.sampling import get_config

    return get_config(args.preset, h0=args.h0, beta=args.beta, sigma_0=args.sigma_0,
                      sigma_final=args.sigma_final, init_mean=args.init_mean, step_rule=args.step_rule,
                      max_steps=args.max_steps, divergence_bound=args.divergence_bound, dtype=args.dtype)


def load_for_sampling(args):
    """(network ready for sampling, config dict, device)."""
    from gahb.models import optimize_for_inference
    from gahb.training.checkpoint import load_denoiser
    from gahb.utils.device import resolve_device

    device = resolve_device(args.device)
    model, config = load_denoiser(args.checkpoint, device, weights=weights_choice(args))
    if args.dtype == "float64":
        model = model.double()
    if not args.no_optimize:
        model = optimize_for_inference(model, channels_last=device.type != "mps")
    return model, config, device


def parse_seeds(seed: int, num: int, seeds: str | None) -> list[int]:
    from gahb.cli import GahbError

    if seeds:
        try:
            out = [int(s) for s in seeds.replace(",", " ").split()]
        except ValueError:
            raise GahbError(f"--seeds must be integers separated by commas, got {seeds!r}") from None
        if not out:
            raise GahbError("--seeds is empty")
        return out
    if num < 1:
        raise GahbError(f"--num must be >= 1, got {num}")
    return list(range(seed, seed + num))


def image_shape(config: dict, size: str | None) -> tuple[int, int, int]:
    from gahb.cli import GahbError

    channels = int(config.get("model", {}).get("channels", 1))
    if size:
        return (channels, *parse_size(size, "--size"))
    shape = config.get("image_shape")
    if shape and len(shape) == 3:
        return tuple(int(s) for s in shape)
    raise GahbError("the checkpoint's config.json records no image_shape; give --size H or HxW")


def save_npy(path: Path, array) -> None:
    """np.save through an atomic write (np.save would append .npy to the temporary name)."""
    import numpy as np

    from gahb.utils.io import _atomic

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)

    _atomic(path, write)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sample", help="draw samples from a trained denoiser's implicit prior",
        description="Draw samples from the prior implicit in a trained blind denoiser with the stochastic "
                    "coarse-to-fine sampler of Kadkhodaie & Simoncelli (paper App. A.2, Algorithm 1).",
        epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, help="run folder (or its model.safetensors)")
    add_weights_flag(p)
    p.add_argument("--num", type=int, default=16, help="number of samples")
    p.add_argument("--seed", type=int, default=0, help="seed of the first sample (sample i uses seed + i)")
    p.add_argument("--seeds", default=None, help="explicit comma-separated seeds (overrides --num/--seed)")
    p.add_argument("--size", default=None,
                   help="image size H or HxW (default: the training image shape recorded in config.json)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--nrow", type=int, default=None, help="images per row of the grid (default: square)")
    add_sampler_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from gahb.data import save_image
    from gahb.sampling import make_grid, sample
    from gahb.utils.io import atomic_write_json

    cfg = config_from_args(args)
    seeds = parse_seeds(args.seed, args.num, args.seeds)
    model, config, device = load_for_sampling(args)
    shape = image_shape(config, args.size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    with warnings.catch_warnings():  # failures are reported below, once
        warnings.filterwarnings("ignore", message=r"\d+ of \d+ samples failed")
        res = sample(model, shape, seeds, cfg, progress=not args.no_progress, batch_size=args.batch_size,
                     device=device)
    samples = res.samples.float().cpu()
    save_image(out / "samples.png", make_grid(samples, nrow=args.nrow))
    save_npy(out / "samples.npy", samples.numpy())
    record = {"checkpoint": str(args.checkpoint), "weights": config["weights"], "preset": args.preset, "image_shape": list(shape),
              "device": str(device), "optimized": not args.no_optimize,
              "ideal_evaluations": cfg.ideal_evaluations(), **res.summary()}
    atomic_write_json(out / "sampling.json", record)

    ev = record["evaluations_per_sample"]
    print(f"{len(seeds)} samples ({args.preset} preset) -> {out / 'samples.png'}, {out / 'samples.npy'}")
    print(f"denoiser evaluations per sample: mean {ev['mean']:.1f} (min {ev['min']}, max {ev['max']}); "
          f"ideal for this config: {record['ideal_evaluations']}")
    print(f"failed: {len(res.failed)} of {len(seeds)} samples (diverged {int(res.diverged.sum())}, "
          f"out of steps {int(res.hit_max_steps.sum())}); sampling.json flags each")
    if res.failed:
        print(f"warning: {res.failure_message()}", file=sys.stderr)
    if len(res.failed) == len(seeds):
        print("error: every sample failed. A network that amplifies clean images (radial gain above 1, "
              "gahb.sampling.diagnostics.radial_gain) makes samples grow without bound; train it longer, "
              "with a decaying lr and --loss-weight eps-small (docs/divergence.md)", file=sys.stderr)
        return 1
    return 0
