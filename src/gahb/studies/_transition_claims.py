"""The transition study's claims (paper section 6, Figs 1, 2 and 15), judged from its per-N numbers.

Every Fig 2 claim is judged on converged samples only; its row carries how many of its inputs
failed, and a row with more than ``MAX_FAILED_FRACTION`` of them failed is "invalid"
(:func:`gahb.studies.common.claim`).
"""

from __future__ import annotations

from gahb.analysis.uncertainty import decrease_to_zero
from gahb.studies.common import claim, label_variant

# A trained network loses at most this fraction of its samples to the sampler's failure flags.
MAX_NETWORK_FAILURES = 0.05


def median(d: dict | None) -> float | None:
    """The rounded median of a similarity summary (None when nothing converged)."""
    return None if d is None else round(d["median"], 4)


def judge(results: dict) -> list[dict]:
    """The claims of a transition study from its ``results.json`` alone (re-judging without re-running)."""
    from gahb.studies.common import config_from_dict
    from gahb.studies.transition import Config

    cfg = config_from_dict(Config, results["config"])
    numbers = results["numbers"]
    per_n = {int(k): v for k, v in numbers["per_n"].items()}
    return label_variant(transition_claims(cfg, [int(n) for n in numbers["ns"]], per_n, numbers.get("quality")),
                         results["config"])


