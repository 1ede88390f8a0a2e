"""Why samples diverge: radial gain on clean images against sampler failures, and trajectories.

For every run folder ``RUNS/N{n}_{s1,s2}`` of one or more transition studies (each a labelled
group, e.g. before and after a recipe change) this measures

* the radial gain g(x) = <x, f(x)> / ||x||^2 of the network on its own clean training images and on
  clean held-out images (:func:`gahb.sampling.diagnostics.radial_gain`; 1 for a denoiser that
  leaves clean images alone);
* the image gain c(x, sigma) = <f(x + sigma z), x> / ||x||^2 on its training images at sigma 0.1,
  0.5 and 1 (:func:`gahb.sampling.diagnostics.image_gain`; 1 for an optimal denoiser of one image);
* how many of ``--samples`` samples (paper sampler, seeds 0, 1, ...) fail;
* for the networks named by ``--trajectories``, sigma_t, the iterate's RMS ||x|| / sqrt(d) and the
  radial gain g(x_t) along every step of their first samples;

and writes ``OUT/divergence.json`` and ``OUT/divergence.png``. The numbers in docs/divergence.md
come from

    python scripts/probe_divergence.py --group "before (constant lr, unweighted)=runs/t15/transition/runs" \\
        --group "after (quick recipe of issue 15)=runs/t15-after/transition/runs" \\
        --trajectories N1_s1 N34475_s2 --out docs/divergence

where the two folders are the runs of ``gahb study transition --dataset fashion-mnist --preset
quick`` with the quick recipe before issue 15 and after it.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", action="append", required=True, metavar="LABEL=RUNS",
                    help="a label and a folder of N{n}_{s1,s2} runs (repeatable)")
    ap.add_argument("--samples", type=int, default=64, help="samples per network (the study's n_samples)")
    ap.add_argument("--images", type=int, default=64, help="clean images per network for the gain")
    ap.add_argument("--trajectories", nargs="*", default=["N1_s1"], help="runs whose trajectories are drawn")
    ap.add_argument("--traj-samples", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from gahb.data import load_split
    from gahb.report.figures import pyplot, save_figure
    from gahb.sampling import sample
    from gahb.sampling.diagnostics import image_gain, radial_gain
    from gahb.training.checkpoint import load_denoiser
    from gahb.utils.io import atomic_write_json

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, traj = [], {}
    for item in args.group:
        label, _, folder = item.rpartition("=")
        runs = sorted((p for p in Path(folder).iterdir() if re.fullmatch(r"N\d+_s[12]", p.name)),
                      key=lambda p: (int(p.name[1:].split("_")[0]), p.name))
        for run in runs:
            model, cfg = load_denoiser(run)
            d = cfg["data"]
            split = load_split(d["dataset"], n=d["n"], subset=d["subset"], seed=d.get("seed", 0), progress=False)
            train = torch.as_tensor(split.train[: args.images])
            test = torch.as_tensor(split.test[: args.images])
            g_train, g_test = radial_gain(model, train), radial_gain(model, test)
            reps = train.repeat(max(1, args.images // len(train)), 1, 1, 1)  # N = 1: several noise draws
            coef = {f"{s:g}": float(image_gain(model, reps, s).mean()) for s in (0.1, 0.5, 1.0)}
            shape = tuple(train.shape[1:])
            res = sample(model, (args.samples,) + shape, 0, "paper", progress=False)
            row = {"group": label, "run": run.name, "n": d["n"], "subset": d["subset"],
                   "gain_train_mean": float(g_train.mean()), "gain_train_max": float(g_train.max()),
                   "gain_test_mean": float(g_test.mean()), "gain_test_max": float(g_test.max()), "image_gain_train": coef,
                   "failed": len(res.failed), "samples": args.samples,
                   "evaluations_mean": float(res.evaluations.double().mean())}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if run.name in args.trajectories:
                traj[f"{label}: {run.name}"] = _trajectories(model, shape, args.traj_samples, split.train)
                row["on_its_first_training_image"] = _noisy_gain(model, train[:1])
    atomic_write_json(out / "divergence.json", {"networks": rows, "trajectories": traj, "command": _command()})
    _figure(rows, traj, out / "divergence.png", pyplot, save_figure)


@torch.no_grad()
def _noisy_gain(model, x, sigmas=(0.0, 0.02, 0.05, 0.1, 0.2)) -> list[dict]:
    """||f(x + sigma z)|| / ||x|| and cos(f, x) on one clean image."""
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    out = []
    for s in sigmas:
        f = model(x + s * z)
        out.append({"sigma": s, "norm_ratio": float(f.norm() / x.norm()),
                    "cos": float((f * x).sum() / (f.norm() * x.norm()))})
    return out


def _trajectories(model, shape, n: int, train) -> list[dict]:
    """sigma_t, RMS of the iterate, its radial gain g(x_t) and its component along the training image
    nearest to where it ended, <x_t, x*> / ||x*||^2, at every step of samples 0..n-1."""
    from gahb.analysis.memorization import nearest_train_cosine
    from gahb.sampling import sample

    rec: dict[int, dict] = {}
    xs: dict[int, list] = {}

    def callback(info: dict) -> None:
        x, f = info["x"].double(), info["denoised"].double()
        gain = (x * f).flatten(1).sum(1) / (x * x).flatten(1).sum(1)
        rms = x.flatten(1).norm(dim=1) / math.sqrt(x[0].numel())
        for j, i in enumerate(info["index"].tolist()):
            r = rec.setdefault(i, {"step": [], "sigma": [], "rms": [], "gain": []})
            r["step"].append(info["step"])
            r["sigma"].append(float(info["sigma"][j]))
            r["rms"].append(float(rms[j]))
            r["gain"].append(float(gain[j]))
            xs.setdefault(i, []).append(x[j].flatten().float().clone())

    res = sample(model, (n,) + shape, 0, "paper", callback=callback, progress=False)
    _, near = nearest_train_cosine(torch.stack([xs[i][-1] for i in range(n)]).reshape((n,) + shape), train)
    out = []
    for i in range(n):
        ref = torch.as_tensor(train[int(near[i])]).flatten().double()
        coef = [float(v.double() @ ref / (ref @ ref)) for v in xs[i]]
        out.append({**rec[i], "along_nearest": coef, "status": res.status[i]})
    return out


def _figure(rows, traj, path, pyplot, save_figure) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 5, figsize=(21, 3.8))
    colors = plt.get_cmap("tab10")
    for k, (name, samples) in enumerate(traj.items()):
        for j, s in enumerate(samples):
            kw = {"color": colors(k), "alpha": 0.7, "lw": 1, "label": name if j == 0 else None}
            axes[0].plot(s["step"], s["sigma"], **kw)
            axes[1].plot(s["step"], s["rms"], **kw)
            axes[2].plot(s["step"], s["gain"], **kw)
            axes[3].plot(s["step"], s["along_nearest"], **kw)
    axes[0].axhline(2.0, color="r", ls=":", lw=1, label="divergence bound")
    axes[0].axhline(0.05, color="g", ls=":", lw=1, label="sigma_final")
    for ax, t in zip(axes[:4], ("effective noise sigma_t", "RMS of the iterate ||x_t|| / sqrt(d)",
                                "radial gain <x, f(x)> / ||x||^2 along the way",
                                "component along its nearest training image x*: <x_t, x*> / ||x*||^2")):
        ax.set_xlabel("step t")
        ax.set_title(t, fontsize=9)
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[2].axhline(1.0, color="k", lw=0.6)
    axes[3].axhline(1.0, color="k", lw=0.6)
    axes[3].set_yscale("log")
    axes[0].legend(fontsize=7)
    groups = sorted({r["group"] for r in rows}, key=[r["group"] for r in rows].index)
    for k, gname in enumerate(groups):
        g = [r for r in rows if r["group"] == gname]
        xs = [max(r["image_gain_train"]["0.5"], r["image_gain_train"]["1"]) for r in g]
        axes[4].scatter(xs, [r["failed"] / r["samples"] for r in g], color=colors(k), label=gname, s=28)
        for x, r in zip(xs, g):
            axes[4].annotate(f"N={r['n']} {r['subset']}", (x, r["failed"] / r["samples"]),
                             fontsize=6, xytext=(3, 3), textcoords="offset points")
    axes[4].axvline(1.0, color="k", lw=0.6)
    axes[4].set_xlabel("image gain c(x, sigma) on its training images, max over sigma = 0.5, 1")
    axes[4].set_ylabel("fraction of samples that failed")
    axes[4].set_title("every network: image gain at large noise vs failures", fontsize=9)
    axes[4].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _command() -> str:
    import sys

    return "python " + " ".join(sys.argv)


if __name__ == "__main__":
    main()
