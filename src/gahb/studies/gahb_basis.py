"""Geometry-adaptive harmonic bases: the Jacobian of a memorising vs a generalising denoiser (paper section 3).

Takes two trained denoisers, by default those of the transition study (:mod:`gahb.studies.transition`)
at its smallest N (memorising) and its largest N (generalising), read from its ``results.json``
(``numbers['runs'] = {"N": {"s1": run_dir, "s2": run_dir}}``), or explicit ``checkpoints``. On one
held-out image of the same split (the training data never contains it) and at each ``sigmas`` it
runs :func:`gahb.analysis.adaptive_basis.analyze_image`: the eigen-decomposition of the symmetric
part of J(y) (the adaptive basis e_k and shrinkage factors lambda_k of eq. 6), tr J (the effective
dimensionality of eq. 7), the asymmetry of J, the exact identity f(y) = J(y) y. Over ``sure_images``
held-out images it measures SURE against the true MSE and tr J of both networks (Hutchinson, several
noise draws), and the generalising network's dense Jacobian statistics at ``reference_sigma``, so
that every claim has an uncertainty over images and the asymmetry and spectra sit beside the
published BF-CNN measured the same way.

Claims (:mod:`gahb.studies._gahb_claims`): f(y) = J y holds to rounding (bias-free network, eq. 6);
the generalising network's effective dimension falls as sigma grows (eq. 7; Fig 3 shows the
shrinkage moving to fewer directions); J is as nearly symmetric as a converged network's; the
memorising network has a far smaller effective dimension than the generalising one (it projects
onto its few training images); SURE matches the true MSE.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gahb.studies._gahb_claims import PAPER_FIG3, claims_of, judge, trace_comparison
from gahb.studies.common import load_results, run_phases
from gahb.studies.references import STATS, jacobian_reference, spread
from gahb.utils.config import added, runtime

NAME = "gahb_basis"

@dataclass(frozen=True)
class Config:
    """Everything the adaptive-basis study computes from.

    ``transition_dir``: a finished transition study (its smallest and largest N are analysed, subset
    ``subset``). ``checkpoints``: two run folders (memorising, generalising) used instead.
    The held-out image is ``image_index`` of the test set of the split the networks were trained on
    (dataset and split seed from the run's ``config.json``, or ``dataset``/``split_seed`` here).
    ``method``: ``dense`` (every eigenvalue; fine up to ~64x64) or ``topk`` (Lanczos, ``k`` pairs).
    """

    transition_dir: str | None = None
    checkpoints: tuple = ()
    labels: tuple = ()
    subset: str = "s1"
    dataset: str | None = None
    split_seed: int | None = None
    cache_dir: str | None = runtime(None)
    image_index: int = 0
    sigmas: tuple = (0.05, 0.1, 0.2, 0.4)
    method: str = "dense"
    k: int = 32
    chunk: int = 32
    seed: int = 0
    montage_count: int = 10
    # SURE (eq. 7) is checked on the generalising network over several held-out images (the first is
    # the analysed one) and noise draws, with Hutchinson traces of ``sure_probes`` probes.
    sure_images: int = 12
    sure_draws: int = 4
    sure_probes: int = 16
    # The memorising network's tr J over the same images (noise draws per image), for the claim
    # that it is smaller than the generalising network's beyond their uncertainty.
    memorising_draws: int = 1
    # Dense Jacobians of the generalising network on the SURE images at this sigma: asymmetry and
    # spectra over images, beside the published BF-CNN measured the same way (0.1, as its reference).
    reference_sigma: float = 0.1
    # which weights of each run are analysed: "ema" (its EMA of the weights when it kept one, else its
    # only weights; gahb.training.checkpoint.load_denoiser) or "raw"
    weights: str = added("ema", before="raw")
    device: str = "cpu"
    threads: int | None = runtime(None)

    def validate(self) -> None:
        if self.weights not in ("ema", "raw"):
            raise ValueError(f"weights must be 'ema' or 'raw', got {self.weights!r}")
        if self.checkpoints and len(self.checkpoints) != 2:
            raise ValueError("checkpoints must name two run folders: (memorising, generalising)")
        if not self.checkpoints and not self.transition_dir:
            raise ValueError("give transition_dir (a finished transition study) or two checkpoints")
        if self.labels and len(self.labels) != 2:
            raise ValueError("labels must be two strings")
        if min(self.sure_images, self.sure_draws) < 1 or self.sure_probes < 2:
            raise ValueError("need sure_images >= 1, sure_draws >= 1 and sure_probes >= 2")
        if len(self.sigmas) < 2 or any(not (float(s) > 0) for s in self.sigmas):
            raise ValueError(f"sigmas must be at least two positive noise levels, got {self.sigmas}")


PRESETS: dict[str, Config] = {
    "test": Config(sigmas=(0.1, 0.3), montage_count=6, sure_images=2, sure_draws=2, sure_probes=4),
    "quick": Config(),
    "standard": Config(sigmas=(0.025, 0.05, 0.1, 0.15, 0.2, 0.4), sure_probes=32),
    # 80x80: matrix-free top-k (the dense 6400x6400 J is minutes per sigma on a CPU; fine on a GPU).
    "paper": Config(sigmas=(0.05, 0.1, 0.15, 0.2, 0.4), method="topk", k=256, montage_count=21, device="auto"),
}


def _resolve_path(path: str, base: Path) -> Path:
    """A run folder recorded by the transition study: as written, relative to its folder, or (when the
    study was run from another working directory) its ``runs/`` subfolder of the same name."""
    p = Path(path)
    for cand in (p, base / p, base / "runs" / p.name):
        if cand.exists():
            return cand
    return p


def find_runs(cfg: Config) -> tuple[list[Path], list[str], dict]:
    """The two run folders to compare, their labels, and the transition results used (or {})."""
    if cfg.checkpoints:
        runs = [Path(c) for c in cfg.checkpoints]
        labels = list(cfg.labels) or [p.name for p in runs]
        return runs, labels, {}
    tdir = Path(cfg.transition_dir)
    res = load_results(tdir)
    if res is None:
        raise FileNotFoundError(f"no transition results at {tdir / 'results.json'}: run the transition study first")
    table = (res.get("numbers") or {}).get("runs")
    if not table:
        raise ValueError(f"{tdir / 'results.json'} has no numbers['runs'] table of trained run folders")
    ns = sorted(table, key=lambda n: int(n))
    if len(ns) < 2:
        raise ValueError(f"the transition study trained only N = {ns}; two sizes are needed")
    small, large = ns[0], ns[-1]
    runs = [_resolve_path(table[n][cfg.subset], tdir) for n in (small, large)]
    labels = list(cfg.labels) or [f"N={small} ({cfg.subset})", f"N={large} ({cfg.subset})"]
    return runs, labels, res


def held_out_image(cfg: Config, run_config: dict, transition: dict, channels: int, count: int = 1):
    """Test image ``cfg.image_index`` of the split the run was trained on, with where it came from, and
    the ``count`` test images from it on (for the SURE check)."""
    import torch

    from gahb.data import load_split

    data = run_config.get("data") or {}
    tcfg = transition.get("config") or {}
    dataset = cfg.dataset or data.get("dataset") or tcfg.get("dataset")
    if not dataset:
        raise ValueError("cannot tell which dataset the networks were trained on; set dataset")
    seed = cfg.split_seed if cfg.split_seed is not None else data.get("seed", tcfg.get("split_seed", 0))
    cache_dir = cfg.cache_dir or tcfg.get("cache_dir")
    split = load_split(dataset, n=1, seed=int(seed), channels=channels, cache_dir=cache_dir, progress=False,
                       n_test=data.get("n_test"))
    if not 0 <= cfg.image_index < split.test.shape[0]:
        raise ValueError(f"image_index {cfg.image_index} is outside the test set of {split.test.shape[0]} images")
    img = torch.as_tensor(split.test[cfg.image_index])
    more = torch.as_tensor(split.test[cfg.image_index: cfg.image_index + count])
    return img, more, {"dataset": str(dataset), "split_seed": int(seed), "test_index": cfg.image_index,
                 "pool_row": int(split.test_indices[cfg.image_index]), "shape": list(img.shape)}


def _pick(results, sigma: float):
    return min(results, key=lambda r: abs(r.sigma - sigma))


def _spectra_figure(analyses, labels, path):
    import numpy as np

    from gahb.report.figures import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, len(analyses), figsize=(4.6 * len(analyses), 3.4), sharey=True, squeeze=False)
    for ax, ia, lab in zip(axes[0], analyses, labels):
        for r in ia.results:
            ax.plot(np.arange(r.basis.k), r.basis.eigenvalues, lw=1.2, label=f"\u03c3={r.sigma:g}")
        ax.axhline(1, color="k", lw=0.5, ls=":")
        ax.axhline(0, color="k", lw=0.5)
        if max(r.basis.k for r in ia.results) > 50:
            ax.set_xscale("symlog", linthresh=10)
            ax.set_xlim(left=0)
        ax.set_title(lab, fontsize=10)
        ax.set_xlabel("k")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("\u03bb_k (shrinkage factor)")
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def run(config: Config, out_dir, *, progress: bool = True, preset: str | None = None) -> dict:
    """Analyse the two networks' Jacobians; measure, draw, judge; write results.json and figures."""
    from gahb.utils.device import resolve_device

    config.validate()
    return run_phases(NAME, config, out_dir, preset, measure=measure, draw=draw, claims_of=claims_of,
                      progress=progress, device=str(resolve_device(config.device)))


def measure(cfg: Config, out, watch, progress: bool = True) -> tuple[dict, list]:
    """Both networks' Jacobians at one held-out image and every sigma; SURE and tr J over the SURE images
    (both networks); dense Jacobian statistics over them at the reference sigma. Returns the numbers and
    the two image analyses (for the figures)."""
    from gahb.analysis.adaptive_basis import JacobianAnalysisConfig, analyze_image, analyze_sigma, spectrum_statistics
    from gahb.analysis.sure import sure_check
    from gahb.training.checkpoint import load_denoiser
    from gahb.utils.device import resolve_device

    device = resolve_device(cfg.device)
    runs, labels, transition = find_runs(cfg)
    jcfg = JacobianAnalysisConfig(sigmas=list(cfg.sigmas), method=cfg.method, k=cfg.k, chunk=cfg.chunk,
                                  seed=cfg.seed)
    analyses, models_info, image_info, loaded = [], [], None, []
    for run_dir, label in zip(runs, labels):
        model, rcfg = load_denoiser(run_dir, device, weights=cfg.weights)
        model.requires_grad_(False)
        channels = int(rcfg["model"].get("channels", 1))
        if image_info is None:
            clean, sure_images, image_info = held_out_image(cfg, rcfg, transition, channels, cfg.sure_images)
            watch.lap("data")
        if progress:
            print(f"[gahb] {label}: Jacobian at {len(cfg.sigmas)} noise levels ({cfg.method}, d = {clean.numel()})",
                  flush=True)
        analyses.append(analyze_image(model, clean.to(device), jcfg, progress=progress))
        loaded.append(model)
        models_info.append({"label": label, "run_dir": str(run_dir), "n": (rcfg.get("data") or {}).get("n"),
                            "model": rcfg["model"], "weights": rcfg["weights"]})
        watch.lap("jacobian")

    first_model, last_model = loaded
    sure = sure_check(last_model, sure_images.to(device), cfg.sigmas, draws=cfg.sure_draws, probes=cfg.sure_probes,
                      seed=cfg.seed, progress=progress)
    mem = sure_check(first_model, sure_images.to(device), cfg.sigmas, draws=cfg.memorising_draws,
                     probes=cfg.sure_probes, seed=cfg.seed, progress=progress)
    traces = trace_comparison(sure, mem, len(sure_images), cfg.sure_draws, cfg.memorising_draws, seed=cfg.seed)
    sure.pop("pairs", None)
    watch.lap("sure")
    over_images = [spectrum_statistics(analyze_sigma(last_model, img.to(device), cfg.reference_sigma,
                                                     JacobianAnalysisConfig(sigmas=[cfg.reference_sigma],
                                                                            method="dense", chunk=cfg.chunk,
                                                                            seed=cfg.seed + i)))
                   for i, img in enumerate(sure_images)]
    watch.lap("jacobians_over_images")

    # -- numbers ---------------------------------------------------------------------------------
    def per_sigma(ia) -> list[dict]:
        rows = []
        for r in ia.results:
            n = r.numbers
            lam = r.basis.eigenvalues
            rows.append({
                "sigma": r.sigma, "input_psnr": n["input_psnr"], "output_psnr": n["output_psnr"],
                "mse_true": n["mse_true"], "mse_sure": n["sure"]["mse_sure"],
                "sure_single_draw_sd": n["sure"]["single_draw_sd"],
                "trace": n["trace"]["effective_dimension"], "trace_stderr": n["trace"]["effective_dimension_stderr"],
                "asymmetry": n["asymmetry"], "identity_linear": n["identities"]["linear"],
                "eigenvalues_top16": [float(v) for v in lam[:16]],
                "eigenvalues_paper_indices": {str(k): float(lam[k]) for k in PAPER_FIG3 if k < len(lam)},
                "eigenvalues_above_half": int((lam > 0.5).sum()),
                "seconds": n["seconds"]})
        return rows

    ref = jacobian_reference()
    numbers = {"image": image_info, "sigmas": [float(s) for s in cfg.sigmas], "method": cfg.method,
               "models": [{**mi, "per_sigma": per_sigma(ia)} for mi, ia in zip(models_info, analyses)],
               "sure": sure, "traces": traces,
               "over_images": {"sigma": cfg.reference_sigma, "per_image": over_images,
                               "summary": {k: spread([r[k] for r in over_images]) for k in STATS}},
               # the published BF-CNN measured the same way (gahb study published), kept so that the claims
               # can be re-judged from this file alone
               "reference": ref}
    return numbers, analyses


def draw(cfg: Config, numbers: dict, analyses: list, out) -> list[dict]:
    """Paper Fig 3 for both networks (basis vectors side by side, the generalising network's montage),
    the spectra and tr J against sigma; the figure list."""
    from gahb.report.figures import pyplot
    from gahb.report.jacobian_figures import (comparison_figure, effective_dimension_figure, eigenvector_montage,
                                              montage_indices)

    labels = [m["label"] for m in numbers["models"]]
    plt = pyplot()
    figs = []

    def fig(name: str, caption: str) -> Path:
        figs.append({"path": f"figures/{name}", "caption": caption})
        return out / "figures" / name

    s_show = min(cfg.sigmas, key=lambda s: abs(s - 0.15))  # the paper's Fig 3 noise level
    plt.close(comparison_figure(analyses, labels, sigma=s_show, count=cfg.montage_count,
                                path=fig("comparison.png",
                                         f"Held-out image at \u03c3={s_show:g}: clean, noisy, denoised and adaptive "
                                         f"basis vectors e_k (eigenvectors of (J+J\u1d40)/2, red/blue centred at 0) "
                                         f"of the {labels[0]} network (top row) and the {labels[1]} network; below, "
                                         "their spectra \u03bb_k and the clean image's coefficients |<x, e_k>|.")))
    big = _pick(analyses[1].results, s_show)
    idx = montage_indices(big.basis.k, count=21 if big.basis.k > 245 else 14)
    plt.close(eigenvector_montage(big.basis, idx, images=[("clean", big.x.reshape(big.basis.shape)),
                                                          ("noisy", big.y.reshape(big.basis.shape)),
                                                          ("denoised", big.fy.reshape(big.basis.shape))],
                                  title=f"{labels[1]}: adaptive basis at \u03c3={s_show:g}",
                                  path=fig("eigenvectors_large_n.png",
                                           f"Paper Fig 3 layout for the {labels[1]} network: eigenvectors "
                                           f"k = {', '.join(map(str, idx))} with their shrinkage factors \u03bb_k.")))
    plt.close(_spectra_figure(analyses, labels, fig("spectra.png",
                              "Shrinkage factors \u03bb_k against k at each noise level, memorising (left) and "
                              "generalising (right) network: as \u03c3 grows fewer directions are kept.")))
    plt.close(effective_dimension_figure(analyses, labels=labels, path=fig(
        "effective_dimension.png",
        "Left: effective dimensionality tr J against \u03c3 for both networks (eq. 7). Right: SURE (eq. 7) "
        "against the true MSE of the denoised image.")))
    return figs


__all__ = ["Config", "PRESETS", "claims_of", "draw", "find_runs", "held_out_image", "judge", "measure", "run"]
