"""Is the bias-free normalisation's running statistics the cause of divergence? (issue 15)

For a trained run, this recomputes every BF-BN layer's ``running_sd`` from the training batches
themselves (the noise levels of training, many batches, momentum 0.1, weights frozen) and then
compares, before and after recalibration: the radial gain on its clean training images
(:func:`gahb.sampling.diagnostics.radial_gain`) and the number of failed samples (paper sampler,
seeds 0..63). If the eval-mode statistics, collected with the weights moving under them, were the
cause, recalibrated statistics would remove the gain above 1 and the failures.

    python scripts/probe_running_sd.py runs/t15/transition/runs/N1_s1 runs/t15/transition/runs/N34475_s2 \\
        --out docs/divergence/running_sd.json
"""

from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--batches", type=int, default=200, help="training batches for the recalibration")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from gahb.data import load_split
    from gahb.models.bfbn import BFBatchNorm2d
    from gahb.sampling import sample
    from gahb.sampling.diagnostics import radial_gain
    from gahb.training.checkpoint import load_denoiser
    from gahb.utils.io import atomic_write_json

    torch.set_num_threads(2)
    rows = []
    for run in args.runs:
        model, cfg = load_denoiser(run)
        d, t = cfg["data"], cfg["train"]
        split = load_split(d["dataset"], n=d["n"], subset=d["subset"], seed=d.get("seed", 0), progress=False)
        train = torch.as_tensor(split.train)

        def measure() -> dict:
            res = sample(model, (args.samples,) + tuple(train.shape[1:]), 0, "paper", progress=False)
            return {"gain_train_mean": float(radial_gain(model, train[:64]).mean()), "failed": len(res.failed)}

        before = measure()
        old = [m.running_sd.clone() for m in model.modules() if isinstance(m, BFBatchNorm2d)]
        g = torch.Generator().manual_seed(123)
        model.train()
        with torch.no_grad():
            for _ in range(args.batches):
                idx = torch.randint(len(train), (t["batch_size"],), generator=g)
                sig = torch.rand(t["batch_size"], 1, 1, 1, generator=g).pow(2) * t.get("sigma_max", 1.0)  # sigma = u^2
                model(train[idx] + sig * torch.randn(train[idx].shape, generator=g))
        model.eval()
        new = [m.running_sd for m in model.modules() if isinstance(m, BFBatchNorm2d)]
        change = max(float((a / b).log().abs().max()) for a, b in zip(new, old))
        after = measure()
        row = {"run": str(run), "before": before, "recalibrated": after, "max_abs_log_change_of_running_sd": change}
        rows.append(row)
        print(json.dumps(row), flush=True)
    atomic_write_json(args.out, {"networks": rows, "command": "python " + " ".join(__import__("sys").argv)})


if __name__ == "__main__":
    main()
