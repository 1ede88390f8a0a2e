"""Sample-based measures of the transition study (paper section 6.2, Fig 2), from converged samples only.

* :func:`_fig2_summary`: the paired cosine and the nearest-training cosine, and the paired
  difference "paired cosine - nearest-training cosine" with its bootstrap interval (the two
  networks make the same sample, closer to each other than to any training image);
* :func:`_copies`: the calibrated copy test of :mod:`gahb.analysis.copies` per network;
* :func:`measure_n`: every number of one N, both networks: curves and gaps, paired samples, the
  copy test, the distance to the empirical denoiser, patch collages;
* :func:`_train_cross_reference`: how similar an S1 training image is to its nearest S2 image, the
  reference for what "the same image" means between two training sets.
"""

from __future__ import annotations

from typing import Any

import torch

from gahb.analysis.copies import copy_fraction, copy_ratio, copy_references, is_copy
from gahb.analysis.uncertainty import bootstrap_interval, fraction_interval, paired_difference_interval


def _median(v: torch.Tensor) -> torch.Tensor:
    return v.median(-1).values


def _aligned(ok, search) -> tuple[list, list]:
    """Per-sample nearest-training (cosine, index) lists with None where a sample failed; ``search``
    runs the search over the converged samples only."""
    vals, idx = [None] * len(ok), [None] * len(ok)
    if ok.any():
        v, i = search()
        for j, a, b in zip(ok.nonzero().squeeze(1).tolist(), v.tolist(), i.tolist()):
            vals[j], idx[j] = float(a), int(b)
    return vals, idx


def _fig2_summary(s1, s2, status1, status2, nearest, n: int, keep_paired: bool = False) -> dict:
    """The paper's two Fig 2 measures from converged samples only, with what failed.

    Paired cosines use the seeds where both networks' samples converged; nearest-training cosines
    every converged sample of either network (``nearest``: per-sample values, the S1 samples then
    the S2 samples, None for a failure). ``paired_minus_nearest``: per seed where both converged,
    the paired cosine minus the mean of its two samples' nearest-training cosines, averaged, with
    its bootstrap interval over seeds.
    """
    from gahb.analysis.memorization import memorization_summary, paired_cosine

    both = torch.tensor([a == "converged" and b == "converged" for a, b in zip(status1, status2)])
    near = [v for v in nearest if v is not None]
    pair = paired_cosine(s1[both], s2[both]) if both.any() else None
    summary = memorization_summary(paired=pair, nearest_train=torch.tensor(near, dtype=torch.float64) if near else None,
                                   n_train=n).to_dict() if pair is not None or near else \
        {"n_train": n, "paired": None, "nearest_train": None}
    out = {"summary": summary,
           "failures": {"pairs": len(status1), "pairs_failed": int((~both).sum()),
                        "samples": len(nearest), "samples_failed": len(nearest) - len(near)}}
    if pair is not None:
        b = len(status1)
        own = torch.tensor([(nearest[i] + nearest[b + i]) / 2 for i in both.nonzero().squeeze(1).tolist()],
                           dtype=torch.float64)
        out["summary"]["paired_minus_nearest"] = paired_difference_interval(pair, own).to_dict()
    else:
        out["summary"]["paired_minus_nearest"] = None
    if keep_paired:
        out["paired"] = [] if pair is None else [float(v) for v in pair]
        return out
    return {**out["summary"], "failures": out["failures"]}


def _copies(cfg, samples: torch.Tensor, train, held_out: torch.Tensor) -> dict:
    """One network's copy test: the distance ratio of each converged sample and of the calibration
    sets (per-sample lists stay in the per-N cache; results.json keeps the summaries)."""
    refs = copy_references(train, held_out, copies=cfg.reference_images, seed=cfg.sample_seed)
    ratio = _ratio(samples, train, refs.reference_distance)
    return {"ratio": ratio, "held_out_ratio": refs.held_out_ratio.tolist(),
            "calibration": refs.summary(cfg.copy_ratio, seed=cfg.sample_seed)}


