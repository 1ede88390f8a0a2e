"""The lab's published blind denoisers, measured with every gahb tool (Mohan et al. 2020; paper sections 3, A.2).

Converged networks that nobody here trained, imported exactly (:mod:`gahb.models.importers`):

1. **Bias-free generalization across noise levels** (Mohan et al., ICLR 2020): PSNR against sigma of
   the bias-free DnCNNs trained on sigma in [0, 10] and [0, 100] (out of 255) on Set68, with the
   standard protocol (:mod:`gahb.analysis.denoising`), beside the published table. Reuses a committed
   ``gahb evaluate`` run when the checkpoint's sha256, the images and the protocol match.
2. **The adaptive basis of a converged BF-CNN on natural images** (paper section 3, Fig 3, eqs. 6-7):
   the universal_inverse_problem BF-CNN's Jacobian on Set12 crops, dense at ``crop`` (asymmetry,
   top and negative eigenvalues, tr J, f(y) = J y, over every crop; spectra at several sigma and a
   Fig 3 montage), matrix-free top-k by Lanczos at ``topk_crop``, and SURE against the true MSE
   over ``n_crops`` crops x ``sure_draws`` noise draws (:func:`gahb.analysis.sure.sure_check`).
3. **Its implicit prior** (App. A.2; Kadkhodaie & Simoncelli 2021): samples at two sizes, and the four
   linear inverse problems on Set12 crops beside the linear baselines (:mod:`gahb.sampling.inverse`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gahb.data import center_crop
from gahb.studies._published_claims import claims_of, judge  # noqa: F401 (judge: the study contract)
from gahb.studies.common import begin, finish, runs_dir
from gahb.utils.config import runtime
from gahb.utils.noise import JACOBIAN_STREAM, gaussian

NAME = "published"
UIP_FILE = "uip_bf_cnn_bsd400_gray_0to100.pt"
BFD_FILES = {"0-10": "bfd_dncnn_bias_free_0-10.pt", "0-100": "bfd_dncnn_bias_free_0-100.pt"}
# Mohan et al. 2020: the same DnCNN *with* biases, trained on [0, 10], at sigma = 50 (their Fig 1).
BIASED_DNCNN_0_10_AT_50 = 15.3


@dataclass(frozen=True)
class Config:
    """Everything the published-denoisers study computes from.

    ``weights_dir``: a folder holding the published files (``UIP_FILE`` and the ``BFD_FILES``), imported
    into ``runs_dir``;
    ``images_dir``: a folder holding ``Set12/`` and ``Set68/``. ``evaluations_dir``: committed
    ``gahb evaluate`` JSONs reused for the Set68 part when they match (None: always measure).
    Noise levels: ``set68_sigmas`` out of 255; every other sigma on the [0, 1] pixel scale.
    """

    weights_dir: str | None = None
    images_dir: str | None = None
    evaluations_dir: str | None = "docs/results/published"
    set68_sigmas: tuple = (10, 30, 50, 70, 100)
    set68_limit: int | None = None
    set68_tolerance_db: float = 0.05
    crop: int = 40
    n_crops: int = 12
    dense_sigma: float = 0.1
    spectrum_sigmas: tuple = (0.05, 0.1, 0.2, 0.4)
    spectrum_crops: int = 1
    sure_sigmas: tuple = (0.05, 0.1, 0.2, 0.4)
    sure_draws: int = 4
    sure_probes: int = 32
    topk_crop: int = 80
    topk_crops: int = 2
    topk_k: int = 32
    topk_sigma: float = 0.1
    topk_tol: float = 1e-3
    samples_small: int = 16
    samples_large: int = 4
    sampler: str = "paper"
    inverse_crop: int = 64
    inverse_images: int = 12
    inverse_tasks: tuple = ("inpaint", "pixels", "superres", "cs")
    montage_count: int = 21
    seed: int = 0
    chunk: int = 32
    device: str = "cpu"
    threads: int | None = runtime(None)
    # The imported run folders hold copies of the published weights: kept under runs/ (ignored by
    # git) by default, never inside the study's output, which may be committed.
    runs_dir: str | None = runtime("runs/published")

    def validate(self) -> None:
        if not self.weights_dir or not self.images_dir:
            raise ValueError("give weights_dir (--weights) and images_dir (--images): the folders holding the "
                             f"published checkpoints ({UIP_FILE}, ...) and the Set12/ and Set68/ images")
        missing = [str(p) for p in self.paths().values() if not p.exists()]
        if missing:
            raise FileNotFoundError(f"published files not found: {', '.join(missing)}")
        if self.dense_sigma not in self.spectrum_sigmas:
            raise ValueError(f"dense_sigma {self.dense_sigma} must be one of spectrum_sigmas {self.spectrum_sigmas}")
        if self.n_crops < 2 or self.sure_draws < 1 or self.spectrum_crops > self.n_crops:
            raise ValueError("need n_crops >= 2, sure_draws >= 1 and spectrum_crops <= n_crops")

    def paths(self) -> dict[str, Path]:
        w, i = Path(self.weights_dir), Path(self.images_dir)
        return {"uip": w / UIP_FILE, **{k: w / f for k, f in BFD_FILES.items()}, "set12": i / "Set12", "set68": i / "Set68"}


PRESETS: dict[str, Config] = {
    # Seconds, for the test suite (skipped where the published files are absent).
    "test": Config(set68_sigmas=(50,), set68_limit=1, evaluations_dir=None, crop=12, n_crops=2,
                   spectrum_sigmas=(0.1, 0.2), sure_sigmas=(0.1, 0.2), sure_draws=2, sure_probes=4, topk_crop=16,
                   topk_crops=1, topk_k=4, samples_small=2, samples_large=1, inverse_crop=16, inverse_images=2,
                   inverse_tasks=("pixels", "superres"), montage_count=6, chunk=144),
    "quick": Config(n_crops=4, sure_draws=2, topk_crops=1, samples_small=8, samples_large=2, inverse_images=4,
                    inverse_crop=40),
    # The acceptance run: about 35 minutes on 2 CPU cores when the Set68 evaluations are reused.
    "standard": Config(),
    "paper": Config(crop=80, spectrum_crops=2, topk_crop=160, topk_k=64, samples_large=16, inverse_crop=128,
                    device="auto"),
}


def imported(cfg: Config, key: str, out: Path):
    """The published checkpoint ``key`` imported into the study's runs folder (reused when its sha256 matches)."""
    from gahb.models.importers import import_checkpoint
    from gahb.training.checkpoint import load_denoiser
    from gahb.utils.io import file_sha256, read_json

    src = cfg.paths()[key]
    fmt = "uip-bfcnn" if key == "uip" else "bfd-dncnn"
    run = runs_dir(cfg, out) / ("uip-bfcnn" if key == "uip" else f"bfd-dncnn-{key}")
    cfg_path = run / "config.json"
    if not (cfg_path.is_file() and (read_json(cfg_path).get("imported") or {}).get("source_sha256") == file_sha256(src)):
        import_checkpoint(fmt, src, run, overwrite=True)
    model, config = load_denoiser(run)
    return model.requires_grad_(False), config, run