def transition_claims(cfg, ns: list[int], per_n: dict[int, dict], quality: dict | None = None) -> list[dict]:
    """The claim rows of one transition study (``cfg``: its Config; ``per_n``: numbers per N;
    ``quality``: ``numbers["quality"]``, None when not measured)."""
    claims = []
    gaps = {n: per_n[n]["psnr_gap_db"] for n in ns}
    paired_gaps = {n: per_n[n]["psnr_gap_paired"]["gap_db"] for n in ns}
    small = [n for n in ns if n <= 10]
    n_big = ns[-1]
    # Both Fig 2 measures are judged with every sampler the study ran, the main one first: which
    # sampler shows which side of the transition is part of the result (see the module docstring).
    samplers = [cfg.sampler] + [s_ for s_ in cfg.other_samplers if s_ != cfg.sampler]

    def fig2(n: int, name: str) -> dict:
        if name == cfg.sampler:
            return {**per_n[n]["summary"], "failures": per_n[n]["failures"], "copies": per_n[n].get("copies")}
        return per_n[n]["other_samplers"][name]

    for name in samplers:
        for n in small:
            f2 = fig2(n, name)
            inputs = {"failed": f2["failures"]["samples_failed"], "inputs": f2["failures"]["samples"]}
            cp = f2.get("copies")
            frac = None if cp is None else cp["samples"]["estimate"]
            claims.append(claim(
                f"N = {n}, sampler '{name}': samples are copies of training images",
                "N <= 100 reproduces training images (Fig 2)",
                None if cp is None else f"copy fraction {_iv(cp['samples'])}; held-out images "
                f"{_iv(cp['held_out'])}, noisy training copies {_iv_list(cp['true_copies'])}",
                None if frac is None else frac >= cfg.copy_fraction_min,
                f"copy fraction (d1/d2 < {cfg.copy_ratio:.3g}) >= {cfg.copy_fraction_min}",
                "calibrated copy test (gahb.analysis.copies); 95% bootstrap intervals; converged samples only",
                why="" if frac is None else f"only {frac:.0%} of the samples are copies",
                reference="held-out images (new) and training images + noise 0.02 (copies), same test",
                uncertainty="" if cp is None else f"95% bootstrap interval over the samples {_ci(cp['samples'])}",
                **inputs))
            claims.append(claim(
                f"N = {n}, sampler '{name}': nearest-training cosine (the paper's measure)",
                "Fig 2, orange", _med_iv(f2["nearest_train"]), None,
                detail="not judged: new images of this dataset also lie near 0.95 (the reference row below)",
                **inputs))
        f2 = fig2(n_big, name)
        cp = f2.get("copies")
        diff = None if cp is None else cp["minus_held_out"]
        claims.append(claim(
            f"N = {n_big}, sampler '{name}': samples are not copies of training images",
            "at N = 1e5 samples differ from training images (Fig 2)",
            None if cp is None else f"copy fraction {_iv(cp['samples'])} - held-out images' "
            f"{_iv(cp['held_out'])} = {_iv(diff)}",
            None if diff is None else diff["hi"] <= 0,
            "upper end of the interval of (samples' - held-out images' copy fraction) <= 0",
            "calibrated copy test; converged samples only",
            why="" if diff is None else f"samples are copies more often than held-out images (up to {diff['hi']:+.2f})",
            reference="held-out images against the same training sets",
            uncertainty="" if diff is None else f"95% bootstrap interval of the difference {_ci(diff)}",
            failed=f2["failures"]["samples_failed"], inputs=f2["failures"]["samples"]))
        pmn = f2.get("paired_minus_nearest")
        claims.append(claim(
            f"N = {n_big}, sampler '{name}': the two networks generate the same samples, closer to each other "
            "than to their training images",
            "at N = 1e5 paired samples are nearly identical and differ from training images (Fig 2)",
            None if pmn is None else f"paired - nearest-training cosine {_iv(pmn)} (paired median "
            f"{median(f2['paired'])}, nearest median {median(f2['nearest_train'])})",
            None if pmn is None else pmn["lo"] > 0,
            "95% interval of the mean paired difference above 0",
            "per seed where both networks' samples converged: paired cosine minus its samples' mean "
            "nearest-training cosine",
            why="" if pmn is None else f"the paired samples are not closer to each other than to training images "
                                        f"(interval from {pmn['lo']:+.3f})",
            reference="each sample's nearest training image (and the S1-S2 training reference row)",
            uncertainty="" if pmn is None else f"95% paired bootstrap interval over seeds {_ci(pmn)}",
            failed=f2["failures"]["pairs_failed"], inputs=f2["failures"]["pairs"]))
    ref = per_n[n_big].get("train_cross_reference")
    if ref is not None:
        claims.append(claim(
            f"reference: an S1 training image against its nearest S2 training image (N = {n_big})",
            "how similar two different real images of the dataset are",
            f"median cosine {_iv(ref)}", None,
            detail="the cosine a new image has to the nearest image of a large training set"))
    # Judged on the paired estimate: the unpaired one carries the spread between two image sets
    # (its standard error, reported beside it, exceeds the gap itself at large N).
    ses = [per_n[n]["psnr_gap_paired"]["se_db"] for n in ns]
    k = decrease_to_zero([paired_gaps[n] for n in ns], ses)
    claims.append(claim("the train - test PSNR gap decreases as N grows, to zero",
                        "gap falls towards 0 as N grows (Figs 1, 15)",
                        ", ".join(f"N = {n}: {_pm(paired_gaps[n], se)} dB" for n, se in zip(ns, ses))
                        + ("" if k is None else f"; falls up to N = {ns[k]}"),
                        k is not None,
                        "each step down by more than 2 standard errors up to some N, within 2 standard "
                        "errors of 0 beyond it", "paired gap (own network - other network on the same images)",
                        why="no step of N lowers the gap by 2 standard errors with the gap at 0 beyond it",
                        reference="zero gap, within 2 standard errors",
                        uncertainty="standard error of each paired gap over its images (+- above)"))
    claims.append(claim("unpaired train - test gap (training images vs test images)",
                        "the paper's Fig 15 measure",
                        {str(n): _pm(gaps[n], per_n[n]["psnr_gap_se_db"]) for n in ns}, None,
                        detail="dB, +- standard error from the per-image spread of the two image sets"))
    claims.append(claim("paired-sample similarity rises with N", "blue histograms move towards 1 (Fig 2)",
                        {str(n): median(per_n[n]["summary"]["paired"]) for n in ns}, None,
                        "converged pairs only; failed pairs per N: " + ", ".join(
                            f"{n}: {per_n[n]['failures']['pairs_failed']}/{per_n[n]['failures']['pairs']}"
                            for n in ns)))
    lo_sigma = [per_n[n]["subsets"]["s1"]["distance_to_empirical"]["test"]["distance"][0] for n in ns]
    claims.append(claim("small-N networks track the empirical denoiser, large-N networks leave it",
                        "memorising networks approximate f_emp, the optimum on the training set (section 2)",
                        {str(n): float(f"{v:.3g}") for n, v in zip(ns, lo_sigma)}, None,
                        detail=f"||f_net - f_emp||^2/d on held-out images at sigma = {cfg.emp_sigmas[0]}"))
    claims.append(_failures_claim(cfg, ns, per_n))
    claims.append(_saturation_claim(ns, per_n))
    return claims + _quality_claims(ns, quality)


