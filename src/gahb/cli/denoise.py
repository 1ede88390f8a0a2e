"""``gahb denoise``: add noise to an image, denoise it with a trained network, report PSNRs."""

from __future__ import annotations

import json
from pathlib import Path
from gahb.cli.common import HelpFormatter, add_runtime_flags, add_weights_flag, weights_choice

EPILOG = """\
The clean image is read at the network's number of channels (colour is averaged to gray for a
1-channel network), N(0, sigma^2) noise is added with a CPU generator seeded by --seed (the same
noisy image on every device), and the network (in eval mode) maps it back. Both images are written
(8-bit, clamped to [0, 1]); the PSNRs are computed on the unclamped values against the clean image.

example:
  gahb denoise --checkpoint runs/fm_n1000_s1 --image shirt.png --sigma 0.1 --seed 0 --out shirt_den.png
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "denoise", help="add noise to an image and denoise it with a trained network",
        description="Add Gaussian noise of std --sigma (pixel scale [0,1]) to a clean image, denoise it with "
                    "a trained blind denoiser, write the result and the noisy input, print input and output "
                    "PSNR against the clean image.",
        epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, help="run folder (or its model.safetensors)")
    add_weights_flag(p)
    p.add_argument("--image", required=True, help="clean image file (PNG/JPEG/.npy)")
    p.add_argument("--sigma", type=float, default=0.1, help="noise std on the [0,1] pixel scale")
    p.add_argument("--seed", type=int, default=0, help="seed of the added noise")
    p.add_argument("--out", required=True, help="denoised image path (.png, .jpg, ...)")
    p.add_argument("--noisy-out", default=None, help="noisy image path (default: OUT with a _noisy suffix)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_runtime_flags(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from gahb.data import load_image, save_image
    from gahb.training import denoise_image, load_denoiser
    from gahb.utils.device import resolve_device

    if not (args.sigma >= 0):
        raise ValueError(f"--sigma must be >= 0, got {args.sigma}")
    device = resolve_device(args.device)
    model, config = load_denoiser(args.checkpoint, device, weights=weights_choice(args))
    clean = load_image(args.image, channels=config["model"].get("channels", 1))
    res = denoise_image(model, clean, args.sigma, seed=args.seed, device=device)
    out = Path(args.out)
    noisy_out = Path(args.noisy_out) if args.noisy_out else out.with_name(out.stem + "_noisy" + out.suffix)
    save_image(out, res["denoised"])
    save_image(noisy_out, res["noisy"])
    summary = {"image": str(args.image), "weights": config["weights"], "sigma": args.sigma, "seed": args.seed,
               "psnr_in": res["psnr_in"], "psnr_out": res["psnr_out"], "out": str(out), "noisy_out": str(noisy_out)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"input  PSNR {res['psnr_in']:.2f} dB  (noisy, sigma={args.sigma:g}) -> {noisy_out}")
        print(f"output PSNR {res['psnr_out']:.2f} dB  (denoised)            -> {out}")
    return 0