def homogeneity_error(model, x: torch.Tensor, a: float = 1.7, sigma: float = 0.1, seed: int = 0) -> float:
    """max |f(a y) - a f(y)| / max |a f(y)| at a noisy crop: 0 up to rounding for a bias-free network."""
    y = (x + sigma * gaussian(x.shape, seed)).unsqueeze(0)
    with torch.no_grad():
        fa, f = model(a * y), a * model(y)
    return float((fa - f).abs().max() / f.abs().max())


def find_evaluation(folder: str | None, source_sha256: str, names: list[str], signature: dict, protocol) -> dict | None:
    """A committed ``gahb evaluate`` record of the same checkpoint bytes, images and protocol whose
    noise levels include ``protocol.sigmas``, or None."""
    from gahb.utils.io import read_json

    if not folder:
        return None
    base = Path(folder)
    if not base.is_dir():
        here = Path(__file__).resolve().parents[3] / folder  # relative to the repository
        base = here if here.is_dir() else base
    for path in sorted(base.glob("evaluate_*.json")) if base.is_dir() else []:
        rec = read_json(path)
        proto = rec.get("protocol") or {}
        if ((rec.get("imported") or {}).get("source_sha256") == source_sha256 and rec.get("images") == names
                and rec.get("image_sha256") == signature
                and {k: v for k, v in proto.items() if k != "sigmas"} == protocol.comparable()
                and set(protocol.sigmas) <= set(proto.get("sigmas", []))):
            return {**rec, "path": str(path)}
    return None


