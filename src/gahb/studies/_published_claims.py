"""The claims table of the published-denoisers study (:mod:`gahb.studies.published`).

Targets were fixed before the study's numbers were read. Where the paper gives no number or the
quantity has no calibrated threshold (asymmetry, the extreme eigenvalues), the row is informative
(``passed`` None) and carries the measurement with its spread: it is the reference that the
trained networks' rows are compared with (:mod:`gahb.studies.references`). Every judged row names
its reference or its uncertainty.
"""

from __future__ import annotations

from gahb.studies.common import claim

HOMOGENEITY_TOL = 1e-5
IDENTITY_TOL = 1e-4
MAX_FAILED_FRACTION = 0.05


def _r(v, n=3):
    return None if v is None else round(float(v), n)


def _wilson(k: int, n: int) -> str:
    from gahb.analysis.uncertainty import binomial_interval

    iv = binomial_interval(k, n)
    return f"95% Wilson interval of the failure rate [{iv.lo:.3f}, {iv.hi:.3f}]"


def judge(results: dict) -> list[dict]:
    """The claims of a published ``results.json``, from it alone."""
    from gahb.studies.common import config_from_dict
    from gahb.studies.published import Config

    return claims_of(config_from_dict(Config, results["config"]), results["numbers"])


def claims_of(cfg, numbers: dict) -> list[dict]:
    from gahb.studies.published import BIASED_DNCNN_0_10_AT_50

    out = []
    hom = numbers["checks"]["homogeneity"]
    worst = max(hom.values())
    out.append(claim("imported networks are bias-free: f(a y) = a f(y)",
                     "bias-free networks are homogeneous of order 1 (Mohan et al. 2020; paper section 3)",
                     {k: float(f"{v:.2g}") for k, v in hom.items()}, worst < HOMOGENEITY_TOL,
                     f"max |f(1.7 y) - 1.7 f(y)| / max |f| < {HOMOGENEITY_TOL:g} for each network",
                     "on a noisy Set12 crop (sigma 0.1), through gahb import",
                     why="an imported network is not homogeneous: a bias or a layout error",
                     reference="0 up to float32 rounding (an identity of bias-free networks)",
                     uncertainty="none: a deterministic identity"))

    set68 = numbers["set68"]
    for key, m in set68["models"].items():
        diffs = {f"{r['sigma']:g}": _r(r["psnr"] - r["published"], 3) for r in m["rows"] if r["published"] is not None}
        ours = {f"{r['sigma']:g}": _r(r["psnr"], 2) for r in m["rows"]}
        ok = (max(abs(v) for v in diffs.values()) <= cfg.set68_tolerance_db) if diffs else None
        out.append(claim(f"BF-DnCNN {key} reproduces its published Set68 table",
                         {f"{r['sigma']:g}": r["published"] for r in m["rows"]} if diffs else "(needs all 68 images)",
                         {"gahb": ours, "difference": diffs or None}, ok,
                         f"|gahb - published| <= {cfg.set68_tolerance_db:g} dB at every sigma" if diffs else "",
                         f"{set68['images']} images; {m['how']}",
                         why="gahb's PSNR differs from the published table by more than the tolerance",
                         reference="the published Set68 table of the same checkpoint (Mohan et al. 2020)",
                         uncertainty="standard error of the mean PSNR over the images: "
                                     + ", ".join(f"{r['psnr_se']:.2f}" for r in m["rows"] if r.get("psnr_se") is not None)
                                     + " dB (the same images and noise seeds as the published protocol, so the "
                                       "difference is far below it)"))
    rows = {r["sigma"]: r for r in set68["models"]["0-10"]["rows"]}
    s50 = min(rows, key=lambda s: abs(s - 50))
    psnr50 = rows[s50]["psnr"]
    out.append(claim("bias-free DnCNN trained on sigma <= 10 denoises far outside its training range",
                     f"biased DnCNN trained on [0, 10] falls to about {BIASED_DNCNN_0_10_AT_50} dB at sigma = 50; "
                     "the bias-free one does not (Mohan et al. 2020)",
                     {f"psnr at sigma {s50:g}": _r(psnr50, 2), "noisy input": _r(rows[s50]["psnr_in"], 2)},
                     psnr50 > BIASED_DNCNN_0_10_AT_50 + 5,
                     f"PSNR at sigma {s50:g}/255 > {BIASED_DNCNN_0_10_AT_50} + 5 dB", f"{set68['images']} Set68 images",
                     why="the bias-free network is not far above the biased one outside its training range",
                     reference=f"the biased DnCNN trained on [0, 10]: {BIASED_DNCNN_0_10_AT_50} dB (Mohan et al. 2020)",
                     uncertainty="" if rows[s50].get("psnr_se") is None else
                     f"standard error over the images {rows[s50]['psnr_se']:.2f} dB"))

    dense = numbers["dense"]
    summ = dense["summary"]
    ident = max(r["identity_linear"] for r in dense["per_crop"])
    out.append(claim("published BF-CNN: f(y) = J(y) y on natural-image crops (eq. 6)",
                     "f(y) = \u2207f(y) y for bias-free networks", float(f"{ident:.2g}"), ident < IDENTITY_TOL,
                     f"max ||J y - f(y)|| / ||f(y)|| < {IDENTITY_TOL:g}", f"{len(dense['per_crop'])} crops, dense J",
                     why="the output is not the Jacobian applied to the input",
                     reference="0 up to float32 rounding (an identity of bias-free networks)",
                     uncertainty="none: a deterministic identity, evaluated exactly"))

    def sd(key: str, n: int = 3) -> dict:
        return {stat: _r(summ[key][stat], n) for stat in ("mean", "sd", "min", "max")}

    out.append(claim("published BF-CNN: asymmetry of the Jacobian ||J - J^T||_F / ||J||_F",
                     "J is close to symmetric (section 3; Mohan et al. 2020); no number given",
                     sd("asymmetry"), None, "",
                     f"{len(dense['per_crop'])} Set12 crops {cfg.crop}x{cfg.crop}, sigma {cfg.dense_sigma:g}; the "
                     "reference for what 'nearly symmetric' means on a converged network"))
    out.append(claim("published BF-CNN: extreme eigenvalues of (J + J^T)/2",
                     "top shrinkage factors slightly above 1 (1.24 for faces at sigma 0.15, Fig 3)",
                     {"lambda_max": sd("lambda_max"), "lambda_min": sd("lambda_min"),
                      "negative eigenvalues": sd("negative_eigenvalues", 1)}, None, "",
                     f"sigma {cfg.dense_sigma:g}, over the crops"))
    sure = numbers["sure"]
    tr = [(r["sigma"], r["trace"], r["trace_se"]) for r in sure["per_sigma"]]
    falls = all(b[1] + 2 * b[2] < a[1] - 2 * a[2] for a, b in zip(tr, tr[1:])) if len(tr) > 1 else None
    out.append(claim("published BF-CNN: effective dimension tr J falls as sigma grows (eq. 7)",
                     "tr \u2207f shrinks with noise (Fig 3)", {f"{s:g}": _r(t, 1) for s, t, _ in tr}, falls,
                     "each step down by more than 2 standard errors of both means" if falls is not None else "",
                     f"mean over {sure['settings']['images']} crops x {sure['settings']['draws']} draws, "
                     f"{sure['settings']['trace']}",
                     why="tr J does not fall by more than its standard errors at some step",
                     uncertainty="standard error of each mean over the (crop, draw) pairs: "
                                 + ", ".join(f"{se:.1f}" for _, _, se in tr)))
    out.append(claim("published BF-CNN: SURE estimates the true MSE (eq. 7)",
                     "MSE = E[2 sigma^2 tr J + ||y - f(y)||^2 - sigma^2 d]",
                     {f"{r['sigma']:g}": {"sure": float(f"{r['sure']:.4g}"), "mse": float(f"{r['mse']:.4g}"),
                                          "z": _r(r["z"], 2)} for r in sure["per_sigma"]}, sure["passed"],
                     f"|mean(SURE - MSE)| <= {sure['settings']['z_tolerance']:g} standard errors at every sigma",
                     f"{sure['settings']['images']} crops x {sure['settings']['draws']} noise draws per sigma",
                     why="SURE differs from the true MSE by more than its standard error allows at some sigma",
                     reference="the true MSE of the same denoised crops",
                     uncertainty="standard error over the (crop, draw) pairs; z = difference / standard error"))
    tk = numbers["topk"]
    out.append(claim(f"published BF-CNN at {tk['size']}x{tk['size']}: top-{tk['k']} eigenpairs by Lanczos",
                     "(matrix-free: J is never formed)",
                     {f"crop {r['crop']}": {"lambda_1..4": [_r(v) for v in r["eigenvalues"][:4]],
                                            "products": r["lanczos"]["matvecs"], "converged": r["lanczos"]["converged"]}
                      for r in tk["per_crop"]},
                     all(r["lanczos"]["converged"] for r in tk["per_crop"]),
                     f"every Ritz pair converged (residual <= {cfg.topk_tol:g} lambda_1)", f"sigma {tk['sigma']:g}",
                     why="some Ritz pairs did not converge within the product budget",
                     reference=f"the Ritz residual tolerance {cfg.topk_tol:g} lambda_1",
                     uncertainty="largest Ritz residual per crop: " + ", ".join(
                         f"{r['lanczos']['max_residual']:.1e}" for r in tk["per_crop"])))

    for size, s in numbers["samples"].items():
        n = len(s["status"])
        out.append(claim(f"samples from the published BF-CNN's prior ({size}x{size}) converge",
                         "the sampler converges on a converged denoiser (App. A.2)",
                         {"failed": f"{s['num_failed']} of {n}",
                          "evaluations": f"{min(s['evaluations'])}-{max(s['evaluations'])}"},
                         s["num_failed"] <= MAX_FAILED_FRACTION * n,
                         f"at most {MAX_FAILED_FRACTION:.0%} fail (sigma_t above 2 or max_steps)", cfg.sampler,
                         why=f"{s['num_failed']} of {n} samples failed",
                         uncertainty=_wilson(s["num_failed"], n)))
    for task, r in numbers["inverse"].items():
        prior, gain = r["psnr"]["prior"], r["gain_over_baselines"]
        ok = None if prior["mean"] is None else all(g["mean"] - 2 * g["se"] > 0 for g in gain.values())
        out.append(claim(f"inverse problem '{task}': the prior beats every linear baseline",
                         "the denoiser's prior restores images from linear measurements (Kadkhodaie & Simoncelli 2021)",
                         {"psnr": {k: f"{v['mean']:.2f}" if v["mean"] is not None else "all failed"
                                   for k, v in r["psnr"].items()},
                          "gain": {k: f"{g['mean']:+.2f} \u00b1 {g['se']:.2f}" if g["mean"] is not None else None
                                   for k, g in gain.items()}}, ok,
                         "paired gain over each baseline, mean - 2 s.e. > 0 dB",
                         f"{r['fraction_measured']:.1%} of the numbers measured",
                         why="the gain over some baseline is not 2 standard errors above 0",
                         reference="the linear baselines on the same images and measurements",
                         uncertainty="standard error of the paired gain over the images (+- above)",
                         failed=r["num_failed"], inputs=len(r["status"])))
    return out
