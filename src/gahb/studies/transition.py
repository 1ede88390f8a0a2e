"""The memorization -> generalization transition as the training set grows (paper section 6).

For every N in ``Config.ns`` two denoisers are trained on the disjoint sets S1(N) and S2(N) of one
deduplicated pool (section 6.2), then:

* train and test denoising curves on the paper's grid of input PSNRs (Fig 1) and the train - test
  PSNR gap averaged over sigma as a function of N (Fig 15);
* paired sampling: the same seeds through both networks (Algorithm 1), the cosine between the
  paired samples and between each sample and its nearest image of its own training set, exact
  search (Fig 2), with sample grids showing the nearest training images;
* the distance between each network and the closed-form empirical (memorising) denoiser of its own
  training set, per sigma (the posterior mean under the training set's empirical distribution, the
  optimum of eq. 4 on a finite set): memorising networks track it, generalising ones leave it;
* the patch-collage analysis of the samples (copies vs collages of training patches,
  as the paper describes for LSUN bedrooms at N = 100);
* sample quality (``Config.quality``): the Frechet distance of the converged samples to held-out test
  images in the feature space of a small garment classifier, and the classifier's confidence, beside
  the same measure of new real images, blurred images and noise (:mod:`gahb.studies._transition_quality`).

Sampler: the paper's Fig 2 uses its stochastic sampler (Algorithm 1, beta = 0.1), the default here;
Figs 13-14 use the deterministic one (beta = 1). Both Fig 2 claims are judged with every sampler
the study runs (``other_samplers``: the deterministic one and beta = 0.2, on the same seeds).
Whether one sampler shows both sides of the transition depends on how well the two large-N networks
agree: injected noise amplifies their differences into diverging trajectories (the bifurcations of
the paper's Fig 8), while beta = 1 turns imperfect memorisers' samples into blends
(docs/results/transition/README.md records the sampler probes and the recipe that made the networks agree).

Train - test gap: besides the paper's estimate (training images vs held-out test images) the study
reports a paired one (each training image denoised by its own network and by the other network,
for which it is held out; :func:`gahb.analysis.memorization.paired_psnr_gap`), with standard errors.
The claim is judged on the paired estimate: at large N the unpaired one's standard error, which
comes from the image-to-image spread of PSNR, is larger than the gap it estimates.

Trained runs live under ``runs_dir/N{N}_{s1|s2}`` and per-N measurements under
``out_dir/per_n/N{N}.json``; both are reused when the study is run again, and an interrupted
training run resumes from its last checkpoint. The trainings are independent: ``executor`` sends them to
local subprocesses or SLURM jobs (:mod:`gahb.studies.sweeps`) before the measurements begin.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gahb.studies._transition_claims import judge, median
from gahb.studies._transition_measures import measure_n
from gahb.studies._transition_figures import draw
from gahb.studies.common import config_to_dict, run_phases, train_or_reuse, training_seconds
from gahb.studies.common import runs_dir as study_runs_dir
from gahb.training.recipe import Recipe
from gahb.utils.config import added, before_values, runtime, same_result_config

NAME = "transition"
GRID_PSNRS = tuple(float(p) for p in range(0, 43, 3))  # the paper's 0-42 dB axis (Fig 1)


@dataclass(frozen=True)
class Config:
    """Everything the transition study computes from.

    ``ns``: training-set sizes; ``"max"`` is the largest disjoint half of the pool. The two networks
    of one N differ in their training set *and* their initialisation (seeds ``seed`` and
    ``seed + 1``), so their agreement is not inherited from a shared starting point.
    """

    dataset: str = "fashion-mnist"
    ns: tuple = (1, 10, 100, 1000, 10_000, "max")
    split_seed: int = 0
    cache_dir: str | None = runtime(None)  # prepared-dataset cache (default ~/.cache/gahb/datasets)
    # How each network trains (gahb.training.recipe). ``steps`` None: ``epochs`` tiled epochs (an epoch is at
    # least the whole set, so large N train longer, as in the paper); a number: that many optimizer steps
    # for every network, raised to ``min_epochs`` passes over N images. The loss is the paper's (eq. 4);
    # at a small budget it can leave networks amplifying clean images, whose samples then diverge, and
    # the quick preset's variant "eps-small" prevents it (docs/divergence.md).
    train: Recipe = Recipe(train_preset="quick", epochs=6, images_per_epoch=5000, lr_halve_every=2)
    seed: int = 0
    input_psnrs: tuple = GRID_PSNRS
    curve_images: int = 256  # train and test images per denoising curve
    n_samples: int = 256  # paired samples per N
    # sampler preset or spec (gahb.sampling.parse_spec) for the paired measure and the grids; see
    # the module docstring
    sampler: str = "paper"
    other_samplers: tuple = ("deterministic", "paper:beta=0.2")  # paired measure repeated with these
    sample_seed: int = 0
    emp_images: int = 64  # images (train and test each) for the distance to f_emp
    emp_sigmas: tuple = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
    patch: int = 14
    grid_samples: int = 8  # samples per N shown in the sample grid
    copy_threshold: float = 0.95  # the paper-style cosine measure, reported beside the calibrated one
    # The calibrated copy test (gahb.analysis.copies): a sample is a copy when d1/d2 < copy_ratio.
    # Targets, set before results were read: N <= 10 gives at least copy_fraction_min copies; at the
    # largest N the samples are no more often copies than held-out images (interval's upper bound <= 0).
    copy_ratio: float = 1 / 3
    copy_fraction_min: float = 0.9
    reference_images: int = 256  # held-out images and noisy training copies calibrating the copy test
    # Sample quality (gahb.analysis.quality): the classifier preset ("standard", "tiny") or "off". Needs
    # class labels (Fashion-MNIST's); results written before it existed measured none.
    quality: str = added("standard", before="off")
    runs_dir: str | None = runtime(None)  # default: OUT/runs
    device: str = "cpu"
    threads: int | None = runtime(None)
    # Where the 2 x len(ns) independent trainings run: "inline" (here, one after another), "local" or
    # "slurm" with options, e.g. "slurm:partition=gpu,gpus_per_job=1,timeout_min=240" (gahb.studies.sweeps)
    executor: str = runtime("inline")

    def validate(self) -> None:
        from gahb.studies.sweeps import parse_executor

        parse_executor(self.executor)
        if not self.ns:
            raise ValueError("ns is empty")
        for n in self.ns:
            if n != "max" and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
                raise ValueError(f"ns entries must be positive integers or 'max', got {n!r}")
        for name in ("curve_images", "n_samples", "emp_images", "grid_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.reference_images < 1:
            raise ValueError("reference_images must be >= 1")
        if not 0 < self.copy_ratio < 1:
            raise ValueError(f"copy_ratio must lie in (0, 1), got {self.copy_ratio}")
        if self.grid_samples > self.n_samples:
            raise ValueError("grid_samples cannot exceed n_samples")
        from gahb.analysis.classifier import CLASSIFIERS

        if self.quality != "off" and self.quality not in CLASSIFIERS:
            raise ValueError(f"quality must be 'off' or a classifier preset ({', '.join(CLASSIFIERS)}), "
                             f"got {self.quality!r}")


# the value results written before a field existed had (reproduce reuses them only for that value)
LEGACY_VALUES = before_values(Config)

PRESETS: dict[str, Config] = {
    # Seconds: the test suite. Tiny net, three sizes on the built-in pool.
    "test": Config(ns=(1, 4, 16), train=Config().train.but(model="unet-tiny", epochs=1, images_per_epoch=64, batch_size=16),
                   input_psnrs=(0.0, 12.0, 24.0), curve_images=8, n_samples=8, other_samplers=("fast",),
                   emp_images=4, emp_sigmas=(0.1, 0.5), grid_samples=4, reference_images=8, quality="tiny"),
    # Minutes on a CPU: part of `gahb reproduce --preset quick`. A variant of the paper's recipe: the lr
    # halved 4 times over the 200 steps and the eps-small loss weight, without which these briefly
    # trained networks lost most of their samples to divergence (docs/divergence.md); unet-tiny so
    # that the main job stays within 10 minutes on 2 cores.
    "quick": Config(ns=(1, 10, 1000, "max"),
                    train=Config().train.but(model="unet-tiny", steps=200, images_per_epoch=2500,
                                             lr_halve_every=1.25, loss_weight="eps-small"),
                    input_psnrs=tuple(float(p) for p in range(0, 43, 6)), curve_images=64,
                    n_samples=64, other_samplers=(), emp_images=16, emp_sigmas=(0.05, 0.2, 0.5)),
    # The acceptance run: within 90 minutes on 2 CPU cores. Every network gets at least 1000 steps
    # and 4 passes over its images (the N = 34,475 pair: 2,155 steps), the lr halved at each
    # quarter of the run (1e-3 -> 1.25e-4); docs/results/transition/README.md says why.
    "standard": Config(train=Config().train.but(steps=1000, images_per_epoch=16_000, lr_halve_every=1,
                                                min_epochs=4)),
    # The paper's recipe (UNet with 3 blocks on 80x80 images, 1000 epochs): for a GPU.
    "paper": Config(dataset="celeba", ns=(1, 10, 100, 1000, 10_000, 100_000),
                    train=Recipe(train_preset="paper", model="unet-80", epochs=1000, images_per_epoch=250_000,
                                 lr_halve_every=100, batch_size=512, eval_images=512),
                    curve_images=512, n_samples=1024, emp_images=256, device="auto",
                quality="off"),  # CelebA has no garment labels
}


def _n_key(n: int) -> str:
    return str(int(n))


def _resolve_ns(cfg: Config, max_n: int) -> list[int]:
    ns = []
    for n in cfg.ns:
        v = max_n if n == "max" else int(n)
        if v > max_n:
            raise ValueError(f"N = {v} exceeds the largest disjoint half of the {cfg.dataset} pool ({max_n})")
        if v not in ns:
            ns.append(v)
    return sorted(ns)


def _budget(cfg: Config, n: int) -> tuple[int | None, int]:
    """(steps, images_per_epoch) of the networks of size N (:meth:`gahb.training.recipe.Recipe.budget`)."""
    return cfg.train.budget(n)


def _train_config(cfg: Config, subset: str, n: int):
    """The TrainConfig of the network of N images on ``subset``: seed ``seed`` for S1, ``seed + 1`` for S2."""
    return cfg.train.train_config(n, seed=cfg.seed + (0 if subset == "s1" else 1), device=cfg.device)


# Fields one N's measurement does not depend on, besides the runtime ones: the other sizes, the device
# (the same numbers up to rounding), the sample grid (a figure only), min_epochs (replaced by N's own
# effective budget below) and the quality (cached apart, keyed by this key: _transition_quality).
PER_N_INDEPENDENT = frozenset({"ns", "device", "grid_samples", "min_epochs", "quality"})


def training_jobs(cfg: Config, runs_dir: Path, ns: list[int]) -> list:
    """The study's trainings as scheduler jobs (:class:`gahb.studies.sweeps.TrainJob`), S1 and S2 of every N."""
    from gahb.studies.sweeps import TrainJob

    return [TrainJob(run_dir=str(runs_dir / f"N{n}_{s}"), train=_train_config(cfg, s, n).to_dict(), threads=cfg.threads,
                     data_args={"dataset": cfg.dataset, "n": n, "subset": s, "seed": cfg.split_seed,
                                "cache_dir": cfg.cache_dir})
            for n in ns for s in ("s1", "s2")]


