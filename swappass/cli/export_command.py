"""``swappass export``: its options, and the run that hands them to the export job (:mod:`swappass.cli.export`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..core.errors import InputError
from .exits import EXIT_OK

__all__ = ["add_export_parser", "run_export"]


def add_export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``swappass export`` and its options to the command's subparsers."""
    p = subparsers.add_parser(
        "export",
        help="export a pruned model directory to ONNX and verify it with onnxruntime",
        description="Export a pruned model directory (save_pretrained + swappass_masks.safetensors) to ONNX, then "
        "verify it. A causal LM becomes a decoder with a KV cache in onnxruntime-genai's layout (genai_config.json "
        "and the tokenizer beside the file; run it with `swappass generate`), verified by greedy generation in "
        "onnxruntime against PyTorch (tokens and the logits of every step); other models one graph, verified at two "
        "input shapes. Every pruned weight is audited in the file. Exits 1 when verification fails.",
    )
    p.add_argument("model_dir", type=Path, help="pruned model directory (save_pretrained output)")
    p.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=None,
                   help="ONNX opset, checked before anything is loaded (default: the exporter's)")
    p.add_argument("--exporter", choices=("auto", "genai", "torch"), default="auto",
                   help="KV-cache decoder: the onnxruntime-genai model builder (genai), torch.onnx (torch), or the "
                   "builder where it supports the model (auto)")
    p.add_argument("--no-kv-cache", action="store_true",
                   help="a causal LM as one graph input_ids/attention_mask → logits, without a cache")
    p.add_argument("--tokens", type=int, default=32, help="greedy tokens compared with PyTorch (KV-cache decoder)")
    p.add_argument("--static", action="store_true",
                   help="fixed input shapes instead of dynamic batch/sequence axes (implies --no-kv-cache)")
    p.add_argument("--optimize", choices=("fold", "full", "none"), default="fold",
                   help="graph clean-up after torch.onnx's translation: constant folding and structural passes (fold), "
                   "the exporter's whole optimiser with its pattern rewriter (full, slower), or none")
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
    """``swappass export``; returns the exit status (errors propagate to :func:`swappass.cli.exits.run_command`)."""
    if args.batch < 1 or args.seq_len < 1 or args.tokens < 1:
        raise InputError(f"--batch, --seq-len and --tokens must be ≥ 1 (got {args.batch}, {args.seq_len} and "
                         f"{args.tokens})")
    from ..onnx.opsets import check_opset  # loads onnx: only when exporting

    opset = check_opset(args.opset)
    kv_cache = False if args.no_kv_cache else None
    if args.static and kv_cache is None:
        kv_cache = False  # fixed shapes exist only for the graph without a cache
    from ..onnx.verify import VerificationError
    from .export import export_pruned_dir

    report = export_pruned_dir(
        args.model_dir, args.out, batch=args.batch, seq_len=args.seq_len, opset=opset,
        dynamic=not args.static, compact=args.compact, external_data=True if args.external_data else None,
        verify=not args.no_verify, rtol=args.rtol, atol=args.atol, verbose=True, kv_cache=kv_cache,
        exporter=args.exporter, generate_tokens=args.tokens, optimize=args.optimize,
    )
    if args.json is not None:
        report.write_json(args.json)
    if not report.passed:
        raise VerificationError(f"{args.out} failed verification")
    return EXIT_OK
