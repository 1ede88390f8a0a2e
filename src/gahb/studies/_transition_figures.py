"""Figures of the transition study (:mod:`gahb.studies.transition`) that are not library figures."""

from __future__ import annotations

from pathlib import Path


def _sample_grid_figure(per_n_samples: dict, per_n_nearest: dict, per_n_status: dict, path: Path, count: int,
                        titles: dict | None = None) -> None:
    """Rows per N: samples of f_S1, samples of f_S2 (same seeds), nearest S1 training images; samples
    that failed framed in red."""
    import torch
    from matplotlib.patches import Rectangle

    from gahb.report.figures import pyplot, save_figure
    from gahb.sampling.grid import make_grid

    plt = pyplot()
    ns = sorted(per_n_samples)
    fig, axes = plt.subplots(len(ns), 1, figsize=(1.0 * count + 1.5, 3.2 * len(ns)), squeeze=False)
    for ax, n in zip(axes[:, 0], ns):
        s1, s2 = per_n_samples[n]["s1"][:count], per_n_samples[n]["s2"][:count]
        near = per_n_nearest[n][:count]
        grid = make_grid(torch.cat([s1, s2, near]).clamp(0, 1), nrow=count)
        ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        h, w = s1.shape[-2] + 2, s1.shape[-1] + 2
        ax.set_yticks([h / 2 + 1, 1.5 * h + 1, 2.5 * h + 1])
        ax.set_yticklabels(["f_S1 sample", "f_S2 sample", "nearest in S1"], fontsize=8)
        status = per_n_status.get(n, {})
        for row, sub in enumerate(("s1", "s2")):
            for k, st in enumerate(status.get(sub, [])[:count]):
                if st != "converged":
                    ax.add_patch(Rectangle((k * w + 0.5, row * h + 0.5), w, h, fill=False, edgecolor="red", lw=1.5))
        ax.set_title((titles or {}).get(n, f"N = {n}"), fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _empirical_figure(per_n: dict, path: Path) -> None:
    from gahb.report.figures import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4), sharey=True)
    cmap = plt.get_cmap("viridis")
    ns = sorted(per_n)
    for i, n in enumerate(ns):
        color = cmap(i / max(1, len(ns) - 1))
        for ax, which in zip(axes, ("train", "test")):
            d = per_n[n]["subsets"]["s1"]["distance_to_empirical"][which]
            ax.plot(d["sigma"], [max(v, 1e-12) for v in d["distance"]], marker="o", ms=3, color=color,
                    label=f"N = {n}")
    for ax, which in zip(axes, ("train", "test")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sigma")
        ax.set_title(f"||f_net - f_emp||^2 / d on {which} images", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("distance to the empirical denoiser")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _quality_figure(quality: dict, ns: list[int], path: Path) -> None:
    """The Frechet distance of each network's samples against N, beside the references' bands."""
    from gahb.analysis.quality import RANKING
    from gahb.report.figures import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    refs = quality["references"]
    names = {"floor": "new real images (floor)", "blur_light": "light blur", "blur_heavy": "heavy blur",
             "noise": "noise"}
    for k, color in zip(RANKING, ("tab:green", "tab:olive", "tab:orange", "tab:red")):
        f = refs[k]["frechet"]
        ax.axhspan(max(f["lo"], 1e-3), max(f["hi"], 1e-3), color=color, alpha=0.15)
        ax.axhline(max(f["estimate"], 1e-3), color=color, lw=1, label=names[k])
    for s, marker, dx, color in (("s1", "o", 0.95, "k"), ("s2", "s", 1.05, "0.45")):
        pts = [(n * dx, quality["per_n"][str(n)][s]["frechet"]) for n in ns
               if quality["per_n"].get(str(n), {}).get(s, {}).get("frechet")]
        if pts:
            x, f = zip(*pts)
            y = [max(v["estimate"], 1e-3) for v in f]
            err = [[yy - max(v["lo"], 1e-3) for yy, v in zip(y, f)], [v["hi"] - yy for yy, v in zip(y, f)]]
            ax.errorbar(x, y, yerr=err, marker=marker, ms=4, lw=1, capsize=2, color=color,
                        label=f"samples of f_{s.upper()}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (training images)")
    ax.set_ylabel("Frechet distance to test images")
    ax.set_title(f"sample quality, {quality['set_size']} images per set", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def draw(cfg, ns: list[int], per_n: dict, grid: dict, out: Path, quality: dict | None = None) -> list[dict]:
    """Paper Figs 1, 15 and 2 (curves, gaps, cosine histograms per sampler), the sample grid, the
    distance to the empirical denoiser and the sample quality; the figure list."""
    from gahb.report.memorization_figures import denoising_curves_figure, psnr_gap_figure, similarity_histograms_figure

    figs = []

    def fig(name: str, caption: str) -> Path:
        figs.append({"path": f"figures/{name}", "caption": caption})
        return out / "figures" / name

    denoising_curves_figure({n: per_n[n]["subsets"]["s1"]["curves"] for n in ns},
                            path=fig("denoising_curves.png",
                                     "Train and test output PSNR vs input PSNR of f_S1 for each N, with the "
                                     "identity line (paper Fig 1)."),
                            title=f"{cfg.dataset}: denoising, train vs test")
    gaps = {n: per_n[n]["psnr_gap_db"] for n in ns}
    paired_gaps = {n: per_n[n]["psnr_gap_paired"]["gap_db"] for n in ns}
    psnr_gap_figure({"paired: own net - other net, same S images": paired_gaps,
                     "unpaired: S images - test images": gaps},
                    path=fig("psnr_gap.png", "Train - test PSNR gap averaged over sigma, against N (paper Fig 15), "
                                             "mean of S1 and S2: the paired estimate (each training image "
                                             "denoised by its own network and by the network that never saw it) "
                                             "and the unpaired one (training images vs held-out test images)."))
    similarity_histograms_figure(
        {n: {"paired": per_n[n]["paired"] or None,
             "nearest_train": [v for s in ("s1", "s2") for v in per_n[n]["subsets"][s]["nearest_train"] if v is not None]
             or None, "note": _failure_note(per_n[n]["failures"])}
         for n in ns},
        path=fig("cosine_histograms.png",
                 "Cosine similarity of paired samples (same seed, f_S1 vs f_S2; blue) and of each sample with "
                 "its nearest image in its own training set (orange), per N (paper Fig 2). Samples that failed "
                 "(sigma_t above the divergence bound, or out of steps) are left out; each panel says how many."))
    for name in cfg.other_samplers:
        from gahb.analysis.memorization import SimilaritySummary

        def summ(d: dict | None) -> SimilaritySummary | None:
            return None if d is None else SimilaritySummary(**{**d, "quartiles": tuple(d["quartiles"])})

        similarity_histograms_figure(
            {n: {**{k: summ(per_n[n]["other_samplers"][name][k]) for k in ("paired", "nearest_train")},
                 "note": _failure_note(per_n[n]["other_samplers"][name]["failures"])} for n in ns},
            path=fig(f"cosine_histograms_{_slug(name)}.png",
                     f"As the cosine histograms above, with the '{name}' sampler on the same seeds."))
    _sample_grid_figure(grid["samples"], grid["nearest"], grid["status"],
                        fig("samples.png", "Per N: samples of f_S1, samples of f_S2 from the same seeds, and the "
                                           "training image of S1 nearest to each f_S1 sample. Samples that failed "
                                           "are framed in red (and have no nearest image); each row's title "
                                           "counts the failures among all the samples of that N."),
                        cfg.grid_samples,
                        {n: f"N = {n}: " + ", ".join(f"{s.upper()} {per_n[n]['subsets'][s]['sampler_failures']} of "
                                                     f"{cfg.n_samples} failed" for s in ("s1", "s2")) for n in ns})
    _empirical_figure(per_n, fig("distance_to_empirical.png",
                                 "Mean squared distance between f_S1 and the empirical (memorising) denoiser of "
                                 "S1 per sigma, on training and held-out images."))
    if quality and "per_n" in quality:
        _quality_figure(quality, ns, fig("sample_quality.png",
                                         "Frechet distance between each network's converged samples and held-out "
                                         "test images, in the features of a small garment classifier, against N "
                                         "(95% bootstrap intervals), beside the same distance for new real images "
                                         "(the floor), the same images blurred (sigma "
                                         + " and ".join(f"{v:g}" for v in quality["references"]["blur_sigmas"].values())
                                         + " px) and noise."))
    return figs


def _slug(name: str) -> str:
    """A file-name-safe form of a sampler spec ('paper:beta=0.2' -> 'paper_beta_0.2')."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _failure_note(f: dict) -> str:
    return f"{f['samples_failed']} of {f['samples']} samples failed (left out)" if f["samples_failed"] else ""