def _measure_config(cfg: Config, n: int) -> dict:
    """The settings a cached measurement of N depends on, with N's effective training budget."""
    from gahb.utils.config import comparable, flat, runtime_fields

    d = comparable(flat(config_to_dict(cfg)), runtime_fields(Config) | PER_N_INDEPENDENT)
    d["steps"], d["images_per_epoch"] = _budget(cfg, n)
    if d.get("steps") is None:  # added later; keeps earlier caches valid
        d.pop("steps", None)
    # Measurements before this counted samples that diverged; they are not reused.
    d["failed_samples"] = "excluded"
    return d


def run(config: Config, out_dir, *, progress: bool = True, preset: str | None = None) -> dict:
    """Run the transition study into ``out_dir`` (see the module docstring); returns the results dict."""
    config.validate()
    return run_phases(NAME, config, out_dir, preset, measure=measure, progress=progress,
                      draw=lambda cfg, numbers, drawn, out: draw(cfg, numbers["ns"], drawn["per_n"], drawn["grid"], out,
                                                                 quality=numbers.get("quality")),
                      claims_of=lambda cfg, numbers: judge({"config": config_to_dict(cfg), "numbers": numbers}))


def measure(cfg: Config, out: Path, watch, progress: bool = True) -> tuple[dict, dict]:
    """Train (or reuse) both networks of every N and measure each N (cached in ``out/per_n``).

    Returns the JSON-able numbers and, for the figures, every N's full numbers (``per_n``, with the
    per-sample values the histograms draw) and the sample grid (samples, status, nearest training images).
    """
    import torch

    from gahb.data.datasets import load_pool, load_split
    from gahb.sampling import sample
    from gahb.studies import _transition_quality as quality
    from gahb.utils.io import atomic_write_json, read_json

    (out / "per_n").mkdir(parents=True, exist_ok=True)
    runs_dir = study_runs_dir(cfg, out)
    pool = load_pool(cfg.dataset, cache_dir=cfg.cache_dir, progress=progress)
    probe = load_split(cfg.dataset, n=1, subset="s1", seed=cfg.split_seed, pool=pool, progress=False)
    max_n = int(probe.info["max_n"])
    ns = _resolve_ns(cfg, max_n)
    watch.lap("data")
    if cfg.executor != "inline":  # train every network as a scheduler job first; the loop below reuses them
        from gahb.studies.sweeps import run_jobs

        run_jobs(training_jobs(cfg, runs_dir, ns), cfg.executor, progress=progress)
        watch.lap("training")
    qctx = quality.prepare(cfg, pool, progress)
    quality_per_n: dict[int, dict] = {}
    watch.lap("quality")

    per_n: dict[int, dict] = {}
    grid: dict[str, dict[int, Any]] = {"samples": {}, "status": {}, "nearest": {}}
    runs: dict[str, dict] = {}
    for i, n in enumerate(ns):
        if progress:
            print(f"[transition] N = {n} ({i + 1}/{len(ns)})", flush=True)
        splits = {s: load_split(cfg.dataset, n=n, subset=s, seed=cfg.split_seed, pool=pool, progress=False)
                  for s in ("s1", "s2")}
        nets = {}
        for s in ("s1", "s2"):
            run_dir = runs_dir / f"N{n}_{s}"
            nets[s] = train_or_reuse(_train_config(cfg, s, n), splits[s].train, splits[s].test, run_dir,
                                     progress=progress, data_info=splits[s].info, weights=cfg.train.weights)
            nets[s].requires_grad_(False)
        runs[_n_key(n)] = {s: str(runs_dir / f"N{n}_{s}") for s in ("s1", "s2")}
        watch.lap("training")
        cache = out / "per_n" / f"N{n}.json"
        cached = read_json(cache) if cache.is_file() else None
        measure_key = _measure_config(cfg, n)
        qpath = out / "per_n" / f"N{n}_quality.json"
        qkey = quality.cache_key(cfg, qctx, measure_key) if quality.usable(qctx) else None
        quality_numbers = quality.cached(qpath, qkey)
        samples = status = None
        # the one validity rule (gahb.utils.config): equal settings, a setting added since only at its old value
        if cached is not None and same_result_config(cached.get("key"), measure_key, before=LEGACY_VALUES):
            per_n[n] = cached["numbers"]
            # Samples are cheap to redraw only if needed for the grid, or for a quality not cached yet:
            # recompute them (seeded per sample, exact).
            count = cfg.n_samples if qkey is not None and quality_numbers is None else cfg.grid_samples
            shape = (count,) + tuple(splits["s1"].train.shape[1:])
            with torch.no_grad():
                drawn = {s: sample(nets[s], shape, cfg.sample_seed, cfg.sampler, progress=False) for s in ("s1", "s2")}
            samples, status = {s: r.samples for s, r in drawn.items()}, {s: r.status for s, r in drawn.items()}
            grid["samples"][n] = {s: v[: cfg.grid_samples] for s, v in samples.items()}
            grid["status"][n] = {s: v[: cfg.grid_samples] for s, v in status.items()}
        else:
            t_measure = time.perf_counter()
            with torch.no_grad():
                numbers, samples, status = measure_n(cfg, n, nets, splits, progress)
            numbers["measure_seconds"] = round(time.perf_counter() - t_measure, 2)
            atomic_write_json(cache, {"key": measure_key, "numbers": numbers})
            per_n[n] = numbers
            grid["samples"][n] = {s: v[: cfg.grid_samples] for s, v in samples.items()}
            grid["status"][n] = {s: v[: cfg.grid_samples] for s, v in status.items()}
        if qkey is not None:
            if quality_numbers is None:
                quality_numbers = quality.measure(cfg, qctx, samples, status)
                atomic_write_json(qpath, {"key": qkey, "numbers": quality_numbers})
            quality_per_n[n] = quality_numbers
        near_idx = per_n[n]["subsets"]["s1"]["nearest_index"][: cfg.grid_samples]
        # a failed sample has no nearest training image: a blank cell
        grid["nearest"][n] = torch.stack([splits["s1"].train[i] if i is not None else torch.zeros_like(splits["s1"].train[0])
                                          for i in near_idx])
        watch.lap("measurement")

    numbers = {
        "ns": ns, "max_n": max_n, "pool_size": int(probe.info["pool_size"]),
        "image_shape": list(probe.info["image_shape"]),
        "psnr_gap_db": {_n_key(n): per_n[n]["psnr_gap_db"] for n in ns},
        "psnr_gap_se_db": {_n_key(n): per_n[n]["psnr_gap_se_db"] for n in ns},
        "psnr_gap_paired_db": {_n_key(n): per_n[n]["psnr_gap_paired"]["gap_db"] for n in ns},
        "psnr_gap_paired_se_db": {_n_key(n): per_n[n]["psnr_gap_paired"]["se_db"] for n in ns},
        "median_paired_cosine": {_n_key(n): median(per_n[n]["summary"]["paired"]) for n in ns},
        "median_nearest_train_cosine": {_n_key(n): median(per_n[n]["summary"]["nearest_train"]) for n in ns},
        "sampler_failures": {_n_key(n): {**per_n[n]["failures"], **{s: per_n[n]["subsets"][s]["sampler_status"]
                                                                     for s in ("s1", "s2")}} for n in ns},
        "per_n": {_n_key(n): _trim(per_n[n]) for n in ns},
        "runs": runs,
        "quality": quality.numbers(qctx, quality_per_n),
    }
    numbers["compute_s"] = _compute_seconds(runs, per_n, ns, quality.seconds(numbers["quality"]))
    return numbers, {"per_n": per_n, "grid": grid}


