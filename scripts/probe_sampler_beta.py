"""Which sampler beta shows both sides of the transition? (the probe behind the transition default)

For trained transition networks (``RUNS/N{n}_{s1,s2}`` of a `gahb study transition` run), draw
the same seeded samples through both networks of each N with the paper's stochastic sampler at
several beta, and print the median paired cosine (f_S1 vs f_S2 sample) and the median cosine of
each sample with its nearest image of its own training set, as JSON lines.

This script probed the networks of the transition study's earlier standard recipe (6 tiled
epochs of at least 5,000 images, lr halved every 2 epochs); the numbers are in
docs/results/transition/README.md. Train those networks with

    gahb study transition --preset standard --set steps=null --set images_per_epoch=5000 \
        --set lr_halve_every=2 --set runs_dir=runs/transition-standard --out OUT

then e.g. ``python scripts/probe_sampler_beta.py runs/transition-standard --ns 10,10000,34475
--betas 0.1,0.2,0.3 --samples 64``. The training config is read back from each run folder.
"""

from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", help="folder with the N{n}_s1 / N{n}_s2 runs of a transition study")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--ns", default="10,10000", help="comma-separated N")
    ap.add_argument("--betas", default="0.1,0.2,0.3", help="comma-separated sampler beta values")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0, help="sample seed (the study's sample_seed)")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from gahb.analysis.memorization import nearest_train_cosine, paired_cosine
    from gahb.data.datasets import load_pool, load_split
    from gahb.sampling import get_config, sample
    from gahb.training.checkpoint import load_denoiser

    torch.set_num_threads(args.threads)
    pool = load_pool(args.dataset, progress=False)
    for n in (int(v) for v in args.ns.split(",")):
        splits = {s: load_split(args.dataset, n=n, subset=s, seed=args.split_seed, pool=pool, progress=False)
                  for s in ("s1", "s2")}
        nets = {s: load_denoiser(f"{args.runs}/N{n}_{s}")[0].eval().requires_grad_(False) for s in ("s1", "s2")}
        shape = (args.samples, *splits["s1"].train.shape[1:])
        for beta in (float(b) for b in args.betas.split(",")):
            cfg = get_config("paper", beta=beta)
            with torch.no_grad():
                out = {s: sample(nets[s], shape, args.seed, cfg, progress=False).samples for s in ("s1", "s2")}
                near = torch.cat([nearest_train_cosine(out[s], splits[s].train)[0] for s in ("s1", "s2")])
                pair = paired_cosine(out["s1"], out["s2"])
            print(json.dumps({"n": n, "beta": beta, "samples": args.samples,
                              "paired_median": round(float(pair.median()), 4),
                              "nearest_train_median": round(float(near.median()), 4)}), flush=True)


if __name__ == "__main__":
    main()
