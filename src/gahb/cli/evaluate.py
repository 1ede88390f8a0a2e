"""``gahb evaluate``: the standard denoising table (PSNR and SSIM against sigma) of a denoiser on a test set."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from gahb.cli.common import HelpFormatter, add_runtime_flags, add_weights_flag, weights_choice

EPILOG = """\
Protocol (bias_free_denoising's, which produced the published Set68 numbers): full images on [0, 1];
noise of std s / --sigma-scale added and not clipped; image i's unit noise is drawn once from a
CPU generator seeded --seed + i (the same at every s and for every network); the denoised image
clamped to [0, 1]; PSNR (data range 1) and SSIM (11x11 Gaussian window, std 1.5) per image,
averaged, with the standard error over images.

When the checkpoint is a published one (sha256 of its source file) with a published table for
these images (all 68 of Set68) under this protocol, that table is printed beside ours.
An interrupted run continues from OUT.partial.json when run again with the same arguments.
Cost: one Set68 pass of a 20-layer 64-channel BF-CNN is ~14 TFLOP, about 2 minutes on 2 CPU cores.

examples:
  gahb evaluate --checkpoint runs/bfd_0-100 --images Set68 --sigmas 10,20,...,100 --out set68.json
  gahb evaluate --checkpoint runs/uip_bfcnn --images Set12 --sigmas 15,25,50 --limit 4
"""


def parse_sigmas(text: str) -> list[float]:
    """``"10,20,30"``, or an arithmetic run written ``"10,20,...,100"``."""
    from gahb.cli import float_list

    if "..." not in text:
        return list(float_list(text))
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) != 4 or parts[2] != "...":
            raise ValueError
        a, b, c = float(parts[0]), float(parts[1]), float(parts[3])
        step, n = b - a, round((c - a) / (b - a)) if b > a else -1
        if step <= 0 or c < b or abs(a + n * step - c) > 1e-9 * max(1.0, abs(c)):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sigmas must be numbers separated by commas, or A,B,...,C with C - A a "
                                         f"multiple of B - A > 0; got {text!r}") from None
    return [a + k * step for k in range(n + 1)]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="denoising benchmark: PSNR/SSIM against sigma on a folder of test images",
        description="Measure a blind denoiser on full test images at several noise levels with the standard "
                    "protocol; print the table and write it as JSON.",
        epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, help="run folder (gahb train or gahb import)")
    add_weights_flag(p)
    p.add_argument("--images", required=True, help="folder of clean test images (e.g. Set12, Set68)")
    p.add_argument("--sigmas", type=parse_sigmas, default=parse_sigmas("10,20,...,100"),
                   help="noise levels, on the --sigma-scale scale")
    p.add_argument("--sigma-scale", type=float, default=255.0, help="noise std = sigma / this, on [0, 1]")
    p.add_argument("--seed", type=int, default=0, help="image i's noise comes from seed + i")
    p.add_argument("--no-clamp", action="store_true", help="measure the denoised image unclamped")
    p.add_argument("--clip-noisy", action="store_true", help="clip the noisy image to [0, 1] (not the standard)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images (sorted by name)")
    p.add_argument("--out", default=None, help="JSON file to write (default: print only)")
    p.add_argument("--no-optimize", action="store_true", help="run the network as stored (no BF-BN folding)")
    add_runtime_flags(p, threads=True, progress="no_progress")
    p.set_defaults(func=run)


def evaluation_record(args) -> dict:
    """Run the evaluation described by ``args``; the JSON-able record (also written to ``args.out``)."""
    import torch

    from gahb.analysis.denoising import DenoisingProtocol, evaluate_denoiser, image_set_signature, load_image_set
    from gahb.models import optimize_for_inference
    from gahb.models.published import SET68_SIZE, by_sha256
    from gahb.studies.common import command_line, environment
    from gahb.training.checkpoint import load_denoiser
    from gahb.utils.device import resolve_device
    from gahb.utils.io import atomic_write_json, file_sha256, read_json

    protocol = DenoisingProtocol(sigmas=tuple(args.sigmas), sigma_scale=args.sigma_scale, seed=args.seed,
                                 clamp=not args.no_clamp, clip_noisy=args.clip_noisy)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model, config = load_denoiser(args.checkpoint, device, weights=weights_choice(args))
    weights = config["weights_file"]
    if not args.no_optimize:
        model = optimize_for_inference(model, channels_last=device.type != "mps")
    images = load_image_set(args.images, channels=int(config["model"].get("channels", 1)), limit=args.limit)
    names = [n for n, _ in images]
    imported = config.get("imported") or {}
    published = by_sha256(imported.get("source_sha256"))
    reference = None
    if (published and published.set68_psnr and len(names) == SET68_SIZE and protocol.sigma_scale == 255
            and protocol.clamp and not protocol.clip_noisy):
        reference = {"source": f"{published.repository} precomputed Set68 metrics ({published.path})",
                     "psnr": published.set68_psnr}
    head = {"checkpoint": str(args.checkpoint), "weights": config["weights"], "weights_sha256": file_sha256(weights),
            "model": config["model"], "imported": imported or None,
            "images_dir": str(args.images), "image_sha256": image_set_signature(args.images, names)}

    out = Path(args.out) if args.out else None
    partial_path = out.with_name(out.name + ".partial") if out else None
    partial = None
    if partial_path is not None and partial_path.is_file():
        old = read_json(partial_path)
        if {k: old.get(k) for k in head} == head:
            partial = old
            print(f"continuing {partial_path}: {len(old.get('per_image', {}))} of {len(names)} images done",
                  file=sys.stderr)

    def save_partial(rec: dict) -> None:
        if partial_path is not None:
            atomic_write_json(partial_path, {**head, **rec})

    rec = evaluate_denoiser(model, images, protocol, device=device, progress=not args.no_progress,
                            partial=partial, on_image=save_partial)
    record = {**head, **rec, "published": reference, "environment": environment(str(device)),
              "command": command_line()}
    if out is not None:
        atomic_write_json(out, record)
        if partial_path.is_file():
            partial_path.unlink()
    return record


def run(args) -> int:
    from gahb.analysis.denoising import format_table

    record = evaluation_record(args)
    ref = (record.get("published") or {}).get("psnr")
    print(f"{record['checkpoint']} on {len(record['images'])} image(s) of {record['images_dir']} "
          f"(noise s/{record['protocol']['sigma_scale']:g}, seed {record['protocol']['seed']}; "
          f"{record['seconds']:.0f} s of compute)")
    print(format_table(record, {k: v for k, v in ref.items()} if ref else None))
    if ref:
        print(f"published: {record['published']['source']}")
    if record.get("command") and getattr(args, "out", None):
        print(f"written to {args.out}")
    return 0
