"""``gahb jacobian``: adaptive-basis (Jacobian eigen-) analysis of a trained denoiser on one image."""

from __future__ import annotations

import time
from pathlib import Path
from gahb.cli.common import HelpFormatter, add_runtime_flags, add_weights_flag, weights_choice

EPILOG = """\
For each --sigma the clean image x gets the noise sigma*z (one z for all sigma, seeded by --seed);
the Jacobian J of the denoiser output at y = x + sigma z is analysed in eval mode:
  dense: J is formed (d forward passes of the frozen-activation network, in chunks), S = (J+J^T)/2 is
         eigendecomposed in float64: all eigenvalues, exact trace, exact identities (paper eq. 6).
  topk:  J is never formed: top --k eigenpairs of S by Lanczos (residual <= --tol * lambda_1), tr J by
         Hutchinson with --probes Rademacher probes (plus a version deflated by the top k), and the
         exact trace from the diagonal only with --exact-trace (d more forward passes).
Writes OUT/jacobian.json (config, eigenvalues, asymmetry, traces, SURE vs true MSE, identity
residuals, oracle errors), OUT/arrays.npz (eigenvalues, coefficients, eigenvectors) and figures:
eigenvector montages (diverging colormap centred at 0, each panel titled with k and lambda_k),
spectrum, coefficient decay, effective dimension vs sigma; with --compare, a side-by-side figure.

examples:
  gahb jacobian --checkpoint runs/fm_n60000 --dataset fashion-mnist --index 3 --sigma 0.05 0.1 0.2 --out jac/
  gahb jacobian --checkpoint runs/celeba_1e5 --image face.png --sigma 0.15 --method topk --k 64 --out jac/
  gahb jacobian --checkpoint runs/fm_n10 --compare runs/fm_n60000 --labels N=10 N=60000 \\
      --dataset fashion-mnist --index 3 --sigma 0.1 --out jac_compare/
"""


def register(subparsers) -> None:
    from gahb.analysis.adaptive_basis import METHODS

    p = subparsers.add_parser(
        "jacobian", help="eigen-analysis of a denoiser's Jacobian (geometry-adaptive harmonic bases)",
        description="Compute the Jacobian of a trained blind denoiser at noisy versions of one image, its "
                    "eigendecomposition (the adaptive basis and shrinkage factors of paper eq. 6), its trace "
                    "(effective dimensionality, eq. 7), SURE vs true MSE and the oracle error (eqs. 11-12).",
        epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, help="run folder (or its model.safetensors)")
    add_weights_flag(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="clean image file (PNG/JPEG/.npy), read at the network's channels")
    src.add_argument("--dataset", help="dataset spec as for `gahb data` (e.g. fashion-mnist, npy:FILE.npy)")
    p.add_argument("--index", type=int, default=0, help="image index within --split of --dataset")
    p.add_argument("--split", choices=["test", "pool"], default="test",
                   help="test: the held-out test set of the dataset's seeded split; pool: raw pool row")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the dataset split (for --split test)")
    p.add_argument("--crop", type=int, default=None, metavar="N",
                   help="analyse the central NxN window of the image (e.g. 40 for a dense J of a photograph)")
    p.add_argument("--sigma", type=float, nargs="+", default=[0.05, 0.1, 0.2], help="noise levels (pixel scale)")
    p.add_argument("--method", choices=METHODS, default="dense", help="dense J or matrix-free top-k")
    p.add_argument("--k", type=int, default=32, help="topk: eigenpairs to compute; dense: all are computed, max(k, 256) eigenvectors are saved")
    p.add_argument("--tol", type=float, default=1e-5, help="Lanczos residual tolerance relative to lambda_1")
    p.add_argument("--block", type=int, default=2,
                   help="Lanczos block size (vectors per batched product; 2 was fastest on a 2-core CPU)")
    p.add_argument("--guard", type=int, default=2,
                   help="Lanczos: this many Ritz pairs beyond --k must converge too, against missed eigenvalues")
    p.add_argument("--probes", type=int, default=64, help="Hutchinson probes for the trace")
    p.add_argument("--exact-trace", action="store_true", help="topk: also the exact trace (d more JVPs)")
    p.add_argument("--svd", action="store_true", help="dense: also the SVD of J")
    p.add_argument("--chunk", type=int, default=16, help="vectors per batched pass (bounds memory)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and of the random probes")
    p.add_argument("--compare", default=None, help="second checkpoint analysed identically (e.g. large N)")
    p.add_argument("--labels", nargs=2, default=None, metavar=("A", "B"), help="labels of the two checkpoints")
    p.add_argument("--every", type=int, default=None, help="montage: every m-th eigenvector (paper: 12)")
    p.add_argument("--start", type=int, default=None, help="montage: first eigenvector index (paper: 5)")
    p.add_argument("--count", type=int, default=21, help="montage: number of eigenvectors shown")
    p.add_argument("--no-figures", action="store_true", help="write only the JSON and arrays")
    p.add_argument("--out", required=True, help="output folder")
    add_runtime_flags(p, device="cpu", progress="quiet")
    p.set_defaults(func=run)