def _quality_claims(ns: list[int], quality: dict | None) -> list[dict]:
    """Sample quality (gahb.analysis.quality): whether the measure ranks its references, whether the
    largest N's samples score like new real images, and the numbers per N.

    Targets, set before any sample's quality was measured. The distance: each network's interval
    overlaps the floor's (new real images against the same test images) and its estimate lies below
    the light-blur reference's (those images blurred by 1 px). The confidence: each network's interval
    reaches the test images' (its upper end at or above their lower end).
    """
    if quality is None:
        return []
    if "per_n" not in quality:
        return [claim("sample quality: not measured", "samples of high visual quality (Fig 2)",
                      quality.get("unavailable", "-"), None)]
    from gahb.analysis.quality import RANKING, ranks_references

    refs, m = quality["references"], quality["set_size"]
    clf = quality["classifier"]
    names = {"floor": "new real images", "blur_light": "light blur", "blur_heavy": "heavy blur", "noise": "noise"}
    sigmas = refs.get("blur_sigmas", {})
    where = (f"{m} images per set against {m} held-out test images; classifier {clf['name']} "
             f"({clf['features']} features, held-out accuracy {clf['accuracy']['held_out_test']:.3f})")
    rows = [claim(
        "sample quality: the Frechet distance ranks new real images < light blur < heavy blur < noise",
        "the measure behind 'high visual quality' (Fig 2) tells real images from degraded ones",
        ", ".join(f"{names[k]} {_iv(refs[k]['frechet'])}" for k in RANKING)
        + f"; confidence: test images {_iv(refs['test_confidence'])}, "
        + ", ".join(f"{names[k]} {_iv(refs[k]['confidence'])}" for k in RANKING),
        ranks_references(refs), "the distances' estimates increase in that order", where,
        why="the references are not in order: at this set size the measure cannot tell them apart",
        reference=f"training images the classifier never saw; the same blurred by {sigmas.get('blur_light', '-')} "
                  f"and {sigmas.get('blur_heavy', '-')} px; Gaussian noise with the test images' mean and contrast",
        uncertainty="95% bootstrap intervals, both sets resampled (shown)")]
    n_big = ns[-1]
    q = quality["per_n"].get(str(n_big))
    if q is not None:
        nets = [q[s] for s in ("s1", "s2")]
        floor, light, test_conf = refs["floor"]["frechet"], refs["blur_light"]["frechet"], refs["test_confidence"]
        failed, inputs = sum(v["failed"] for v in nets), sum(v["samples"] for v in nets)
        measured_f = all(v["frechet"] is not None for v in nets)
        ok_f = measured_f and all(v["frechet"]["lo"] <= floor["hi"] and v["frechet"]["estimate"] < light["estimate"]
                                  for v in nets)
        rows.append(claim(
            f"N = {n_big}: the samples score like new real images by the Frechet distance (S1, S2)",
            "at the largest N the samples are of high visual quality (Fig 2)",
            ", ".join(_iv(v["frechet"]) for v in nets) + f"; new real images {_iv(floor)}, light blur {_iv(light)}",
            ok_f if measured_f else None,
            "each network's interval overlaps the new real images' and its estimate lies below the light blur's",
            where + "; converged samples only",
            why="" if ok_f or not measured_f else "a network's samples score worse than new real images"
                + ("" if all(v["frechet"]["estimate"] < light["estimate"] for v in nets) else ", and than light blur"),
            reference="new real images and light blur against the same test images (the references row)",
            uncertainty="95% bootstrap intervals, both sets resampled", failed=failed, inputs=inputs))
        measured_c = all(v["confidence"] is not None for v in nets)
        ok_c = measured_c and all(v["confidence"]["hi"] >= test_conf["lo"] for v in nets)
        rows.append(claim(
            f"N = {n_big}: the classifier is as confident on the samples as on test images (S1, S2)",
            "at the largest N the samples are of high visual quality (Fig 2)",
            ", ".join(_iv(v["confidence"]) for v in nets) + f"; test images {_iv(test_conf)}",
            ok_c if measured_c else None,
            "each network's interval reaches the test images' (upper end >= their lower end)",
            "mean max-softmax probability; a ReLU classifier is confident on noise too (the references row), "
            "so this row is read beside the distance, never alone",
            why="" if ok_c or not measured_c else "the classifier is less sure of the samples than of test images",
            reference="the held-out test images, same classifier",
            uncertainty="95% bootstrap intervals over the images", failed=failed, inputs=inputs))
    rows.append(claim(
        "sample quality per N: Frechet distance to test images and mean confidence (S1, S2)",
        "samples improve as N grows (Fig 2)",
        {f"N = {n}": "; ".join(f"{s.upper()} {_iv(v[s]['frechet'])}, confidence {_iv(v[s]['confidence'])}"
                               for s in ("s1", "s2"))
         for n in ns if (v := quality["per_n"].get(str(n))) is not None}, None,
        detail=f"{where}; new real images score {_iv(refs['floor']['frechet'])}"))
    return rows


