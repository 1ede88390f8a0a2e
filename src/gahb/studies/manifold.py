"""Study ``manifold``: disks, a 5-dimensional manifold; Jacobian eigenvectors vs its tangent space.

Paper section 4, Fig. 5. Disks with random centre (2), radius and foreground
and background intensities form a 5-dimensional manifold. At small noise the optimal denoiser
projects onto its tangent space: 5 eigenvalues near 1 and the rest 0, MSE = 5 sigma^2 / d per
pixel, output PSNR = input PSNR + 10 log10(d / 5) (slope 1). The paper finds that the top five
eigenvectors of a trained UNet's Jacobian span the tangent space, that the following ones are
GAHB components along the circle and the background (lambda_5..9 = 0.67 .. 0.28 instead of 0),
and that the PSNR slope at small noise is below 1.

This study trains one denoiser on generated disks (``synthetic:disks``), then on a few held-out
disks at ``sigma`` (0.04, as in the paper) forms the Jacobian (dense when the image is small, else
the top-k by Lanczos), and measures the principal angles between its top five eigenvectors and the
analytic tangent space (:func:`gahb.data.synthetic.disk_tangent_space`); and the PSNR slope over a
small-noise window of input PSNR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from gahb.studies import _synthetic as syn
from gahb.studies import common
from gahb.training.recipe import Recipe
from gahb.utils.config import runtime
from gahb.utils.noise import CURVE_STREAM

PAPER_EIGENVALUES = (1.177, 1.067, 1.004, 0.999, 0.945, 0.674, 0.552, 0.39, 0.304, 0.278)  # Fig. 5
TANGENT_NAMES = ("cx", "cy", "r", "fg", "bg")


@dataclass(frozen=True)
class Config:
    size: int = 32
    min_radius: float = 3.0  # disk radius ~ U(min_radius, (size - min_radius) // 2)
    n_train: int = 25_000
    n_test: int = 128  # held-out disks for the PSNR curve
    # How the network trains: the paper's loss (eq. 4) on sigma <= 0.25, a variant of the paper's [0, 1]:
    # on a CPU budget the loss, whose size grows with sigma^2, leaves the small noise analysed here
    # (sigma = 0.04) least trained (docs/results/manifold/README.md records the runs behind it).
    train: Recipe = Recipe(epochs=4, lr_halve_every=2, eval_images=32, sigma_max=0.25)
    sigma: float = 0.04  # noise level of the Jacobian analysis (paper Fig. 5)
    n_analysis: int = 12  # held-out disks analysed (the spread of their cos^2 is the claim's uncertainty)
    min_contrast: float = 0.3  # analysed disks have |fg - bg| >= this (the geometric tangent
    # directions scale with the contrast; at low contrast they sit below the noise)
    subspace_dim: int = 5  # eigenvectors compared with the tangent space
    top_k: int = 64  # eigenpairs kept (Lanczos when d > dense_max)
    dense_max: int = 4096  # dense Jacobian up to this many pixels
    input_psnrs: tuple = tuple(range(12, 43, 2))  # from sigma = 0.25, the top of the training range
    fit_window: tuple = (24.0, 40.0)  # small-noise window (dB) of the PSNR slope
    min_mean_cos2: float = 0.8  # acceptance threshold for the mean cos^2 of the principal angles
    seed: int = 0
    data_seed: int = 0
    runs_dir: str | None = runtime(None)
    device: str = "cpu"
    threads: int | None = runtime(None)


PRESETS = {
    "test": Config(size=16, n_train=256, n_test=8, train=Config().train.but(model="unet-tiny", epochs=1, eval_images=8),
                   n_analysis=1, top_k=16, input_psnrs=(12, 18, 24, 30, 36), fit_window=(24.0, 36.0)),
    # about 1.5 min on one CPU thread
    "quick": Config(size=24, n_train=8_000, n_test=64,
                    train=Config().train.but(model="unet-tiny", epochs=3, lr_halve_every=None), n_analysis=2),
    # the acceptance run: about 52 min on one CPU thread (6,252 steps): the paper's 1e5 disks, lr halved
    # every epoch (1e-3 -> 1.25e-4)
    "standard": Config(n_train=100_000, train=Config().train.but(lr_halve_every=1)),
    # the paper's recipe (GPU): 80x80, 1e5 disks, the 7.6M UNet, the paper's schedule
    "paper": Config(size=80, n_train=100_000, n_test=512,
                    train=Recipe(train_preset="paper", model="unet-80", epochs=1000, images_per_epoch=250_000,
                                 batch_size=512, lr_halve_every=100, eval_images=512),
                    n_analysis=8, top_k=32, dense_max=6400, input_psnrs=tuple(range(0, 43, 2)), device="auto"),
}


def dataset_spec(cfg: Config) -> str:
    return f"synthetic:disks:size={int(cfg.size)},min_radius={float(cfg.min_radius):g}"


def analyze_tangent(denoiser, x: torch.Tensor, tangent, sigma: float, *, subspace_dim: int = 5,
                    top_k: int = 64, dense_max: int = 4096, seed: int = 0) -> dict:
    """Jacobian eigen-analysis of ``denoiser`` at y = x + sigma z against a known tangent space.

    ``tangent``: (d, m) columns spanning the manifold's tangent space at x (orthonormalised here).
    Returns ``analysis`` (the :class:`~gahb.analysis.adaptive_basis.SigmaAnalysis`) and JSON-able
    ``numbers``: eigenvalues (top ``top_k``), the principal angles between the top
    ``subspace_dim`` eigenvectors and the tangent space with their mean cos^2 (1 = same subspace;
    chance level ``subspace_dim * m / d / min(subspace_dim, m)``), how much of the tangent space
    the top 2x and 4x ``subspace_dim`` eigenvectors capture, tr J and the output PSNR.
    """
    from gahb.analysis.optimality import random_subspace_mean_cos2, subspace_alignment

    # Block Lanczos with a block of subspace_dim vectors: the optimal denoiser's eigenvalue 1 has
    # multiplicity subspace_dim, which a single-vector Krylov space would see only once.
    ana = syn.jacobian_analysis(denoiser, x, sigma, k=top_k, dense_max=dense_max, seed=seed, block=subspace_dim)
    basis = ana.basis
    E = np.asarray(basis.eigenvectors)
    T = tangent.detach().cpu().double().numpy() if isinstance(tangent, torch.Tensor) else np.asarray(tangent)
    d = E.shape[0]
    m = int(np.linalg.matrix_rank(T))
    align = subspace_alignment(E[:, :subspace_dim], T)
    captured = {}
    for mult in (1, 2, 4):
        kk = min(mult * subspace_dim, basis.k)
        captured[str(kk)] = subspace_alignment(E[:, :kk], T)["mean_cos2"]
    top = min(top_k, basis.k)
    numbers = {
        "sigma": float(sigma),
        "d": int(d),
        "method": ana.numbers["method"],
        "eigenvalues": [float(v) for v in basis.eigenvalues[:top]],
        "principal_angles_deg": align["angles_deg"],
        "cos2": align["cos2"],
        "mean_cos2": align["mean_cos2"],
        "min_cos2": align["min_cos2"],
        "chance_mean_cos2": random_subspace_mean_cos2(d, subspace_dim, m),
        "tangent_captured_by_top": captured,
        "effective_dimension": float(ana.numbers["trace"]["effective_dimension"]),
        "output_psnr": float(ana.numbers["output_psnr"]),
        "input_psnr": float(ana.numbers["input_psnr"]),
        "asymmetry": float(ana.numbers["asymmetry"]),
    }
    return {"analysis": ana, "numbers": numbers}


def _pick_disks(params: torch.Tensor, count: int, min_contrast: float) -> list[int]:
    contrast = (params[:, 3] - params[:, 4]).abs()
    idx = [i for i in range(params.shape[0]) if float(contrast[i]) >= min_contrast][:count]
    if len(idx) < count:
        raise ValueError(f"only {len(idx)} of {params.shape[0]} held-out disks have |fg - bg| >= {min_contrast}; "
                         "raise n_test or lower min_contrast")
    return idx


def _eigen_figure(item: dict, tangent: torch.Tensor, shape, path, count: int = 10) -> None:
    """Paper Fig. 5 (right): clean/noisy/denoised, the orthonormal tangent basis, the top eigenvectors."""
    from gahb.report.figures import diverging_panel as _diverging, gray_panel as _gray, pyplot, save_figure

    plt = pyplot()
    ana = item["analysis"]
    count = min(count, ana.basis.k)
    ncols = max(count, 5)
    fig, axes = plt.subplots(3, ncols, figsize=(1.35 * ncols, 1.6 * 3), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    shape = tuple(shape)
    for j, (label, img) in enumerate((("clean", ana.x), ("noisy \u03c3=%g" % ana.sigma, ana.y), ("denoised", ana.fy))):
        axes[0, j].axis("on")
        _gray(axes[0, j], np.clip(np.asarray(img).reshape(shape), 0, 1), label)
    T = tangent.detach().cpu().double().numpy()
    for j in range(T.shape[1]):
        axes[1, j].axis("on")
        _diverging(axes[1, j], T[:, j].reshape(shape), f"tangent {TANGENT_NAMES[j] if j < 5 else j}")
    vecs = ana.basis.images(range(count))
    for i in range(count):
        axes[2, i].axis("on")
        _diverging(axes[2, i], vecs[i], f"k={i} \u03bb={ana.basis.eigenvalues[i]:.2f}")
    n = item["numbers"]
    fig.suptitle(f"disk: top eigenvectors vs tangent space (orthonormalised; mean cos\u00b2 of principal angles "
                 f"{n['mean_cos2']:.3f})", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _spectrum_figure(items: list, curve: dict, fit: dict, d: int, cfg: Config, path) -> None:
    """Left: eigenvalues vs k (optimum: 5 ones, then 0). Right: output vs input PSNR with the optimum."""
    from gahb.report.figures import pyplot, save_figure

    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.0, 3.5))
    for i, it in enumerate(items):
        ev = it["eigenvalues"]
        a1.plot(np.arange(len(ev)), ev, "o-", ms=2.5, lw=1, label=f"disk {i}")
    k = len(items[0]["eigenvalues"])
    a1.step([-0.5, cfg.subspace_dim - 0.5, k - 0.5], [1, 0, 0], where="post", color="k", ls="--", lw=1,
            label="optimal (projection)")
    a1.plot(np.arange(len(PAPER_EIGENVALUES)), PAPER_EIGENVALUES, "x", color="tab:red", label="paper Fig. 5")
    a1.set_xlabel("k")
    a1.set_ylabel("\u03bb_k")
    a1.set_title(f"Jacobian spectrum at \u03c3={cfg.sigma:g}", fontsize=9)
    a1.legend(fontsize=7)
    a1.grid(alpha=0.3)
    x = np.asarray(curve["input_psnr"], dtype=float)
    a2.plot(x, curve["output_psnr"], "o-", ms=3, label="trained denoiser")
    a2.plot(x, x + 10 * math.log10(d / cfg.subspace_dim), "k--", lw=1,
            label="optimal small-noise: in + 10 log10(d/5)")
    a2.plot(x, x, color="0.6", ls=":", lw=1, label="identity")
    lo, hi = cfg.fit_window
    a2.axvspan(lo, hi, color="0.92", zorder=0)
    xs = np.array([lo, hi])
    a2.plot(xs, fit["slope"] * xs + fit["intercept"], color="tab:red", lw=1.5,
            label=f"fit {lo:g}-{hi:g} dB: slope {fit['slope']:.2f}")
    a2.set_xlabel("input PSNR (dB)")
    a2.set_ylabel("output PSNR (dB)")
    a2.set_ylim(top=max(curve["output_psnr"]) + 12)
    a2.legend(fontsize=7)
    a2.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def run(config: Config, out_dir, *, progress: bool = True, preset: str | None = None) -> dict:
    """Train on disks; measure, draw, judge; write results.json and figures."""
    return common.run_phases("manifold", config, out_dir, preset, measure=measure, draw=draw, claims_of=claims_of,
                             progress=progress, run_dirs=lambda numbers: [numbers["training"]["run_dir"]])



def measure(cfg: Config, out, watch, progress: bool = True) -> tuple[dict, dict]:
    """Train (or reuse) the disk denoiser; its PSNR curve and slope with their bootstrap intervals; the
    Jacobian of held-out disks against their tangent spaces. Returns the numbers and the first
    analysed disk (its analysis, tangent basis and shape) for the eigenvector figure."""
    from gahb.analysis.memorization import denoising_curve
    from gahb.analysis.optimality import fit_psnr_slope, slope_interval
    from gahb.analysis.uncertainty import bootstrap_interval
    from gahb.data.datasets import load_split
    from gahb.data.synthetic import disk_images, disk_tangent_space, sample_disk_params

    split = load_split(dataset_spec(cfg), n=cfg.n_train, subset="s1", seed=cfg.data_seed, n_test=cfg.n_test,
                       progress=False)
    # The test images of synthetic_split are drawn with seed 3 * data_seed: the same parameters.
    params = sample_disk_params(cfg.n_test, cfg.size, 3 * cfg.data_seed, min_radius=cfg.min_radius)
    if not torch.equal(disk_images(params, cfg.size), split.test):
        raise RuntimeError("held-out disk parameters do not reproduce the held-out images")
    watch.lap("data")
    tcfg = cfg.train.train_config(cfg.n_train, seed=cfg.seed, device=cfg.device)
    run_dir = common.runs_dir(cfg, out) / "disks"
    model = common.train_or_reuse(tcfg, split.train, split.test, run_dir, progress=progress, data_info=split.info,
                                  weights=cfg.train.weights)
    watch.lap("train")

    with torch.no_grad():
        curve = denoising_curve(model, split.test, cfg.input_psnrs, seed=cfg.seed + CURVE_STREAM, progress=progress,
                                keep_per_image=True)
    image_psnr = curve.pop("image_psnr")
    fit = fit_psnr_slope(curve["input_psnr"], curve["output_psnr"], cfg.fit_window)
    fit["slope_interval"] = slope_interval(curve["input_psnr"], image_psnr, cfg.fit_window, seed=cfg.seed).to_dict()
    d = int(np.prod(split.test.shape[1:]))
    watch.lap("psnr_curve")

    first, per_image = None, []
    for j, i in enumerate(_pick_disks(params, cfg.n_analysis, cfg.min_contrast)):
        tangent = disk_tangent_space(params[i], cfg.size, method="analytic").basis
        item = analyze_tangent(model, split.test[i], tangent, cfg.sigma, subspace_dim=cfg.subspace_dim,
                               top_k=cfg.top_k, dense_max=cfg.dense_max, seed=cfg.seed + j)
        item["numbers"]["test_index"] = int(i)
        item["numbers"]["params"] = dict(zip(TANGENT_NAMES, (float(v) for v in params[i])))
        if first is None:
            first = {"item": item, "tangent": disk_tangent_space(params[i], cfg.size).basis,
                     "shape": split.test.shape[1:]}
        per_image.append(item["numbers"])
    watch.lap("jacobians")
    top_ev = np.array([n["eigenvalues"][:10] for n in per_image])
    numbers = {
        "mean_cos2": float(np.mean([n["mean_cos2"] for n in per_image])),
        # 95% bootstrap interval of the mean over the analysed disks
        "mean_cos2_interval": bootstrap_interval([n["mean_cos2"] for n in per_image], seed=cfg.seed).to_dict(),
        "psnr_slope": fit["slope"],
        "psnr_fit": fit,
        "optimal_slope": 1.0,
        "optimal_intercept_db": 10 * math.log10(d / cfg.subspace_dim),
        # output minus input PSNR at the top of the window; the optimal projection gains optimal_intercept_db
        "gain_at_window_top_db": float(np.interp(cfg.fit_window[1], curve["input_psnr"],
                                                 curve["output_psnr"]) - cfg.fit_window[1]),
        "curve": curve,
        "eigenvalues_mean_top10": top_ev.mean(0).tolist(),
        "per_image": per_image,
        "training": {**syn.run_summary(run_dir), "run_dir": str(run_dir)},
    }
    return numbers, first


def draw(cfg: Config, numbers: dict, first: dict, out) -> list[dict]:
    """Paper Fig. 5 (the tangent basis beside the top eigenvectors) and the spectra with the PSNR curve."""
    fig_eig, fig_spec = "figures/manifold_eigenvectors.png", "figures/manifold_spectrum_psnr.png"
    _eigen_figure(first["item"], first["tangent"], first["shape"], out / fig_eig)
    d = int(np.prod(first["shape"]))
    _spectrum_figure(numbers["per_image"], numbers["curve"], numbers["psnr_fit"], d, cfg, out / fig_spec)
    return [
        {"path": fig_eig, "caption": (f"A held-out disk at sigma={cfg.sigma:g}: the orthonormalised tangent basis "
                                      "(x/y shift, radius, foreground, background; Gram-Schmidt in that order) and the "
                                      "top eigenvectors of the denoiser Jacobian (paper Fig. 5).")},
        {"path": fig_spec, "caption": ("Left: Jacobian eigenvalues of the analysed disks, the optimal projection "
                                       "(5 ones) and the paper's values. Right: output vs input PSNR with the optimal "
                                       "small-noise line (slope 1, intercept 10 log10(d/5)) and the fitted slope.")},
    ]


def claims_of(cfg: Config, numbers: dict) -> list[dict]:
    """The claim rows from the measured numbers (paper Fig. 5)."""
    from gahb.studies.references import interval_text

    per_image, fit = numbers["per_image"], numbers["psnr_fit"]
    mean_cos2, cos_iv, slope_iv = numbers["mean_cos2"], numbers.get("mean_cos2_interval"), fit.get("slope_interval")
    chance = per_image[0]["chance_mean_cos2"]
    slope_ok = fit["slope"] < 1.0 if slope_iv is None else slope_iv["hi"] < 1.0
    return [
        common.claim("top-5 eigenvectors span the tangent space (mean cos^2 of principal angles)",
                     paper="the first five eigenvectors match the 5-D tangent space (Fig. 5)",
                     measured=round(mean_cos2, 3), passed=mean_cos2 >= cfg.min_mean_cos2,
                     target=f">= {cfg.min_mean_cos2:g}",
                     detail=(f"sigma={cfg.sigma:g}, {len(per_image)} held-out disks with |fg-bg| >= "
                             f"{cfg.min_contrast:g}, {cfg.size}x{cfg.size}; per disk "
                             + ", ".join(f"{n['mean_cos2']:.3f}" for n in per_image)),
                     why=f"the top-5 eigenvectors capture {mean_cos2:.2f} of the tangent space on average",
                     reference=f"1 for the optimal denoiser (a projection onto the tangent space); {chance:.4f} "
                               "for a random 5-D subspace",
                     uncertainty=("" if cos_iv is None else
                                  f"95% bootstrap interval over the {cos_iv['n']} disks: {interval_text(cos_iv)}")),
        common.claim("PSNR slope at small noise", paper="below 1 (optimal: 1)", measured=round(fit["slope"], 3),
                     passed=slope_ok, target="< 1" if slope_iv is None else "upper end of the 95% interval < 1",
                     detail=(f"least squares over input PSNR {fit['window'][0]:g}-{fit['window'][1]:g} dB "
                             f"({fit['n_points']} points) on {cfg.n_test} held-out disks"),
                     why="the slope is not below 1 beyond its uncertainty",
                     reference="the optimal projection's slope 1 (output PSNR = input + 10 log10(d/5))",
                     uncertainty=("" if slope_iv is None else
                                  f"95% bootstrap interval over the {slope_iv['n']} held-out disks: "
                                  + interval_text(slope_iv)),
                     target_note="" if slope_iv is None else
                     "issue 16 (before this run): was '< 1' on the point estimate, now on the interval"),
        common.claim("eigenvalues lambda_0..9", paper=list(PAPER_EIGENVALUES),
                     measured=[round(float(v), 3) for v in numbers["eigenvalues_mean_top10"]], passed=None,
                     target="optimal: 5 ones, then 0", detail="mean over the analysed disks"),
    ]


def judge(results: dict) -> list[dict]:
    """The claims of a manifold ``results.json``, from it alone."""
    return claims_of(common.config_from_dict(Config, results["config"]), results["numbers"])


__all__ = ["Config", "PRESETS", "analyze_tangent", "claims_of", "dataset_spec", "draw", "judge", "measure", "run"]
