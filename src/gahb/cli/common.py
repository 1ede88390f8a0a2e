"""What every ``gahb`` command shares: the help formatter, the runtime flags, size and list parsing."""

from __future__ import annotations

import argparse

DEVICE_HELP = "auto (a GPU when present), cpu, cuda, cuda:N or mps"


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Epilogs keep their layout (examples, tables) and every option shows its default."""


def add_runtime_flags(parser, *, device: str | None = "auto", device_help: str = DEVICE_HELP,
                      threads: bool = False, progress: str | None = None, debug: bool = True) -> None:
    """Add the flags that say how a command runs, not what it computes.

    ``device``: the default of ``--device`` (no flag when False); ``threads``: add ``--threads``;
    ``progress``: the attribute that hides progress bars, ``"quiet"`` or ``"no_progress"`` (both
    spellings, ``--quiet`` and ``--no-progress``, are accepted); ``debug``: add ``--debug``.
    """
    if device is not False:
        parser.add_argument("--device", default=device, help=device_help)
    if threads:
        parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (None: torch's choice)")
    if progress is not None:
        if progress not in ("quiet", "no_progress"):
            raise ValueError(f"progress must be 'quiet' or 'no_progress', got {progress!r}")
        parser.add_argument("--quiet", "--no-progress", dest=progress, action="store_true", help="hide progress bars")
    if debug:
        parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def add_weights_flag(parser) -> None:
    """``--raw-weights``: load the weights training left instead of the run's EMA of its weights."""
    parser.add_argument("--raw-weights", action="store_true",
                        help="load the raw weights instead of the run's exponential moving average of them "
                             "(model_ema.safetensors, loaded by default when the run kept one)")


def weights_choice(args) -> str:
    """``load_denoiser``'s ``weights`` for the parsed arguments: "raw" with --raw-weights, else "ema"."""
    return "raw" if getattr(args, "raw_weights", False) else "ema"


def float_list(text: str) -> tuple[float, ...]:
    """An argparse type: numbers separated by commas or spaces."""
    try:
        vals = tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one number")
    return vals


def parse_size(text: str, option: str = "--size", square: bool = True) -> tuple[int, int]:
    """'H' (when ``square``) or 'HxW' as two positive integers; a clear error naming ``option`` otherwise."""
    from gahb.cli import GahbError

    form = "H or HxW" if square else "HxW"
    try:
        parts = [int(s) for s in str(text).lower().replace("x", " ").replace(",", " ").split()]
    except ValueError:
        raise GahbError(f"{option} must be {form}, got {text!r}") from None
    if square and len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise GahbError(f"{option} must be {form}, got {text!r}")
    return parts[0], parts[1]
