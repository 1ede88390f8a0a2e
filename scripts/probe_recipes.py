"""Which training recipe keeps briefly trained networks from amplifying clean images? (issue 15)

Trains one network per (N, recipe) on subset S1 of a dataset with the quick transition budget
(unet-small, 200 Adam steps of 64 images, epochs of 2,500 images), then measures its radial gain
on its clean training images (gahb.sampling.diagnostics.radial_gain), the image component it
returns from noisy training images at sigma 0.1, 0.5, 1 (image_gain), how many of ``--samples``
paper-sampler samples fail, and the median nearest-training cosine of the converged ones (copies
at N = 1 are the memorization claim). Prints one JSON line per network and writes ``--out``.
The tables of docs/divergence.md come from

    python scripts/probe_recipes.py --dataset fashion-mnist --n 1 --out docs/divergence/recipes_fashion-mnist.json \\
        --recipe "before:lr_halve_every=0,loss_weight=none" --recipe "eps:lr_halve_every=0,loss_weight=eps" \\
        --recipe "eps-small c=0.05:lr_halve_every=0,loss_weight=eps-small,loss_eps_sigma=0.05" \\
        --recipe "eps-small:lr_halve_every=0,loss_weight=eps-small" \\
        --recipe "lr decay:lr_halve_every=1.25,loss_weight=none" \\
        --recipe "lr decay + eps-small:lr_halve_every=1.25,loss_weight=eps-small" \\
        --recipe "recalibrated:lr_halve_every=0,loss_weight=none,bn_recalibration_batches=32" \\
        --recipe "lr decay + recalibrated:lr_halve_every=1.25,loss_weight=none,bn_recalibration_batches=32"
    python scripts/probe_recipes.py --dataset synthetic:strokes:size=28 --n 1 10 1000 \\
        --out docs/divergence/recipes_strokes.json --recipe "before:lr_halve_every=0,loss_weight=none" \\
        --recipe "eps-small:lr_halve_every=0,loss_weight=eps-small" --recipe "lr decay:lr_halve_every=1.25,loss_weight=none" \\
        --recipe "lr decay + eps-small:lr_halve_every=1.25,loss_weight=eps-small" \\
        --recipe "lr decay + recalibrated:lr_halve_every=1.25,loss_weight=none,bn_recalibration_batches=32"
    python scripts/probe_recipes.py --dataset synthetic:strokes:size=28 --n 1 --model unet-tiny \\
        --steps 25 50 100 150 200 300 --batch-size 32 --run-epochs 5.12 --n-test 8 \\
        --out docs/divergence/recipes_strokes_test.json --recipe "before:lr_halve_every=0,loss_weight=none" \\
        --recipe "lr decay + eps-small:lr_halve_every=1.25,loss_weight=eps-small" \\
        --recipe "lr decay + recalibrated:lr_halve_every=1.25,loss_weight=none,bn_recalibration_batches=32"

The last one trains the network of tests/test_divergence.py at several budgets (150 steps is the
test's; --run-epochs keeps the quick recipe's lr schedule: 200 x 64 / 2,500 = 5.12 epochs per run).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def _recipe(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    kw = {}
    for item in rest.split(","):
        k, _, v = item.partition("=")
        key = k.strip()
        kw[key] = v.strip() if key == "loss_weight" else int(v) if key == "bn_recalibration_batches" else float(v)
    return name, kw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--n", type=int, nargs="+", default=[1])
    ap.add_argument("--recipe", action="append", required=True, metavar="NAME:KEY=VALUE,...")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--model", default="unet-small")
    ap.add_argument("--steps", type=int, nargs="+", default=[200], help="optimizer steps per network (one run each)")
    ap.add_argument("--batch-size", type=int, default=64, help="images per step")
    ap.add_argument("--images-per-epoch", type=int, default=2500, help="the lr schedule's epoch, in images")
    ap.add_argument("--run-epochs", type=float, default=None,
                    help="instead of --images-per-epoch: epochs per run, the epoch scaled with --steps (the quick "
                         "transition recipe: 200 x 64 / 2,500 = 5.12)")
    ap.add_argument("--n-test", type=int, default=None, help="held-out images of the split (default: the study's)")
    ap.add_argument("--runs", default="runs/probe_recipes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from gahb.analysis.memorization import nearest_train_cosine
    from gahb.data import load_split
    from gahb.sampling import sample
    from gahb.sampling.diagnostics import image_gain, radial_gain
    from gahb.training.checkpoint import load_denoiser
    from gahb.training.config import make_config
    from gahb.training.loop import train
    from gahb.utils.io import atomic_write_json

    torch.set_num_threads(args.threads)
    rows = []
    for n, steps in [(n, k) for n in args.n for k in args.steps]:
        ipe = args.images_per_epoch if args.run_epochs is None else round(steps * args.batch_size / args.run_epochs)
        extra = {} if args.n_test is None else {"n_test": args.n_test}
        split = load_split(args.dataset, n=n, subset="s1", seed=0, progress=False, **extra)
        for name, kw in map(_recipe, args.recipe):
            cfg = make_config("quick", model=args.model, steps=steps, images_per_epoch=ipe,
                              batch_size=args.batch_size, seed=0,
                              eval_images=8, eval_sigmas=(0.1,), checkpoint_every=10**6, **kw)
            run = Path(args.runs) / f"{args.dataset.replace(':', '_')}_{args.model}_{steps}_N{n}_{name.replace(' ', '_')}"
            train(cfg, split.train, split.test, run, progress=False, data_info=split.info)
            model, _ = load_denoiser(run)
            imgs = torch.as_tensor(split.train[:64])
            gain = radial_gain(model, imgs)
            # the image's own component returned from noisy observations (c = 1 for an optimal denoiser)
            coef = {f"{s:g}": float(image_gain(model, imgs.repeat(max(1, 64 // len(imgs)), 1, 1, 1), s).mean())
                    for s in (0.1, 0.5, 1.0)}
            res = sample(model, (args.samples,) + tuple(split.train.shape[1:]), 0, "paper", progress=False)
            ok = res.converged
            near = nearest_train_cosine(res.samples[ok], split.train)[0] if ok.any() else None
            row = {"dataset": args.dataset, "model": args.model, "steps": steps, "n": n, "recipe": name, **kw, "gain_mean": float(gain.mean()),
                   "gain_max": float(gain.max()), "image_gain": coef, "failed": len(res.failed), "samples": args.samples,
                   "nearest_median": None if near is None else float(near.median())}
            rows.append(row)
            print(json.dumps(row), flush=True)
    atomic_write_json(args.out, {"networks": rows, "command": "python " + " ".join(__import__("sys").argv)})


if __name__ == "__main__":
    main()
