"""Which EMA half-life? A measured sweep on the transition study's networks (docs/ema.md).

For every N of ``--ns`` one network is trained on S1(N) with the recipe of the transition study's
``--preset`` (quick: unet-tiny, 200 steps, eps-small loss; standard: unet-small, >= 1000 steps and >= 4
passes), and in the same run one EMA of its weights per setting of ``--ema`` (an EMA never feeds back
into training, so every setting averages the same trajectory: the first is the run's own EMA,
:mod:`gahb.training.ema`, the others follow the same rule after every step and are checked against it).
Each network is then measured:

* the raw weights; the raw weights with BF-BN recalibrated as the EMA networks are (a control: what
  recalibration alone gives); every EMA network (recalibrated, as the training loop does);
* held-out PSNR at ``--sigmas`` on ``--test-images`` images, the same noise for every network, and
  the paired difference to the raw weights with its standard error over images;
* ``--samples`` samples of the paper's sampler (Algorithm 1; same seeds for every network): how many
  fail, the median cosine to the nearest training image, and the radial gain on training images.

Writes ``--out`` (JSON) and prints a table. The sweep of docs/ema.md:

    python scripts/sweep_ema.py --preset quick --out docs/ema/sweep_quick.json
    python scripts/sweep_ema.py --preset standard --out docs/ema/sweep_standard.json

A tiny check that it works (a minute): ``--ns 16 64 --set steps=20 --set images_per_epoch=320
--test-images 16 --samples 4 --sigmas 0.1 0.5``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

DEFAULT_EMA = ("500:0.05", "500:0.1", "500:0.2", "0.5:none", "2:none", "8:none")


def parse_setting(text: str) -> tuple[float, float | None]:
    """``"H"`` or ``"H:R"``: half-life in thousands of images and ramp-up ratio (``none``: no ramp-up; default 0.05)."""
    h, _, r = text.partition(":")
    ratio = 0.05 if not r else None if r.strip().lower() == "none" else float(r)
    return float(h), ratio


def _label(setting: tuple[float, float | None]) -> str:
    h, r = setting
    return f"ema {h:g} kimg" + (f", ramp-up {r:g}" if r is not None else ", no ramp-up")


def _train_with_emas(tcfg, split, run: Path, settings: list, progress: bool) -> dict:
    """Train ``tcfg`` (whose EMA is ``settings[0]``) in ``run``, keeping one more EMA per other setting;
    returns ``{setting: WeightEMA}`` (all of them, the first read back from the run)."""
    from gahb.training import loop
    from gahb.training.ema import WeightEMA
    from gahb.training.run_dir import load_state

    extra: dict = {}
    real_step = loop._Trainer._train_step

    def step(trainer):
        if trainer.step == 0 and not extra:
            extra.update({s: WeightEMA(trainer.model, *s) for s in settings})
        seen = trainer.images_seen
        b = real_step(trainer)
        for ema in extra.values():
            ema.update(trainer.model, b, seen)
        return b

    loop._Trainer._train_step = step
    try:  # a fresh run: the extra EMAs must see every step
        loop.train(tcfg, split.train, split.test, run, progress=progress, data_info=split.info, resume="overwrite")
    finally:
        loop._Trainer._train_step = real_step
    saved = load_state(run)["ema"]
    for name, p in extra[settings[0]].model.named_parameters():  # the sweep's rule is the loop's, bit for bit
        assert torch.equal(p, saved[name]), f"the sweep's EMA differs from the run's at {name}"
    return extra


@torch.no_grad()
def _measure(model, split, args, clean, unit) -> tuple[dict, torch.Tensor]:
    from gahb.analysis.memorization import nearest_train_cosine
    from gahb.analysis.metrics import psnr
    from gahb.sampling import sample
    from gahb.sampling.diagnostics import radial_gain

    model.eval()
    per_image = torch.stack([torch.cat([psnr(model(clean[i:i + 128] + s * unit[i:i + 128]), clean[i:i + 128],
                                             reduce=False) for i in range(0, len(clean), 128)])
                             for s in args.sigmas])  # (sigmas, images)
    res = sample(model, (args.samples,) + tuple(split.train.shape[1:]), 0, "paper", progress=False)
    ok = res.converged
    near = nearest_train_cosine(res.samples[ok], split.train)[0] if ok.any() else None
    gain = radial_gain(model, torch.as_tensor(split.train[:64]))
    out = {"psnr": {f"{s:g}": float(v) for s, v in zip(args.sigmas, per_image.mean(1))},
           "psnr_mean": float(per_image.mean()),
           "samples": {"n": args.samples, "failed": len(res.failed),
                       "nearest_median": None if near is None else float(near.median())},
           "radial_gain": {"mean": float(gain.mean()), "max": float(gain.max())}}
    return out, per_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--ns", nargs="+", default=["1000", "max"], help="training-set sizes; max: the largest half")
    ap.add_argument("--preset", default="quick", help="the transition study's preset whose recipe trains the networks")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    ap.add_argument("--ema", nargs="+", default=list(DEFAULT_EMA), metavar="H[:R]",
                    help="EMA settings: half-life in thousands of images, ramp-up ratio (none: no ramp-up)")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.5])
    ap.add_argument("--test-images", type=int, default=256)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default="runs/sweep_ema")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from gahb.data.datasets import load_pool, load_split
    from gahb.studies import transition
    from gahb.training.bn_stats import recalibrate_bn
    from gahb.training.ema import EMA_SEED_OFFSET
    from gahb.training.checkpoint import load_denoiser
    from gahb.training.run_dir import load_state
    from gahb.utils.config import apply_overrides
    from gahb.utils.io import atomic_write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = [parse_setting(t) for t in args.ema]
    recipe = apply_overrides(transition.PRESETS[args.preset].train, args.set)
    t_start = time.time()
    pool = load_pool(args.dataset, progress=args.progress)
    max_n = int(load_split(args.dataset, n=1, pool=pool, progress=False).info["max_n"])
    rows = []
    for n in [max_n if v == "max" else int(v) for v in args.ns]:
        t0 = time.time()
        split = load_split(args.dataset, n=n, subset="s1", seed=0, pool=pool, progress=False)
        tcfg = recipe.but(ema_halflife_kimg=settings[0][0], ema_rampup_ratio=settings[0][1]).train_config(
            n, seed=args.seed, device="cpu")
        run = Path(args.runs) / f"{args.preset}_N{n}"
        emas = _train_with_emas(tcfg, split, run, settings, args.progress)
        train_s = round(time.time() - t0, 1)
        seen = int(load_state(run)["images_seen"])
        clean = torch.as_tensor(split.test[:args.test_images]).float()
        unit = torch.randn(clean.shape, generator=torch.Generator().manual_seed(12345))
        raw, _ = load_denoiser(run, weights="raw")
        recal, _ = load_denoiser(run, weights="raw")
        recalibrate_bn(recal, split.train, batches=tcfg.ema_bn_batches, batch_size=tcfg.batch_size, noise=tcfg.noise,
                       sigma_max=tcfg.sigma_max, seed=tcfg.seed + EMA_SEED_OFFSET)
        nets = [("raw", None, raw), ("raw, recalibrated", None, recal)]
        for s, ema in emas.items():
            ema.calibrate(split.train, -1, batches=tcfg.ema_bn_batches, batch_size=tcfg.batch_size, noise=tcfg.noise,
                          sigma_max=tcfg.sigma_max, seed=tcfg.seed + EMA_SEED_OFFSET)
            nets.append((_label(s), s, ema.model))
        base = None
        for label, s, model in nets:
            numbers, per_image = _measure(model, split, args, clean, unit)
            if base is None:
                base = per_image
            d = (per_image - base).mean(0)  # per-image gain over the sigmas, paired with the raw weights
            row = {"n": n, "weights": label, "halflife_kimg": None if s is None else s[0],
                   "rampup_ratio": None if s is None else s[1], "images_seen": seen, "train_seconds": train_s,
                   "halflife_at_end_images": None if s is None else 1000 * s[0] if s[1] is None else
                   min(1000 * s[0], s[1] * seen),
                   **numbers, "psnr_gain_vs_raw": float(d.mean()),
                   "psnr_gain_stderr": float(d.std() / len(d) ** 0.5) if len(d) > 1 else None}
            rows.append(row)
            print(f"N={n:<6} {label:<32} PSNR {row['psnr_mean']:6.2f} dB  vs raw {row['psnr_gain_vs_raw']:+.3f} "
                  f"(+-{row['psnr_gain_stderr'] or 0:.3f})  failed {numbers['samples']['failed']}/{args.samples}  "
                  f"gain {numbers['radial_gain']['mean']:.3f}", flush=True)
    doc = {"command": "python " + " ".join(sys.argv), "dataset": args.dataset, "preset": args.preset,
           "recipe": {k: str(v) for k, v in vars(recipe).items()}, "sigmas": args.sigmas,
           "test_images": args.test_images, "rows": rows, "seconds": round(time.time() - t_start, 1)}
    atomic_write_json(args.out, doc)
    print(f"wrote {args.out} ({doc['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