def _ratio(samples: torch.Tensor, train, reference: float | None) -> list[float]:
    """The copy ratios of (converged) samples, [] when there are none."""
    return copy_ratio(samples, train, reference=reference).tolist() if len(samples) else []


def _other_ratio(res, train, copies: dict) -> list[float]:
    """Distance ratios of another sampler's converged samples (``res``: a sampling result), with
    the reference distance of the main sampler's calibration (``copies``)."""
    return _ratio(res.samples[res.converged], train, copies["calibration"]["reference_distance"])


def _copy_summary(cfg, subsets: list[dict]) -> dict | None:
    """The copy fraction of the converged samples of both networks of one N, with its interval, and
    its difference to the held-out images' (each measured against its own network's set)."""
    ratio = [r for s in subsets for r in s["copies"]["ratio"]]
    held = [r for s in subsets for r in s["copies"]["held_out_ratio"]]
    if not ratio:
        return None
    cf = copy_fraction(ratio, held, cfg.copy_ratio, seed=cfg.sample_seed)
    return {"samples": cf["fraction"].to_dict(), "minus_held_out": cf["minus_held_out"].to_dict(),
            "held_out": fraction_interval(is_copy(torch.tensor(held, dtype=torch.float64), cfg.copy_ratio),
                                          seed=cfg.sample_seed).to_dict(),
            "true_copies": [s["copies"]["calibration"]["true_copies"] for s in subsets]}


def _train_cross_reference(train_1, train_2, images: int, seed: int = 0) -> dict:
    """Cosine of S1 training images (the first ``images``) to their nearest S2 training image:
    median with its bootstrap interval (Fig 2's reference: two different real images' similarity)."""
    from gahb.analysis.memorization import nearest_train_cosine

    q = torch.as_tensor(train_1[: images])
    v, _ = nearest_train_cosine(q, train_2)
    return bootstrap_interval(v, _median, seed=seed).to_dict()


