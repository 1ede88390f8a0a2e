"""Figures of the published-denoisers study (:mod:`gahb.studies.published`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gahb.report.figures import gray_panel as _gray, pyplot, save_figure
from gahb.report.jacobian_figures import eigenvector_montage, montage_indices


def _fig(figs: list, out: Path, name: str, caption: str) -> Path:
    figs.append({"path": f"figures/{name}", "caption": caption})
    return out / "figures" / name


def set68_figure(set68: dict, tolerance_db: float, path) -> None:
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10.5, 3.9), gridspec_kw={"width_ratios": [1.35, 1]})
    colors = {"0-10": "tab:orange", "0-100": "tab:blue"}
    for key, m in set68["models"].items():
        s = np.array([r["sigma"] for r in m["rows"]])
        ours = np.array([r["psnr"] for r in m["rows"]])
        se = np.array([r["psnr_se"] for r in m["rows"]])
        ax.errorbar(s, ours, yerr=se, fmt="o", ms=4, color=colors.get(key), capsize=2,
                    label=f"BF-DnCNN {key}: gahb ({set68['images']} images, \u00b1 s.e.)")
        pub = [(r["sigma"], r["published"], r["psnr"]) for r in m["rows"] if r["published"] is not None]
        if pub:
            ps, pv, ov = map(np.array, zip(*pub))
            ax.plot(ps, pv, "-", lw=1, color=colors.get(key), alpha=0.7, label=f"BF-DnCNN {key}: published")
            bx.plot(ps, ov - pv, "o-", ms=4, color=colors.get(key), label=f"BF-DnCNN {key}")
        rng = (m.get("noise_range") or {}).get("sigma_255")
        if rng and key == "0-10":
            ax.axvspan(rng[0], rng[1], color=colors[key], alpha=0.12, label="training range of the 0-10 model")
    first = next(iter(set68["models"].values()))["rows"]
    ax.plot([r["sigma"] for r in first], [r["psnr_in"] for r in first], "k:", lw=1, label="noisy input")
    ax.set_xlabel("noise \u03c3 (out of 255)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("Set68: bias-free denoisers across noise levels", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    bx.axhspan(-tolerance_db, tolerance_db, color="0.85", label=f"\u00b1 {tolerance_db:g} dB (target)")
    bx.axhline(0, color="k", lw=0.6)
    bx.set_ylim(-3 * tolerance_db, 3 * tolerance_db)
    bx.set_xlabel("noise \u03c3 (out of 255)")
    bx.set_ylabel("gahb \u2212 published (dB)")
    bx.set_title("reproduction of the published table" if any(
        r["published"] is not None for m in set68["models"].values() for r in m["rows"])
        else "(no published table for this image set)", fontsize=10)
    bx.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def crops_figure(crops, per_crop, path, per_row: int = 6) -> None:
    plt = pyplot()
    n = len(crops)
    rows = -(-n // per_row)
    cols = min(n, per_row)
    fig, axes = plt.subplots(rows, cols, figsize=(1.75 * cols, 2.25 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, x, r in zip(axes.flat, crops, per_crop):
        _gray(ax, x.numpy())
        ax.axis("on")
        ax.set_title(f"asym {r['asymmetry']:.2f}   tr J {r['trace']:.0f}\n"
                     f"\u03bb\u2081 {r['lambda_max']:.2f}   \u03bb_min {r['lambda_min']:.2f}", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def spectra_figure(ia, dense_sigma, path) -> None:
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.5, 3.4))
    for r in ia.results:
        a1.plot(np.arange(r.basis.k), r.basis.eigenvalues, lw=1.2, label=f"\u03c3={r.sigma:g}")
    a1.axhline(1, color="k", lw=0.5, ls=":")
    a1.axhline(0, color="k", lw=0.5)
    a1.set_xscale("symlog", linthresh=10)
    a1.set_xlim(left=0)
    a1.set_xlabel("k")
    a1.set_ylabel("\u03bb_k (shrinkage factor)")
    a1.legend(fontsize=8)
    a1.set_title("spectrum of (J + J\u1d40)/2", fontsize=9)
    r = min(ia.results, key=lambda q: abs(q.sigma - dense_sigma))
    a2.semilogy(np.abs(r.coef_x) + 1e-12, ".", ms=2, label="|<x, e_k>| (clean)")
    a2.semilogy(np.abs(r.coef_y) + 1e-12, ".", ms=2, alpha=0.5, label="|<y, e_k>| (noisy)")
    a2.axhline(r.sigma, color="k", lw=0.6, ls="--", label="\u03c3")
    a2.set_xlabel("k")
    a2.set_title(f"coefficients in the adaptive basis, \u03c3={r.sigma:g}", fontsize=9)
    a2.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def trace_sure_figure(sure: dict, d: int, path) -> None:
    plt = pyplot()
    rows = sure["per_sigma"]
    s = np.array([r["sigma"] for r in rows])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.5, 3.5))
    a1.errorbar(s, [r["trace"] for r in rows], yerr=[r["trace_sd_over_images"] for r in rows], fmt="o-", capsize=3,
                label="mean over crops and draws (bars: s.d. over crops)")
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel("\u03c3")
    a1.set_ylabel("tr J (effective dimension)")
    a1.set_title(f"effective dimension, d = {d}", fontsize=9)
    a1.legend(fontsize=7)
    a2.errorbar(s, [r["mse"] for r in rows], fmt="s-", ms=4, label="true MSE")
    a2.errorbar(s * 1.03, [r["sure"] for r in rows], yerr=[r["difference_se"] for r in rows], fmt="o", ms=4,
                capsize=3, label="SURE (eq. 7), \u00b1 s.e. of SURE \u2212 MSE")
    a2.set_xscale("log")
    a2.set_yscale("log")
    a2.set_xlabel("\u03c3")
    a2.set_ylabel("per-pixel MSE")
    st = sure["settings"]
    a2.set_title(f"SURE vs true MSE ({st['images']} crops \u00d7 {st['draws']} draws)", fontsize=9)
    a2.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def samples_figure(samples: dict, path) -> None:
    from gahb.sampling import make_grid

    plt = pyplot()
    keys = sorted(samples, key=int)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4.4), squeeze=False)
    for ax, k in zip(axes[0], keys):
        s = samples[k]
        grid = make_grid(s["images"].float().clamp(0, 1), nrow=4 if len(s["images"]) > 4 else 2)
        ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ev = s["evaluations"]
        ax.set_title(f"{k}x{k}: {len(ev) - s['num_failed']} of {len(ev)} converged, {min(ev)}-{max(ev)} evaluations",
                     fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def inverse_figure(inverse: dict, clean, path, show: int = 2) -> None:
    plt = pyplot()
    tasks = list(inverse)
    methods = ["mean fill", "pseudo-inverse", "bicubic", "prior"]
    show = min(show, clean.shape[0])
    fig, axes = plt.subplots(len(tasks) * show, 1 + len(methods), figsize=(1.7 * (1 + len(methods)),
                                                                              1.85 * len(tasks) * show), squeeze=False)
    for t, task in enumerate(tasks):
        r = inverse[task]
        for i in range(show):
            row = axes[t * show + i]
            _gray(row[0], clean[i].numpy(), f"{task}: original" if i == 0 else None)
            for j, m in enumerate(methods):
                img = r["restored"][i] if m == "prior" else r["baselines"].get(m, [None] * (i + 1))[i]
                if img is None:
                    row[1 + j].axis("off")
                    continue
                p = r["per_image"][m][i]
                status = "" if m != "prior" or r["status"][i] == "converged" else f" ({r['status'][i]})"
                _gray(row[1 + j], img.float().clamp(0, 1).numpy(), f"{m}: {p:.1f} dB{status}")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def write_all(out: Path, cfg, set68, dense, analyses, sure, topk, topk_results, prior, crops, inv_imgs) -> list[dict]:
    """Every figure of the study into ``out/figures``; returns the report's figure list."""
    plt = pyplot()
    figs: list[dict] = []
    set68_figure(set68, cfg.set68_tolerance_db, _fig(figs, out, "set68_psnr.png",
                             "Bias-free DnCNNs on Set68 (full images, \u03c3 out of 255): gahb's measurement (points, "
                             "\u00b1 s.e. over images) beside the published numbers (lines); right, the difference. The "
                             "0-10 network denoises far beyond its training range (shaded)."))
    crops_figure(crops, dense["per_crop"], _fig(figs, out, "crops.png",
                 f"The Set12 crops ({cfg.crop}x{cfg.crop}, centre) analysed with the dense Jacobian of the "
                 f"universal_inverse_problem BF-CNN at \u03c3={cfg.dense_sigma:g}: asymmetry ||J\u2212J\u1d40||/||J||, "
                 "largest and smallest eigenvalue of (J+J\u1d40)/2 and tr J."))
    r0 = min(analyses[0].results, key=lambda q: abs(q.sigma - cfg.dense_sigma))
    idx = montage_indices(r0.basis.k, count=cfg.montage_count)
    imgs = [("clean", r0.x.reshape(r0.basis.shape)), (f"noisy \u03c3={r0.sigma:g}", r0.y.reshape(r0.basis.shape)),
            ("denoised", r0.fy.reshape(r0.basis.shape))]
    plt.close(eigenvector_montage(r0.basis, idx, images=imgs, title=f"BF-CNN (published), Set12 crop, \u03c3={r0.sigma:g}",
                                  path=_fig(figs, out, "eigenvectors.png",
                                            f"Paper Fig 3 layout for the published BF-CNN on a natural-image crop: "
                                            f"eigenvectors k = {', '.join(map(str, idx))} of (J+J\u1d40)/2 with their "
                                            "shrinkage factors (red/blue centred at 0).")))
    spectra_figure(analyses[0], cfg.dense_sigma, _fig(figs, out, "spectra.png",
                   "Left: shrinkage factors \u03bb_k at several \u03c3 on the first crop (eigenvalues above 1 and "
                   "below 0 are real: (J+J\u1d40)/2 is not a projection). Right: the clean and noisy crop's "
                   "coefficients in the adaptive basis: the clean image is sparse in it."))
    trace_sure_figure(sure, int(crops[0].numel()), _fig(figs, out, "trace_sure.png",
                      "Left: tr J against \u03c3, averaged over the crops and noise draws. Right: SURE (eq. 7) "
                      "against the true MSE, each averaged over the same crops and draws (Hutchinson traces)."))
    t0 = topk_results[0]
    k_show = list(range(min(16, t0.basis.k, cfg.montage_count)))
    timgs = [("clean", t0.x.reshape(t0.basis.shape)), (f"noisy \u03c3={t0.sigma:g}", t0.y.reshape(t0.basis.shape)),
             ("denoised", t0.fy.reshape(t0.basis.shape))]
    plt.close(eigenvector_montage(t0.basis, k_show, images=timgs, ncols=8,
                                  title=f"top eigenvectors at {cfg.topk_crop}x{cfg.topk_crop} (Lanczos)",
                                  path=_fig(figs, out, "eigenvectors_topk.png",
                                            f"The {len(k_show)} leading eigenvectors of (J+J\u1d40)/2 on a "
                                            f"{cfg.topk_crop}x{cfg.topk_crop} crop, by matrix-free Lanczos (J never "
                                            "formed).")))
    samples_figure(prior["samples"], _fig(figs, out, "samples.png",
                   f"Samples from the BF-CNN's implicit prior (Algorithm 1, {cfg.sampler} sampler), both sizes."))
    inverse_figure(prior["inverse"], inv_imgs, _fig(figs, out, "inverse.png",
                   "Linear inverse problems on Set12 crops: the measurements filled in by the linear baselines and "
                   "by the BF-CNN's prior (PSNR against the original in each title)."))
    return figs