def _load_clean(args, channels: int):
    import torch

    from gahb.cli import GahbError

    if args.image:
        from gahb.data import load_image

        return load_image(args.image, channels=channels), {"image": str(args.image)}
    from gahb.data import load_pool, load_split

    pool = load_pool(args.dataset, channels=channels, progress=not args.quiet)
    if args.split == "pool":
        n = len(pool)
        idx = args.index
        if not 0 <= idx < n:
            raise GahbError(f"--index {idx} is out of range for a pool of {n} images")
        img = pool.get([idx])[0]
    else:
        split = load_split(args.dataset, n=1, seed=args.split_seed, channels=channels, progress=not args.quiet,
                           pool=pool)
        n = split.test.shape[0]
        if not 0 <= args.index < n:
            raise GahbError(f"--index {args.index} is out of range for a test set of {n} images")
        img = split.test[args.index]
        idx = int(split.test_indices[args.index])
    return torch.as_tensor(img), {"dataset": str(args.dataset), "split": args.split, "index": args.index,
                                  "pool_row": int(idx), "split_seed": args.split_seed}


def run(args) -> int:
    from gahb.analysis.adaptive_basis import JacobianAnalysisConfig, analyze_image, save_arrays
    from gahb.cli import GahbError
    from gahb.training.checkpoint import load_denoiser
    from gahb.utils.device import resolve_device
    from gahb.utils.io import atomic_write_json

    if args.labels and not args.compare:
        raise GahbError("--labels names the two checkpoints; give --compare too")
    if args.chunk < 1 or args.k < 1:
        raise GahbError("--chunk and --k must be >= 1")
    device = resolve_device(args.device)
    cfg = JacobianAnalysisConfig(sigmas=args.sigma, method=args.method, k=args.k, tol=args.tol, block=args.block,
                                 guard=args.guard,
                                 probes=args.probes, exact_trace=args.exact_trace, svd=args.svd, chunk=args.chunk,
                                 seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = [args.checkpoint] + ([args.compare] if args.compare else [])
    labels = args.labels or [Path(c).name or str(c) for c in checkpoints]
    if len(checkpoints) == 2 and labels[0] == labels[1]:
        labels = ["A: " + labels[0], "B: " + labels[1]]
    summary: dict = {"config": cfg.to_dict(), "models": []}
    analyses = []
    for ci, (ckpt, label) in enumerate(zip(checkpoints, labels)):
        model, config = load_denoiser(ckpt, device, weights=weights_choice(args))
        channels = int(config["model"].get("channels", 1))
        clean, source = _load_clean(args, channels)
        if args.crop:
            from gahb.data import center_crop

            clean = center_crop(clean, args.crop)
            source["crop"] = f"central {args.crop}x{args.crop}"
        if cfg.method == "topk" and cfg.k >= clean.numel():
            raise GahbError(f"--k {cfg.k} must be smaller than the number of pixels {clean.numel()}")
        t0 = time.perf_counter()
        ia = analyze_image(model, clean.to(device), cfg, progress=not args.quiet)
        analyses.append(ia)
        prefix = "" if ci == 0 else "compare_"
        entry = {"label": label, "checkpoint": str(ckpt), "weights": config["weights"], "model": config["model"],
                 "source": source,
                 "seconds": time.perf_counter() - t0, **ia.summary()}
        entry.pop("config")
        summary["models"].append(entry)
        save_arrays(ia, out / f"{prefix}arrays.npz", max_vectors=max(cfg.k, 256))
        if not args.no_figures:
            from gahb.report.jacobian_figures import write_all

            entry["figures"] = write_all(ia, out, every=args.every, start=args.start, count=args.count, prefix=prefix)
        for r in ia.results:
            n = r.numbers
            tr = n["trace"]
            print(f"[{label}] sigma={r.sigma:g}: PSNR {n['input_psnr']:.2f} -> {n['output_psnr']:.2f} dB, "
                  f"tr J = {tr['effective_dimension']:.2f} (+-{tr['effective_dimension_stderr']:.2f}), "
                  f"lambda_1..3 = {', '.join(f'{v:.3f}' for v in r.basis.eigenvalues[:3])}, "
                  f"asymmetry {n['asymmetry']:.3f}, SURE {n['sure']['mse_sure']:.2e} vs MSE {n['mse_true']:.2e}, "
                  f"|Jy-f(y)|/|f(y)| = {n['identities']['linear']:.1e}")
    if len(analyses) == 2 and not args.no_figures:
        from gahb.report.jacobian_figures import comparison_figure, effective_dimension_figure
        from gahb.report.figures import pyplot

        plt = pyplot()
        for s in cfg.sigmas:
            plt.close(comparison_figure(analyses, labels, sigma=s, every=args.every, start=args.start,
                                        path=out / f"comparison_sigma{s:g}.png"))
        plt.close(effective_dimension_figure(analyses, labels=labels, path=out / "comparison_effective_dimension.png"))
    atomic_write_json(out / "jacobian.json", summary)
    print(f"wrote {out / 'jacobian.json'}")
    return 0