def measure_n(cfg, n: int, nets: dict, splits: dict, progress: bool) -> tuple[dict, dict, dict]:
    """Every number of one N, both subsets (see :mod:`gahb.studies.transition`); with the samples and
    their status for the sample grid."""
    from gahb.analysis.memorization import (denoising_curve, distance_to_empirical, nearest_train_cosine,
                                            paired_psnr_gap, psnr_gap, unpaired_gap_se)
    from gahb.analysis.patches import classify_patches, patch_matches
    from gahb.sampling import sample
    from gahb.sampling.diagnostics import saturation

    shape = tuple(splits["s1"].train.shape[1:])
    test = splits["s1"].test
    out: dict[str, Any] = {"n": n, "subsets": {}}
    samples, status = {}, {}
    for subset in ("s1", "s2"):
        net, split = nets[subset], splits[subset]
        train_imgs = split.train[: cfg.curve_images]
        other = nets["s2" if subset == "s1" else "s1"]
        curves = {
            "train": denoising_curve(net, train_imgs, cfg.input_psnrs, seed=cfg.sample_seed, progress=progress),
            "test": denoising_curve(net, test[: cfg.curve_images], cfg.input_psnrs, seed=cfg.sample_seed,
                                    progress=progress),
            # the other network on these training images, same noise: the paired gap's reference
            "cross": denoising_curve(other, train_imgs, cfg.input_psnrs, seed=cfg.sample_seed, progress=progress),
        }
        res = sample(net, (cfg.n_samples,) + shape, cfg.sample_seed, cfg.sampler, progress=progress)
        samples[subset], status[subset] = res.samples, res.status
        ok = res.converged  # failed samples never enter a statistic (they are counted instead)
        nt_val, nt_idx = _aligned(ok, lambda: nearest_train_cosine(res.samples[ok], split.train, progress=progress))
        emp = {
            "train": distance_to_empirical(net, split.train, split.train[: cfg.emp_images], cfg.emp_sigmas,
                                           seed=cfg.sample_seed, progress=progress),
            "test": distance_to_empirical(net, split.train, test[: cfg.emp_images], cfg.emp_sigmas,
                                          seed=cfg.sample_seed, progress=progress),
        }
        copies = _copies(cfg, res.samples[ok], split.train, test[: cfg.reference_images])
        patch = cfg.patch if cfg.patch <= min(shape[1:]) else min(shape[1:])
        pc = classify_patches(patch_matches(res.samples[ok], split.train, patch=patch)).to_dict() if ok.any() \
            else {"n": 0, "counts": {}, "fraction_copy": None, "fraction_collage": None, "mean_n_sources": None}
        out["subsets"][subset] = {
            "curves": curves,
            "psnr_gap_db": psnr_gap(curves["train"], curves["test"]),
            "psnr_gap_se_db": unpaired_gap_se(curves["train"], curves["test"]),
            "nearest_train": nt_val,  # per sample; None for a sample that failed
            "nearest_index": nt_idx,
            "sampler_evaluations_mean": float(res.evaluations.double().mean()),
            "sampler_failures": int((~ok).sum()),
            "sampler_status": {k: res.status.count(k) for k in sorted(set(res.status))},
            "saturation": {"converged_samples": saturation(res.samples[ok]) if ok.any() else None,
                           "training_images": saturation(split.train[: cfg.n_samples])},
            "distance_to_empirical": emp,
            "copies": copies,
            "patches": {k: pc[k] for k in ("n", "counts", "fraction_copy", "fraction_collage", "mean_n_sources")},
        }
    out["other_samplers"] = {}
    for name in cfg.other_samplers:
        other = {s: sample(nets[s], (cfg.n_samples,) + shape, cfg.sample_seed, name, progress=progress)
                 for s in ("s1", "s2")}
        nt_other = [v for s in ("s1", "s2") for v in _aligned(
            other[s].converged, lambda s=s: nearest_train_cosine(other[s].samples[other[s].converged],
                                                                 splits[s].train))[0]]
        out["other_samplers"][name] = _fig2_summary(other["s1"].samples, other["s2"].samples, other["s1"].status,
                                                    other["s2"].status, nt_other, n)
        # the copy test of these samples, calibrated by the same held-out images as the main sampler's
        out["other_samplers"][name]["copies"] = _copy_summary(cfg, [
            {"copies": {**out["subsets"][s]["copies"], "ratio": _other_ratio(other[s], splits[s].train,
                                                                            out["subsets"][s]["copies"])}}
            for s in ("s1", "s2")])
    out.update(_fig2_summary(samples["s1"], samples["s2"], status["s1"], status["s2"],
                             out["subsets"]["s1"]["nearest_train"] + out["subsets"]["s2"]["nearest_train"], n,
                             keep_paired=True))
    sub = out["subsets"]
    out["copies"] = _copy_summary(cfg, [sub["s1"], sub["s2"]])
    out["train_cross_reference"] = _train_cross_reference(splits["s1"].train, splits["s2"].train,
                                                          cfg.reference_images, seed=cfg.sample_seed)
    out["psnr_gap_db"] = 0.5 * (sub["s1"]["psnr_gap_db"] + sub["s2"]["psnr_gap_db"])
    out["psnr_gap_se_db"] = 0.5 * (sub["s1"]["psnr_gap_se_db"] ** 2 + sub["s2"]["psnr_gap_se_db"] ** 2) ** 0.5
    out["psnr_gap_paired"] = paired_psnr_gap(sub["s1"]["curves"]["train"], sub["s1"]["curves"]["cross"],
                                             sub["s2"]["curves"]["train"], sub["s2"]["curves"]["cross"])
    return out, samples, status
