"""The ``swappass`` command: ``swappass <command> [options]``.

Each command contributes ``add_<command>_parser(subparsers)``, which defines its options and sets
``func(args) -> int`` (the exit status) as the parser default; :func:`build_parser` lists them.

Exit status: 0 success, 1 the work ran but its result failed a check (e.g. ONNX verification), 2 bad input.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main", "build_parser", "add_export_parser", "run_export"]

EXIT_OK, EXIT_FAILED_CHECK, EXIT_BAD_INPUT = 0, 1, 2


# ---------------------------------------------------------------------------------------------- export
def add_export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="export a pruned model directory to ONNX and verify it with onnxruntime",
        description="Export a pruned model directory (save_pretrained + swappass_masks.safetensors) to ONNX, then "
        "verify it: onnxruntime against PyTorch at two input shapes, and a sparsity audit of the file. "
        "Exits 1 when verification fails.",
    )
    p.add_argument("model_dir", type=Path, help="pruned model directory (save_pretrained output)")
    p.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--static", action="store_true", help="fixed input shapes instead of dynamic batch/sequence axes")
    p.add_argument("--compact", action="store_true",
                   help="store highly sparse weights as bit mask + values (smaller file; onnxruntime folds it at load)")
    p.add_argument("--external-data", action="store_true",
                   help="always write weights to OUT.data (default: only when over the 2 GB protobuf limit)")
    p.add_argument("--no-verify", action="store_true", help="skip onnxruntime verification and the sparsity audit")
    p.add_argument("--batch", type=int, default=2, help="batch size of the example inputs (default 2)")
    p.add_argument("--seq-len", type=int, default=16, help="sequence length of the example inputs (default 16)")
    p.add_argument("--rtol", type=float, default=None, help="verification tolerance, relative to max |PyTorch output|")
    p.add_argument("--atol", type=float, default=None, help="verification tolerance, absolute")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON to this file")
    p.set_defaults(func=run_export)
    return p


def run_export(args: argparse.Namespace) -> int:
    """``swappass export``; returns the exit status."""
    from .onnx_adapter import ExportError
    from .pruned_dir import export_pruned_dir

    if args.batch < 1 or args.seq_len < 1:
        return _bad_input(f"--batch and --seq-len must be ≥ 1 (got {args.batch} and {args.seq_len})")
    try:
        report = export_pruned_dir(
            args.model_dir, args.out, batch=args.batch, seq_len=args.seq_len, opset=args.opset,
            dynamic=not args.static, compact=args.compact, external_data=True if args.external_data else None,
            verify=not args.no_verify, rtol=args.rtol, atol=args.atol, verbose=True,
        )
    except ExportError as exc:
        return _bad_input(str(exc))
    if args.json is not None:
        report.write_json(args.json)
    if not report.passed:
        print(f"swappass export: {args.out} failed verification", file=sys.stderr)
        return EXIT_FAILED_CHECK
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- the command
def _bad_input(message: str) -> int:
    print(f"swappass: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="swappass",
        description="Exact 1-swap (SparseSwaps) pruning of Transformer Linear layers, with verified ONNX export.",
    )
    parser.add_argument("--version", action="version", version=f"swappass {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_export_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
