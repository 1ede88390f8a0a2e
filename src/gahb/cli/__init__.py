"""The ``gahb`` command line: a thin layer over the library.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a handler taking the parsed
arguments. Handlers import heavy libraries lazily so ``gahb --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gahb.cli.common import float_list

__all__ = ["COMMAND_MODULES", "GahbError", "build_parser", "float_list", "main"]

# Order here is the order in ``gahb --help``.
COMMAND_MODULES = ["data", "train", "importer", "denoise", "evaluate", "sample", "restore", "jacobian", "study",
                   "reproduce", "report"]


class GahbError(Exception):
    """An error whose message is meant for the user (printed without a traceback)."""


def build_parser() -> argparse.ArgumentParser:
    from gahb import __version__

    parser = argparse.ArgumentParser(
        prog="gahb",
        description=(
            "Reproduce and extend 'Generalization in diffusion models arises from geometry-adaptive "
            "harmonic representations' (Kadkhodaie et al., ICLR 2024): train blind bias-free "
            "denoisers, sample from their implicit prior, analyse their Jacobians."
        ),
    )
    parser.add_argument("--version", action="version", version=f"gahb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"gahb.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except (GahbError, FileNotFoundError, ValueError) as exc:
        if getattr(args, "debug", False):
            raise
        print(f"gahb {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