def set68_part(cfg: Config, out: Path, progress: bool) -> dict:
    """PSNR against sigma of both bias-free DnCNNs on Set68: reused or measured, beside the published table."""
    from gahb.analysis.denoising import DenoisingProtocol, evaluate_denoiser, image_set_signature, load_image_set
    from gahb.models import optimize_for_inference
    from gahb.models.published import by_sha256

    protocol = DenoisingProtocol(sigmas=tuple(float(s) for s in cfg.set68_sigmas), seed=cfg.seed)
    images = load_image_set(cfg.paths()["set68"], limit=cfg.set68_limit)
    names = [n for n, _ in images]
    signature = image_set_signature(cfg.paths()["set68"], names)
    result = {}
    for key in BFD_FILES:
        model, config, run = imported(cfg, key, out)
        sha = config["imported"]["source_sha256"]
        found = find_evaluation(cfg.evaluations_dir, sha, names, signature, protocol)
        if found is not None:
            idx = [found["protocol"]["sigmas"].index(s) for s in protocol.sigmas]
            rows = [found["per_sigma"][j] for j in idx]
            how = f"reused {found['path']} (same checkpoint sha256, images and protocol)"
        else:
            rec = evaluate_denoiser(optimize_for_inference(model), images, protocol, progress=progress)
            rows, how = rec["per_sigma"], f"measured now on {len(names)} image(s)"
        pub = by_sha256(sha)
        ref = pub.set68_psnr if pub is not None and len(names) == 68 else {}
        result[key] = {"run": str(run), "source_sha256": sha, "how": how, "noise_range": config["imported"]["noise_range"],
                       "rows": [{**r, "published": ref.get(f"{r['sigma']:g}")} for r in rows]}
    return {"images": len(names), "protocol": protocol.to_dict(), "models": result}


def analysis_part(cfg: Config, model, crops: list[torch.Tensor], progress: bool) -> tuple[dict, list]:
    """Dense Jacobian analysis of each crop (all spectrum sigmas for the first ``spectrum_crops``)."""
    from tqdm.auto import tqdm

    from gahb.analysis.adaptive_basis import JacobianAnalysisConfig, analyze_image, spectrum_statistics

    per_crop, analyses = [], []
    for i, x in enumerate(tqdm(crops, desc="dense Jacobians", disable=not progress, leave=False)):
        sig = list(cfg.spectrum_sigmas) if i < cfg.spectrum_crops else [cfg.dense_sigma]
        ia = analyze_image(model, x, JacobianAnalysisConfig(sigmas=sig, method="dense", chunk=cfg.chunk,
                                                             seed=cfg.seed + i, probes=16))
        analyses.append(ia)
        r = min(ia.results, key=lambda q: abs(q.sigma - cfg.dense_sigma))
        per_crop.append({"crop": i, **spectrum_statistics(r)})
    return {"per_crop": per_crop, "summary": _summary(per_crop)}, analyses


def _summary(rows: list[dict]) -> dict:
    out = {}
    for key in ("asymmetry", "lambda_max", "lambda_min", "trace", "negative_eigenvalues"):
        v = np.array([r[key] for r in rows], dtype=np.float64)
        out[key] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
                    "min": float(v.min()), "max": float(v.max())}
    return out


def topk_part(cfg: Config, model, crops: list[torch.Tensor], progress: bool) -> tuple[dict, list]:
    """Matrix-free top-k eigenpairs (Lanczos) of the larger crops, with Hutchinson traces."""
    from gahb.analysis.adaptive_basis import JacobianAnalysisConfig, analyze_sigma

    jcfg = JacobianAnalysisConfig(sigmas=[cfg.topk_sigma], method="topk", k=cfg.topk_k, tol=cfg.topk_tol,
                                  chunk=cfg.chunk, probes=32, seed=cfg.seed)
    rows, results = [], []
    for i, x in enumerate(crops):
        noise = gaussian((1, *x.shape), cfg.seed + JACOBIAN_STREAM + i, dtype=torch.float64)
        r = analyze_sigma(model, x, cfg.topk_sigma, jcfg, noise, progress)
        results.append(r)
        n = r.numbers
        rows.append({"crop": i, "d": n["d"], "eigenvalues": [float(v) for v in r.basis.eigenvalues],
                     "lanczos": n["lanczos"], "asymmetry_estimate": n["asymmetry"],
                     "trace": n["trace"]["effective_dimension"], "trace_stderr": n["trace"]["effective_dimension_stderr"],
                     "seconds": n["seconds"]})
    return {"per_crop": rows, "k": cfg.topk_k, "size": cfg.topk_crop, "sigma": cfg.topk_sigma}, results


