"""``gahb restore``: solve a linear inverse problem with a trained denoiser's implicit prior."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from gahb.cli.sample import add_sampler_arguments, config_from_args, load_for_sampling, parse_seeds, save_npy
from gahb.cli.common import HelpFormatter, add_weights_flag, parse_size

EPILOG = """\
The clean image is measured with an operator M with orthonormal rows (M M^T = I), m = M x, and
the constrained sampler (Kadkhodaie & Simoncelli 2021) draws an image from the denoiser's prior
that agrees with m: it starts from M^T m + (I - M^T M) mean + sigma_0 z, steps along
d_t = (I - M^T M)(f(x) - x) + M^T (m - M x) with sigma_t = ||d_t|| / sqrt(d) and the usual
injected noise, and (unless --no-reproject) puts the measurements back into the final denoised
image, so M x_hat = m. --inverse-noise unmeasured confines all noise to the unmeasured subspace.

tasks:
  inpaint   a missing block (--block HxW, default half of each side, centred)
  pixels    a random --fraction of the pixels kept (default 0.1; drawn from --op-seed)
  superres  block averaging by --factor (default 4)
  cs        --fraction of d random orthogonal measurements (default 0.1; drawn from --op-seed)

Writes OUT/original.png, OUT/measured.png (M^T m with the unmeasured part set to 0.5),
OUT/restored.png (a grid when --num > 1), OUT/restored.npy, OUT/comparison.png
(original | measured | restorations) and OUT/restore.json (PSNRs, consistency, configs).

examples:
  gahb restore --checkpoint runs/fm_n60000 --image shirt.png --task inpaint --out restore/inpaint
  gahb restore --checkpoint runs/fm_n60000 --image shirt.png --task superres --factor 4 --num 4 --out restore/sr4
"""


def register(subparsers) -> None:
    from gahb.sampling import TASKS
    from gahb.sampling.config import INVERSE_NOISE

    p = subparsers.add_parser(
        "restore", help="inpainting, missing pixels, super-resolution, compressive sensing with a denoiser's prior",
        description="Restore an image from linear measurements using the prior implicit in a trained blind "
                    "denoiser (constrained coarse-to-fine sampler), and report PSNR against the original.",
        epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, help="run folder (or its model.safetensors)")
    add_weights_flag(p)
    p.add_argument("--image", required=True, help="clean image file (PNG/JPEG/.npy), read at the network's channels")
    p.add_argument("--task", required=True, choices=TASKS, help="measurement operator")
    p.add_argument("--fraction", type=float, default=None, help="pixels / cs: fraction measured (default 0.1)")
    p.add_argument("--factor", type=int, default=None, help="superres: block size (default 4)")
    p.add_argument("--block", default=None, help="inpaint: hole size HxW (default half of each side)")
    p.add_argument("--op-seed", type=int, default=0, help="seed of the random pixel mask / cs matrix")
    p.add_argument("--num", type=int, default=1, help="number of restorations (different seeds)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed of the first restoration")
    p.add_argument("--seeds", default=None, help="explicit comma-separated sampler seeds")
    p.add_argument("--inverse-noise", choices=INVERSE_NOISE, default="full",
                   help="where the sampler's noise lives (full: as the official code)")
    p.add_argument("--no-reproject", action="store_true",
                   help="return the final denoised image as is (it then satisfies M x = m only approximately)")
    p.add_argument("--out", required=True, help="output folder")
    add_sampler_arguments(p)
    p.set_defaults(func=run)


def _parse_block(block: str | None) -> tuple[int, int] | None:
    return None if block is None else parse_size(block, "--block")


def run(args) -> int:
    import torch

    from gahb.analysis.metrics import psnr
    from gahb.data import load_image, save_image
    from gahb.sampling import make_grid, make_operator, sample
    from gahb.utils.io import atomic_write_json

    cfg = config_from_args(args)
    cfg = cfg.replace(reproject=not args.no_reproject, inverse_noise=args.inverse_noise)
    seeds = parse_seeds(args.seed, args.num, args.seeds)
    model, config, device = load_for_sampling(args)
    channels = int(config.get("model", {}).get("channels", 1))
    clean = load_image(args.image, channels=channels).unsqueeze(0)  # (1, C, H, W) in [0, 1]
    shape = tuple(clean.shape[1:])
    op = make_operator(args.task, shape, fraction=args.fraction, factor=args.factor,
                       block=_parse_block(args.block), seed=args.op_seed)
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    m = op(clean.to(dtype))
    measured = op.mean_fill(m)

    with warnings.catch_warnings():  # failures are reported below, once
        warnings.filterwarnings("ignore", message=r"\d+ of \d+ samples failed")
        res = sample(model, shape, seeds, cfg, progress=not args.no_progress, operator=op, measurement=m,
                     batch_size=args.batch_size, device=device)
    restored = res.samples.float().cpu()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_image(out / "original.png", clean[0])
    save_image(out / "measured.png", measured[0].float())
    save_image(out / "restored.png", make_grid(restored, pad=0) if len(seeds) == 1 else make_grid(restored))
    save_npy(out / "restored.npy", restored.numpy())
    save_image(out / "comparison.png", make_grid(torch.cat([clean, measured.float(), restored]), nrow=2 + len(seeds)))

    p_restored = psnr(restored, clean.expand_as(restored), reduce=False)
    p_measured = float(psnr(measured.float(), clean))
    consistency = float((op(restored.to(dtype)) - m).abs().max())
    record = {
        "checkpoint": str(args.checkpoint), "weights": config["weights"], "image": str(args.image), "task": args.task,
        "psnr_restored": [float(v) for v in p_restored], "psnr_restored_mean": float(p_restored.mean()),
        "psnr_measured": p_measured, "max_measurement_error": consistency,
        "device": str(device), "optimized": not args.no_optimize, **res.summary(),
    }
    atomic_write_json(out / "restore.json", record)

    ev = record["evaluations_per_sample"]
    print(f"{args.task}: {op.num_measurements} of {op.dim} numbers measured ({op.num_measurements / op.dim:.1%})")
    print(f"PSNR vs original: restored {record['psnr_restored_mean']:.2f} dB"
          + (f" (mean of {len(seeds)}: {', '.join(f'{v:.2f}' for v in record['psnr_restored'])})" if len(seeds) > 1 else "")
          + f"; measurements with 0.5 fill {p_measured:.2f} dB")
    print(f"max |M x_hat - m| = {consistency:.2e}; denoiser evaluations per restoration: mean {ev['mean']:.1f}")
    print(f"written to {out}/ (original.png, measured.png, restored.png, comparison.png, restore.json)")
    if res.failed:
        print(f"warning: {res.failure_message()}", file=sys.stderr)
    return 0
