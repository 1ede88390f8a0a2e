"""``gahb train``: load a training subset and train a blind bias-free denoiser on it."""

from __future__ import annotations

import argparse
import json
import os
import sys

from gahb.cli import float_list
from gahb.cli.common import HelpFormatter, add_runtime_flags

EPILOG = """\
presets (--preset; any flag below overrides the preset's value):
  quick     unet-small, batch 64, 4 epochs x 5,000 images, lr 1e-3 halved after epoch 2   (~1 min CPU)
  standard  unet-small, batch 64, 10 epochs x 20,000 images, lr halved after epochs 3,6,9 (~10-15 min CPU)
  paper     unet-80 (7.6M), batch 512, 1000 epochs x 250,000 images, lr 1e-3 halved every 100 epochs,
            sigma = u^2 (the official schedule; GPU, ~10-20 h per model)

An epoch tiles the N training images n = max(1, floor(images_per_epoch / N)) times, as the official
code does. --steps replaces the preset's epoch budget by a total number of optimizer steps.

The run folder (--out) receives model.safetensors + config.json (load with `gahb denoise
--checkpoint DIR` or gahb.training.load_denoiser), model_ema.safetensors (the exponential moving
average of the weights, which those load by default; --raw-weights for the others), state.pt
(resume state) and metrics.jsonl (one line per evaluation: losses and train/test PSNR at fixed
sigmas on fixed images, the EMA network's under "ema"). Re-running the
same command resumes an interrupted run from its last checkpoint (bit-identical on CPU) and does
nothing for a finished one; --fresh starts over.

data-parallel (gloo on CPU, NCCL on GPU; write --n-train instead of --n, which torchrun's parser rejects):
  torchrun --standalone --nproc_per_node 2 -m gahb train --n-train 1000 ...

examples:
  gahb train --dataset fashion-mnist --n 1000 --subset s1 --preset quick --out runs/fm_n1000_s1
  gahb train --dataset fashion-mnist --n 1000 --arch unet --blocks 2 --width 32 --steps 3000 \\
      --out runs/fm_n1000_w32
  gahb train --dataset celeba:/data/img_align_celeba --size 80 --n 100000 --preset paper --bf16 \\
      --out runs/celeba_n1e5_s1
"""


def _optional_float(text: str):
    """A float, or the word none (kept as "none" so that it differs from the flag's absence)."""
    import argparse

    if text.strip().lower() in ("none", "null"):
        return "none"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or none, got {text!r}") from None