def prior_part(cfg: Config, model, inverse_images: torch.Tensor, progress: bool) -> dict:
    """Samples at two sizes and the four inverse problems with their baselines."""
    from gahb.sampling import get_config, sample
    from gahb.sampling.inverse import restore_images

    scfg = get_config(cfg.sampler)
    samples = {}
    for size, n in ((cfg.crop, cfg.samples_small), (cfg.topk_crop, cfg.samples_large)):
        res = sample(model, (1, size, size), list(range(cfg.seed, cfg.seed + n)), scfg, progress=progress)
        samples[str(size)] = {"images": res.samples.cpu(), "status": res.status,
                              "evaluations": [int(e) for e in res.evaluations], "num_failed": len(res.failed)}
    inverse = {}
    for task in cfg.inverse_tasks:
        inverse[task] = restore_images(model, inverse_images, task, config=scfg, op_seed=cfg.seed,
                                       seeds=range(cfg.seed, cfg.seed + len(inverse_images)), progress=progress)
    return {"samples": samples, "inverse": inverse}


def run(config: Config, out_dir, *, progress: bool = True, preset: str | None = None) -> dict:
    """Import the published networks, measure them, write results.json and the figures."""
    from gahb.analysis.denoising import load_image_set
    from gahb.analysis.sure import sure_check
    from gahb.models import optimize_for_inference
    from gahb.studies import _published_figures as figures

    cfg = config
    cfg.validate()
    started, out, watch = begin(cfg, out_dir)

    def log(msg: str) -> None:
        if progress:
            print(f"[published] {msg}", flush=True)

    # 1. measure: Set68 table, dense Jacobians, SURE, Lanczos, the prior's samples and inverse problems
    log(f"Set68 PSNR at sigma = {', '.join(f'{s:g}' for s in cfg.set68_sigmas)}/255 (both bias-free DnCNNs)")
    set68 = set68_part(cfg, out, progress)
    watch.lap("set68")
    uip, uip_config, uip_run = imported(cfg, "uip", out)
    set12 = load_image_set(cfg.paths()["set12"])
    crops = [center_crop(img, cfg.crop) for _, img in set12][: cfg.n_crops]
    checks = {"homogeneity": {key: homogeneity_error(imported(cfg, key, out)[0], crops[0]) for key in ("uip", *BFD_FILES)}}
    log(f"dense Jacobians of {len(crops)} Set12 crops at {cfg.crop}x{cfg.crop}")
    dense, analyses = analysis_part(cfg, uip, crops, progress)
    watch.lap("dense_jacobians")
    log(f"SURE against the true MSE: {len(crops)} crops x {cfg.sure_draws} draws x {len(cfg.sure_sigmas)} sigma")
    sure = sure_check(uip, crops, cfg.sure_sigmas, draws=cfg.sure_draws, probes=cfg.sure_probes, seed=cfg.seed,
                      chunk=cfg.chunk, progress=progress)
    watch.lap("sure")
    log(f"top-{cfg.topk_k} eigenpairs (Lanczos) at {cfg.topk_crop}x{cfg.topk_crop}")
    big = [center_crop(img, cfg.topk_crop) for _, img in set12][: cfg.topk_crops]
    topk, topk_results = topk_part(cfg, uip, big, progress)
    watch.lap("topk")
    log("samples and inverse problems from the implicit prior")
    inv_imgs = torch.stack([center_crop(img, cfg.inverse_crop) for _, img in set12][: cfg.inverse_images])
    prior = prior_part(cfg, optimize_for_inference(uip), inv_imgs, progress)
    watch.lap("prior")

    # 2. figures
    figs = figures.write_all(out, cfg, set68, dense, analyses, sure, topk, topk_results, prior, crops, inv_imgs)
    watch.lap("figures")
    numbers = {
        "models": {"uip": {"run": str(uip_run), "imported": uip_config["imported"]},
                   **{k: {"run": v["run"], "source_sha256": v["source_sha256"]} for k, v in set68["models"].items()}},
        "checks": checks, "set68": set68, "dense": dense, "sure": {k: v for k, v in sure.items() if k != "pairs"},
        "sure_pairs": sure["pairs"], "topk": topk,
        "samples": {k: {kk: vv for kk, vv in v.items() if kk != "images"} for k, v in prior["samples"].items()},
        "inverse": {t: {k: v for k, v in r.items() if k not in ("restored", "baselines")}
                    for t, r in prior["inverse"].items()},
        "crops": {"set12": [n for n, _ in set12][: cfg.n_crops], "size": cfg.crop, "position": "centre"},
        "timing_s": watch.stages,
    }
    return finish(out, NAME, preset, cfg, claims_of(cfg, numbers), numbers, figs, started,  # 3. claims
                  device=cfg.device)


__all__ = ["Config", "PRESETS", "claims_of", "judge", "run"]