def _compute_seconds(runs: dict, per_n: dict, ns: list[int], quality_s: float = 0.0) -> dict:
    """Seconds the study's results cost, summed over sessions: training (from each run's
    config.json, resumes included), per-N measurement (from the per-N cache) and the sample quality
    (its classifier's training, from its manifest, the references and the per-N quality caches).
    Unlike ``wall_time_s`` this does not shrink when a rerun reuses finished parts."""
    train_s = training_seconds([p for n in ns for p in runs[_n_key(n)].values()])
    measured = [per_n[n].get("measure_seconds") for n in ns]
    measure_s = float(sum(m for m in measured if m is not None))
    return {"training": round(train_s, 1), "measurement": round(measure_s, 1), "quality": round(quality_s, 1),
            "measurement_missing_for": [n for n, m in zip(ns, measured) if m is None],
            "total": round(train_s + measure_s + quality_s, 1)}


def _trim(per_n: dict) -> dict:
    """Per-N numbers for results.json: summaries instead of every per-sample value."""
    d = {k: v for k, v in per_n.items() if k != "paired"}
    d["subsets"] = {s: {k: v for k, v in sub.items() if k not in ("nearest_train", "nearest_index")}
                    for s, sub in per_n["subsets"].items()}
    for sub in d["subsets"].values():  # per-image values stay in the per-N cache
        if "copies" in sub:
            sub["copies"] = {k: v for k, v in sub["copies"].items() if k not in ("ratio", "held_out_ratio")}
        sub["curves"] = {k: {f: x for f, x in c.items() if f != "image_mean_psnr"} for k, c in sub["curves"].items()}
    return d


__all__ = ["Config", "PRESETS", "draw", "judge", "measure", "run"]