def register(subparsers) -> None:
    from gahb.data.splits import SUBSETS
    from gahb.models.config import ARCHITECTURES
    from gahb.training.config import EVAL_UNITS, LOSS_WEIGHTS, LR_UNITS, NOISE_LAWS
    from gahb.training.config import PRESETS as TRAIN_PRESETS

    p = subparsers.add_parser(
        "train", help="train a blind bias-free denoiser (UNet or BF-CNN) on a subset of N images",
        description="Train a blind, bias-free denoiser on a training subset (S1 or S2) of N images: "
                    "residual MSE against fresh Gaussian noise with one sigma per image (paper eq. 4), "
                    "Adam, tiled epochs, atomic checkpoints and exact resume.",
        epilog=EPILOG, formatter_class=HelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default="fashion-mnist", help="dataset spec (see `gahb data --help`)")
    d.add_argument("--n", "--n-train", dest="n", type=int, default=1000,
                   help="training-set size N (spell it --n-train under torchrun, whose parser finds --n ambiguous)")
    d.add_argument("--subset", default="s1", choices=SUBSETS, help="which disjoint half")
    d.add_argument("--data-seed", type=int, default=0, help="seed of the pool permutation defining S1/S2/test")
    d.add_argument("--n-test", type=int, default=None, help="held-out test-set size (default: the data module's)")
    d.add_argument("--size", type=int, default=None, help="image size the dataset is prepared at")
    d.add_argument("--cache-dir", default=None, help="root holding prepared datasets")
    d.add_argument("--no-dedup", action="store_true", help="use the non-deduplicated pool")

    m = p.add_argument_group("model (default: the preset's)")
    m.add_argument("--model-preset", default=None,
                   help="named architecture: unet-20/40/80/160, unet-small, unet-tiny, bfcnn")
    m.add_argument("--arch", choices=ARCHITECTURES, default=None, help="architecture")
    m.add_argument("--blocks", type=int, default=None, help="UNet blocks (scales)")
    m.add_argument("--width", type=int, default=None, help="channels of the first block / BF-CNN layers")
    m.add_argument("--layers", type=int, default=None, help="BF-CNN convolution layers")

    o = p.add_argument_group("optimisation")
    o.add_argument("--preset", default="standard", choices=sorted(TRAIN_PRESETS), help="training preset")
    budget = o.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, default=None, help="number of (tiled) epochs")
    budget.add_argument("--steps", type=int, default=None, help="total optimizer steps instead of epochs")
    o.add_argument("--batch-size", type=int, default=None, help="global batch size")
    o.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    o.add_argument("--images-per-epoch", type=int, default=None, help="images per tiled epoch")
    o.add_argument("--lr-halve-every", type=float, default=None, help="halve the lr every this many units (0: never)")
    o.add_argument("--lr-halve-unit", choices=LR_UNITS, default=None,
                   help="unit of --lr-halve-every (fraction = of the total steps)")
    o.add_argument("--noise", choices=NOISE_LAWS, default=None,
                   help="sigma law: sigma_max*u^2 (official code) or sigma_max*u, u ~ U(0,1)")
    o.add_argument("--sigma-max", type=float, default=None, help="largest noise std (pixel scale)")
    o.add_argument("--loss-weight", choices=LOSS_WEIGHTS, default=None,
                   help="per-image loss weight: none (the paper's), eps (error / (sigma^2 + 0.01^2), "
                        "DDPM's noise-prediction loss; trains small noise as much as large) or eps-small "
                        "(error * (1 + (0.1 / sigma)^2): unweighted above sigma = 0.1, noise-prediction below; "
                        "keeps a briefly trained network from amplifying clean images, docs/divergence.md)")
    o.add_argument("--bn-recalibration-batches", type=int, default=None, metavar="K",
                   help="after the last step, recompute the BF-BN running statistics from K training batches "
                        "with the weights frozen (0: off; docs/divergence.md)")
    o.add_argument("--ema-halflife-kimg", type=float, default=None, metavar="H",
                   help="keep an exponential moving average of the weights with a half-life of H thousand images "
                        "(as EDM; saved as model_ema.safetensors, which --checkpoint commands load by default; "
                        "0: no EMA; default: the preset's, 500)")
    o.add_argument("--ema-rampup-ratio", type=_optional_float, default=None, metavar="R",
                   help="cap the EMA half-life at R times the images seen (none: no ramp-up; default: 0.05)")
    o.add_argument("--ema-bn-batches", type=int, default=None, metavar="K",
                   help="training batches recalibrating the EMA network's BF-BN statistics (default: 16)")
    o.add_argument("--seed", type=int, default=0, help="training seed (init, data order, noise)")

    e = p.add_argument_group("evaluation and checkpoints")
    e.add_argument("--eval-images", type=int, default=None, help="fixed train and test images evaluated")
    e.add_argument("--eval-sigmas", type=float_list, default=None, help="comma-separated sigmas of the PSNR sweep")
    e.add_argument("--eval-every", type=int, default=None, help="evaluate every this many --eval-unit")
    e.add_argument("--eval-unit", choices=EVAL_UNITS, default=None, help="unit of --eval-every")
    e.add_argument("--checkpoint-every", type=int, default=None, help="also checkpoint every this many steps (0: only at evaluations)")

    r = p.add_argument_group("runtime")
    r.add_argument("--out", required=True, help="run folder (created; resumed if it holds an unfinished run)")
    r.add_argument("--fresh", action="store_true", help="delete the run files in --out and start over")
    r.add_argument("--force", action="store_true", help="resume even if the settings or data differ from the saved run")
    r.add_argument("--bf16", action="store_true", help="bf16 autocast for training (CUDA only)")
    r.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last weights and activations (default: on; the same maths, faster on CPU)")
    r.add_argument("--compile", action="store_true", help="torch.compile the training step (CUDA only)")
    r.add_argument("--noise-on-device", action="store_true", help="draw training noise on the GPU (faster, different stream)")
    r.add_argument("--dry-run", action="store_true", help="print the resolved configuration and exit")
    add_runtime_flags(r, threads=True, progress="no_progress")
    p.set_defaults(func=run)


