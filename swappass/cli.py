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

__all__ = [
    "main", "build_parser", "add_prune_parser", "run_prune", "add_eval_parser", "run_eval", "add_export_parser",
    "run_export",
]

EXIT_OK, EXIT_FAILED_CHECK, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: …)`` only for options whose default is a value (not None / False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _split_selectors(values: Sequence[str] | None) -> list[str] | None:
    """``--targets a,b --targets c`` -> ``["a", "b", "c"]`` (a ``re:`` selector is kept whole)."""
    if values is None:
        return None
    out: list[str] = []
    for v in values:
        out.extend([v] if v.startswith("re:") else [x for x in v.split(",") if x])
    return out


# ---------------------------------------------------------------------------------------------- prune
def add_prune_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .prune_run import DTYPES, REFINE_CHOICES, REFIT_CHOICES, WARM_START_CHOICES

    p = subparsers.add_parser(
        "prune",
        help="prune a model's Linear layers (warm start + exact 1-swap refinement) and save it",
        description="Prune the Linear layers of a causal LM and write a save_pretrained directory (model, tokenizer, "
        "swappass_masks.safetensors, swappass.json with the recipe and the per-site report). Interrupted runs "
        "resume: run the same command again. Launched by torchrun (torchrun --nproc-per-node N -m swappass prune …), "
        "the ranks split the 1-swap refinement and rank 0 writes the single-process result. Exit status: 0 done, "
        "1 ONNX verification failed, 2 bad input, 130 interrupted.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("model", help="Hugging Face model directory, .gguf file, hub id, or the alias smollm2-135m")
    p.add_argument("--out", type=Path, required=True, help="output directory (new or empty, or this run's own)")
    p.add_argument("--pattern", default="0.6",
                   help="sparsity: 0.6 / row:0.6 (60%% per row), 2:4, 4:8 (N kept of M), unstructured:0.6")
    p.add_argument("--warm-start", default="wanda", choices=WARM_START_CHOICES, help="initial mask")
    p.add_argument("--iters", type=int, default=100, help="1-swap iterations per row (0: warm start only)")
    p.add_argument("--refine", default=REFINE_CHOICES[0], choices=REFINE_CHOICES,
                   help="mask refinement after the warm start")
    p.add_argument("--refit", default=REFIT_CHOICES[0], choices=REFIT_CHOICES,
                   help="refit the kept weights on the final mask")
    p.add_argument("--calib", default="wikitext2",
                   help="calibration text: a text file, wikitext2 (the shared WikiText-2 validation), self "
                   "(data-free: sampled from the model), or hf:NAME[:CONFIG[:SPLIT]] (needs `datasets` + network)")
    p.add_argument("--nsamples", type=int, default=128, help="calibration sequences")
    p.add_argument("--seqlen", type=int, default=2048, help="tokens per calibration sequence")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration windows / samples")
    p.add_argument("--batch-size", type=int, default=1, help="calibration sequences per forward pass")
    p.add_argument("--device", default="auto",
                   help="auto (cuda if available), cpu, cuda, cuda:N; under torchrun: auto/cuda (each rank its own "
                   "GPU) or cpu (gloo)")
    p.add_argument("--dtype", default="float32", choices=list(DTYPES), help="model dtype (Gram matrices: float32)")
    p.add_argument("--gram-tf32", action="store_true",
                   help="Gram products of fp16/bf16 activations on TF32 tensor cores: ~2.4x faster calibration on an "
                        "H100, 10-40x larger Gram error (default: exact float32 GEMM)")
    p.add_argument("--targets", action="append", metavar="SEL",
                   help="prune only matching sites: names, dotted suffixes (q_proj), class names, re:REGEX; "
                   "repeat or separate with commas (default: all Linear sites)")
    p.add_argument("--ignore", action="append", metavar="SEL", default=None,
                   help="also leave these sites dense (lm_head / the output projection always stay dense)")
    p.add_argument("--onnx", action="store_true", help="export OUT/model.onnx and verify it with onnxruntime")
    p.add_argument("--plot", action="store_true",
                   help="write OUT/reduction.png: relative error reduction per block and projection")
    p.add_argument("--overwrite", action="store_true", help="replace a different run already in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_prune)
    return p


def run_prune(args: argparse.Namespace) -> int:
    """``swappass prune``; returns the exit status."""
    from .gram import NonFiniteActivationError
    from .graph import CaptureError
    from .prune_run import PruneInputError, PruneOptions, prune_to_dir

    opts = PruneOptions(
        model=args.model, out=args.out, pattern=args.pattern, warm_start=args.warm_start, iters=args.iters,
        calib=args.calib, nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed, device=args.device,
        dtype=args.dtype, batch_size=args.batch_size, gram_tf32=args.gram_tf32,
        targets=_split_selectors(args.targets),
        ignore=_split_selectors(args.ignore) or [], refine=args.refine, refit=args.refit, onnx=args.onnx,
        plot=args.plot, overwrite=args.overwrite, progress=not args.no_progress,
    )
    try:
        outcome = prune_to_dir(opts, getattr(args, "argv", None))
    except PruneInputError as exc:
        return _bad_input(str(exc))
    except CaptureError as exc:
        return _bad_input(f"the model could not be captured as a graph: {exc}")
    except NonFiniteActivationError as exc:  # finished levels stay in the checkpoint
        return _bad_input(f"{exc}; with --dtype float16/bfloat16 try --dtype float32")
    except KeyboardInterrupt:
        print("swappass prune: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if outcome.onnx_passed is False:
        print(f"swappass prune: {args.out / 'model.onnx'} failed verification", file=sys.stderr)
        return EXIT_FAILED_CHECK
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- eval
def add_eval_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .prune_run import DTYPES

    p = subparsers.add_parser(
        "eval",
        help="perplexity of a causal LM (standard windows protocol), optionally against a dense model",
        description="Perplexity with the protocol of Wanda / SparseGPT: the text's rows joined with blank lines, "
        "tokenized once, cut into non-overlapping windows of --seqlen tokens (remainder dropped), "
        "exp(mean over windows of the mean next-token cross-entropy). --compare adds the KL divergence "
        "KL(dense || model) per token and the top-1 agreement with the dense model.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("model", help="model directory (e.g. a swappass prune output), .gguf file, hub id or alias")
    p.add_argument("--text", default="wikitext2",
                   help="text file to evaluate on; wikitext2 = the shared WikiText-2 raw test split")
    p.add_argument("--seqlen", type=int, default=2048, help="tokens per window")
    p.add_argument("--max-windows", type=int, default=None, help="evaluate only the first N windows")
    p.add_argument("--batch-size", type=int, default=1, help="windows per forward pass")
    p.add_argument("--compare", metavar="DENSE_MODEL", default=None,
                   help="reference model (same tokenizer): adds KL divergence and top-1 agreement")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="float32", choices=list(DTYPES), help="model dtype")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_eval)
    return p


def run_eval(args: argparse.Namespace) -> int:
    """``swappass eval``; returns the exit status."""
    from .eval_run import EvalInputError, evaluate_to_console

    try:
        evaluate_to_console(
            args.model, text=args.text, seqlen=args.seqlen, max_windows=args.max_windows,
            batch_size=args.batch_size, compare=args.compare, device=args.device, dtype=args.dtype,
            json_path=args.json, progress=not args.no_progress,
        )
    except EvalInputError as exc:
        return _bad_input(str(exc))
    except KeyboardInterrupt:
        print("swappass eval: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


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
    add_prune_parser(subparsers)
    add_eval_parser(subparsers)
    add_export_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded by prune as the command line of the run
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