def _failures_claim(cfg, ns: list[int], per_n: dict[int, dict]) -> dict:
    """Samples that failed (diverged or ran out of steps) per network, against the 5% a trained
    network may lose (a briefly trained one that amplifies clean images loses most of them)."""
    from gahb.analysis.uncertainty import binomial_interval

    failed = {n: [per_n[n]["subsets"][s]["sampler_failures"] for s in ("s1", "s2")] for n in ns}
    k = max(max(v) for v in failed.values())
    worst = binomial_interval(k, cfg.n_samples)
    return claim("samples that failed, per network (S1, S2)", "the sampler converges on a trained denoiser (App. A.2)",
                 {f"N = {n}": f"{a}, {b} of {cfg.n_samples}" for n, (a, b) in failed.items()},
                 worst.estimate <= MAX_NETWORK_FAILURES,
                 f"at most {MAX_NETWORK_FAILURES:.0%} of each network's samples fail",
                 f"sampler '{cfg.sampler}'; failed samples are left out of every row above",
                 why=f"a network lost {k} of {cfg.n_samples} samples",
                 reference=_sampler_reference(),
                 uncertainty=f"worst network {k} of {cfg.n_samples}: 95% Wilson interval of its failure rate "
                             f"[{worst.lo:.3f}, {worst.hi:.3f}]")


def _sampler_reference() -> str:
    from gahb.studies.references import sampler_reference

    ref = sampler_reference()
    if not ref:
        return "the 5% limit (no published reference in this install)"
    return "the published BF-CNN's prior (gahb study published): " + ", ".join(
        f"{r['failed']} of {r['samples']} samples failed at {size}x{size}" for size, r in ref.items())


def _saturation_claim(ns: list[int], per_n: dict[int, dict]) -> dict:
    """Fraction of white pixels (at 1) in the converged samples beside the training images'."""
    rows = {}
    for n in ns:
        sats = [per_n[n]["subsets"][s].get("saturation") for s in ("s1", "s2")]
        if None in sats:  # measured before saturation was recorded
            continue
        rows[f"N = {n}"] = ", ".join(
            "-" if sat["converged_samples"] is None else
            f"{100 * sat['converged_samples']['at_1']:.1f}% ({100 * sat['training_images']['at_1']:.1f}%)"
            for sat in sats)
    return claim("converged samples are not saturated: pixels at 1, S1 and S2 (training images)",
                 "samples look like the training images (Fig 2)", rows, None,
                 detail="fraction of pixels at 1 (within 0.001) of the converged samples, beside the same "
                        "fraction of the network's training images; pixels at 0 are in results.json")


def _iv(d: dict | None) -> str:
    """'0.95 [0.91, 0.98]' from an Interval dict."""
    return "-" if d is None else f"{d['estimate']:.3g} [{d['lo']:.3g}, {d['hi']:.3g}]"


def _ci(d: dict) -> str:
    """'[0.91, 0.98]' from an Interval dict."""
    return f"[{d['lo']:.3g}, {d['hi']:.3g}]"


def _iv_list(ds: list[dict]) -> str:
    return ", ".join(_iv(d) for d in ds)


def _med_iv(d: dict | None) -> str:
    """A similarity summary as 'median 0.95 (quartiles 0.93-0.97)'."""
    if d is None:
        return "-"
    q = d.get("quartiles") or (None, None, None)
    return f"median {d['median']:.3g}" + ("" if q[0] is None else f" (quartiles {q[0]:.3g}-{q[-1]:.3g})")


def _pm(value: float, se: float | None) -> str:
    return f"{value:.3f}" if se is None else f"{value:.3f} +- {se:.3f}"
