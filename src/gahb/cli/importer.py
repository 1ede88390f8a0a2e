"""``gahb import``: a published checkpoint of the lab's denoisers as a gahb run folder."""

from __future__ import annotations

import argparse
import json
from gahb.cli.common import HelpFormatter, add_runtime_flags

EPILOG = """\
formats:
{formats}
  auto        guessed from the file's keys

The network is rebuilt as a gahb BF-CNN or UNet that computes the same function (checked against
reference forward passes in the tests), written as OUT/model.safetensors + OUT/config.json.
config.json records the source format, file, sha256, output convention (residual or clean
estimate), pixel scale ([0, 1]), the training noise range where the source states it (its args or
its file path, e.g. "0to100"), and the architecture, with the choices a state_dict cannot reveal
(--first-layer-linear, --pool-window) marked as options or the official main.py defaults.
Nothing is written when the file does not fit the format. Loading uses torch.load(weights_only=True)
with argparse.Namespace allow-listed for bfd-dncnn only; nothing else is ever unpickled.

Every command taking --checkpoint accepts OUT: gahb denoise, evaluate, sample (give --size), restore,
jacobian, and the studies.

examples:
  gahb import uip-bfcnn universal_inverse_problem/denoisers/BF_CNN/BSD400_gray/noise_range_0to100/model.pt --out runs/uip_bfcnn
  gahb import bfd-dncnn bias_free_denoising/pretrained/dncnn/bias_free/0-100.pt --out runs/bfd_0-100
  gahb import gahb-unet denoisers/UNet/img_align_celeba_80x80/0to255_RF_90x90_set_size_99325/model.pt --out runs/celeba_unet
"""


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def register(subparsers) -> None:
    from gahb.models.importers import FORMATS

    formats = "\n".join(f"  {f.name:<11} {f.title} ({f.repository}, e.g. {f.example}); returns the "
                        + ("clean estimate" if f.output == "clean" else "residual") for f in FORMATS.values())
    p = subparsers.add_parser(
        "import", help="turn a published denoiser checkpoint into a gahb run folder",
        description="Read a published blind-denoiser checkpoint (universal_inverse_problem, bias_free_denoising, "
                    "or the paper's official code) without running pickled code, rebuild it as a gahb network and "
                    "write a run folder.",
        epilog=EPILOG.format(formats=formats), formatter_class=HelpFormatter)
    p.add_argument("format", choices=[*FORMATS, "auto"], help="checkpoint layout")
    p.add_argument("path", help="the checkpoint file (.pt)")
    p.add_argument("--out", required=True, help="run folder to write (must be empty or absent)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    g = p.add_argument_group("architecture choices a state_dict does not store (official GAHB code)")
    g.add_argument("--first-layer-linear", type=_bool, default=None, metavar="BOOL",
                   help="gahb-bfcnn: no ReLU after the first convolution (main.py default false; its "
                        "init_BF_CNN helper used true)")
    g.add_argument("--pool-window", type=int, default=None, help="gahb-unet: average-pooling window (default 2)")
    for name in ("enc", "mid", "dec"):
        g.add_argument(f"--{name}-convs", type=int, default=None,
                       help=f"gahb-unet: convolutions per {name} block; read off the keys, checked if given (default 2)")
    p.add_argument("--json", action="store_true", help="print config.json")
    add_runtime_flags(p, device=False)
    p.set_defaults(func=run)


def run(args) -> int:
    from gahb.cli import GahbError
    from gahb.models import count_parameters
    from gahb.models.importers import CheckpointError, import_checkpoint
    from gahb.training.checkpoint import load_denoiser

    options = {"first_layer_linear": args.first_layer_linear, "pool_window": args.pool_window,
               "enc_convs": args.enc_convs, "mid_convs": args.mid_convs, "dec_convs": args.dec_convs}
    try:
        out, config = import_checkpoint(args.format, args.path, args.out, overwrite=args.overwrite, **options)
    except (CheckpointError, FileExistsError) as exc:
        raise GahbError(str(exc)) from None
    model, _ = load_denoiser(out)  # what every --checkpoint command will load
    prov = config["imported"]
    if args.json:
        print(json.dumps(config, indent=2))
        return 0
    arch = config["model"]
    shape = f"{arch['num_layers']}-layer BF-CNN" if arch["arch"] == "bfcnn" else f"{arch['num_blocks']}-block UNet"
    noise = prov["noise_range"]
    print(f"{prov['format']}: {shape}, width {arch['width']}, {arch['channels']} channel(s), "
          f"{count_parameters(model):,} parameters -> {out}")
    print(f"source {prov['source_file']} (sha256 {prov['source_sha256'][:16]}...), "
          f"{prov['output_convention']} output, pixels on [0, 1]")
    print("training noise: " + (f"sigma in [{noise['sigma_255'][0]:g}, {noise['sigma_255'][1]:g}]/255 "
                                f"(stated by {noise['stated_by']})" if noise else "not stated by the source"))
    return 0
