"""The ``swappass`` command: ``swappass <command> [options]``.

Each command module contributes ``add_<command>_parser(subparsers)``, which defines its options and sets
``func(args) -> int`` as the parser default; :func:`main` runs it through :func:`swappass.cli.exits.run_command`,
the one place that turns errors into exit statuses (0 done, 1 a check failed, 2 bad input, 130 interrupted).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..core.version import __version__
from .eval import add_eval_parser
from .exits import run_command
from .export_command import add_export_parser
from .generate_command import add_generate_parser
from .prune_command import add_prune_parser
from .verify_command import add_verify_parser

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The ``swappass`` argument parser with its commands (prune, eval, export, verify, generate)."""
    parser = argparse.ArgumentParser(
        prog="swappass",
        description="Exact 1-swap (SparseSwaps) pruning of Transformer Linear layers, with verified ONNX export.",
    )
    parser.add_argument("--version", action="version", version=f"swappass {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_prune_parser(subparsers)
    add_eval_parser(subparsers)
    add_export_parser(subparsers)
    add_verify_parser(subparsers)
    add_generate_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded by prune as the command line of the run
    return run_command(lambda: args.func(args), args.command)
