"""The ``swappass`` command: ``swappass <command> [options]``.

Each command module contributes ``add_<command>_parser(subparsers)``, which defines its options and sets
``func(args) -> int`` as the parser default; :func:`main` runs it through :func:`swappass.cli.exits.run_command`,
the one place that turns errors into exit statuses (0 done, 1 a check failed or an unexpected error, 2 bad input,
3 nothing could be pruned, 130 interrupted). Every command takes ``--debug``: an unexpected error's traceback on
stderr too (it always goes to ``swappass-error.log``: in ``--out`` for prune, beside the ``--out`` file for export,
in the temporary directory for eval).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from ..core.version import __version__
from .eval import add_eval_parser
from .exits import run_command
from .export_command import add_export_parser
from .generate_command import add_generate_parser
from .prune_command import add_prune_parser
from .threads import ThreadPolicy
from .verbosity import configure_output
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
    for command in subparsers.choices.values():
        add_common_options(command)
    return parser


def add_common_options(command: argparse.ArgumentParser) -> None:
    """``--threads``, ``--verbose`` and ``--debug``, which every command takes."""
    command.add_argument("--threads", default="auto", metavar="N",
                         help="CPU threads: a number, or auto (physical cores less those other processes keep busy, "
                         "chosen at the start of each stage; OMP_NUM_THREADS, if set, fixes it)")
    command.add_argument("--verbose", action="store_true",
                         help="also show the libraries' own progress bars and notices (transformers, the ONNX "
                         "exporter)")
    command.add_argument("--debug", action="store_true",
                         help="print the traceback of an unexpected error (it is always written to swappass-error.log)")


def _log_dir(args: argparse.Namespace) -> Path | None:
    """Where an unexpected error's traceback goes: the prune run's directory, the exported file's directory."""
    if args.command == "prune":
        return Path(args.out)
    if args.command == "export":
        return Path(args.out).parent
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded by prune as the command line of the run
    configure_output(args.verbose)

    def command() -> int:
        args.thread_policy = ThreadPolicy.from_option(args.threads)  # bad --threads: exit 2 like other input
        args.thread_policy.enter(args.command)  # prune sets its stages' own counts
        return args.func(args)

    return run_command(command, args.command, _log_dir(args), debug=args.debug)