def build_config(args, channels: int | None = None):
    """The :class:`TrainConfig` the arguments describe (preset, then explicit flags)."""
    from gahb.models import ModelConfig, model_config
    from gahb.training import PRESETS, make_config

    over: dict = {}
    preset_model = PRESETS[args.preset]["model"]
    if args.model_preset is not None:
        model = model_config(args.model_preset).to_dict()
    elif args.arch is not None and args.arch != model_config(preset_model).arch:
        model = ModelConfig(arch=args.arch).to_dict()
    else:
        model = model_config(preset_model).to_dict()
    for flag, key in (("arch", "arch"), ("blocks", "num_blocks"), ("width", "width"), ("layers", "num_layers")):
        if getattr(args, flag) is not None:
            model[key] = getattr(args, flag)
    if channels is not None:
        model["channels"] = channels
    over["model"] = ModelConfig.from_dict(model)
    for flag in ("epochs", "steps", "batch_size", "lr", "images_per_epoch", "lr_halve_every", "lr_halve_unit",
                 "noise", "sigma_max", "loss_weight", "bn_recalibration_batches", "eval_images", "eval_sigmas", "eval_every", "eval_unit", "checkpoint_every",
                 "ema_halflife_kimg", "ema_bn_batches"):
        if getattr(args, flag) is not None:
            over[flag] = getattr(args, flag)
    if args.ema_rampup_ratio is not None:
        over["ema_rampup_ratio"] = None if args.ema_rampup_ratio == "none" else args.ema_rampup_ratio
    if args.channels_last is not None:
        over["channels_last"] = args.channels_last
    over.update(seed=args.seed, device=args.device, bf16=args.bf16, compile=args.compile,
                noise_on_device=args.noise_on_device)
    return make_config(args.preset, **over)


def run(args) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    main = int(os.environ.get("RANK", "0")) == 0
    progress = not args.no_progress and main
    cfg = build_config(args)  # every training setting checked before any data is read or deduplicated
    if args.dry_run:
        print(cfg.to_json())
        return 0
    from gahb.data import load_split
    from gahb.training.distributed import init_distributed

    # Under torchrun, rank 0 reads (and if needed prepares and caches) the dataset first, so that
    # the other ranks find the cache instead of all building it at once.
    ctx = init_distributed(args.device)
    try:
        if not ctx.is_main:
            ctx.barrier()
        split = load_split(dataset=args.dataset, n=args.n, subset=args.subset, seed=args.data_seed,
                           n_test=args.n_test, size=args.size, cache_dir=args.cache_dir, dedup=not args.no_dedup,
                           channels=1, progress=progress)
        if ctx.is_main:
            ctx.barrier()
        return _train(args, split, progress, main)
    finally:
        ctx.close()


def _train(args, split, progress: bool, main: bool) -> int:
    from gahb.training import make_schedule, train
    from gahb.training.distributed import launched_by_torchrun

    cfg = build_config(args, channels=split.train.shape[1])
    sched = make_schedule(cfg, len(split.train))
    if progress:
        ddp = f", {os.environ.get('WORLD_SIZE')} processes" if launched_by_torchrun() else ""
        print(f"gahb train: N={len(split.train)} images {tuple(split.train.shape[1:])}, {len(split.test)} held out; "
              f"{sched.tiles}x tiled epochs of {sched.epoch_len} images, {sched.steps_per_epoch} steps/epoch, "
              f"{sched.total_steps} steps{ddp} -> {args.out}", file=sys.stderr, flush=True)
    from gahb.cli import GahbError

    try:
        result = train(cfg, split.train, split.test, args.out, progress=progress, data_info=split.info,
                       resume="overwrite" if args.fresh else "auto", force=args.force)
    except FileExistsError as exc:
        raise GahbError(str(exc)) from exc
    if main:
        m = result.metrics or {}
        summary = {"out": result.out_dir, "step": result.step, "total_steps": result.total_steps,
                   "finished": result.finished, "already_finished": result.already_finished,
                   "resumed_from": result.resumed_from,
                   "test_psnr_at_0.1": (m.get("test_psnr") or {}).get("0.1"),
                   "train_psnr_at_0.1": (m.get("train_psnr") or {}).get("0.1"),
                   "train_loss": m.get("train_loss"), "test_loss": m.get("test_loss")}
        print(json.dumps(summary))
    return 0
