"""``swappass prune``: its options, and the run that hands them to the prune job (:mod:`swappass.cli.prune`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..graph.blocks import CALIBRATION_ORDERS
from ..graph.report import TABLE_STYLES
from ..lm.matmul_precision import MATMUL_PRECISIONS
from ..methods.options import REFINE_METHODS, REFIT_METHODS
from ..onnx.verify import VerificationError
from .exits import EXIT_OK
from .options import DTYPES, HelpFormatter, split_selectors

__all__ = ["add_prune_parser", "run_prune", "WARM_START_CHOICES"]

Subparsers = argparse._SubParsersAction  # what add_subparsers() returns
WARM_START_CHOICES = ("wanda", "magnitude", "ria", "sparsegpt")  # the default first, as --help lists them


def add_prune_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "prune",
        help="prune a model's Linear layers (warm start + exact 1-swap refinement) and save it",
        description="Prune the Linear layers of a causal LM and write a save_pretrained directory (model, tokenizer, "
        "swappass_masks.safetensors, swappass.json with the recipe and the per-site report). Interrupted runs "
        "resume: run the same command again. Launched by torchrun (torchrun --nproc-per-node N -m swappass prune …), "
        "the ranks split the 1-swap refinement and rank 0 writes the single-process result. Exit status: 0 done, "
        "1 a check failed (ONNX verification) or an unexpected error (traceback in OUT/swappass-error.log), 2 bad "
        "input, 3 nothing could be pruned, 130 interrupted.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("model", help="Hugging Face model directory, .gguf file, hub id, or the alias smollm2-135m")
    p.add_argument("--out", type=Path, required=True, help="output directory (new or empty, or this run's own)")
    p.add_argument("--pattern", default="0.6",
                   help="sparsity: 0.6 / row:0.6 (60%% per row), 2:4, 4:8 (N kept of M), unstructured:0.6")
    p.add_argument("--warm-start", default="wanda", choices=WARM_START_CHOICES, help="initial mask")
    p.add_argument("--iters", type=int, default=100, help="1-swap iterations per row (0: warm start only)")
    p.add_argument("--refine", default=REFINE_METHODS[0], choices=REFINE_METHODS,
                   help="mask refinement after the warm start")
    p.add_argument("--refit", default=REFIT_METHODS[0], choices=REFIT_METHODS,
                   help="refit the kept weights on the final mask")
    p.add_argument("--calib", default="wikitext2",
                   help="calibration text: a text file, wikitext2 (the shared WikiText-2 validation), self "
                   "(data-free: sampled from the model), or hf:NAME[:CONFIG[:SPLIT]] (needs `datasets` + network)")
    p.add_argument("--sample-precision", default="auto", choices=MATMUL_PRECISIONS,
                   help="with --calib self: the precision of the Linear matmuls while sampling; auto = bfloat16 on a "
                   "CPU with native bfloat16 matmuls (1.5x faster there, docs/BENCHMARKS.md), else the model's own")
    p.add_argument("--nsamples", type=int, default=128, help="calibration sequences")
    p.add_argument("--seqlen", type=int, default=2048, help="tokens per calibration sequence")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration windows / samples")
    p.add_argument("--batch-size", type=_batch_size, default=None, metavar="N|auto",
                   help="calibration sequences per forward pass (auto: as many as fit in 2048 tokens)")
    p.add_argument("--device", default="auto",
                   help="auto (cuda if available), cpu, cuda, cuda:N; under torchrun: auto/cuda (each rank its own "
                   "GPU) or cpu (gloo)")
    p.add_argument("--dtype", default="float32", choices=list(DTYPES), help="model dtype (Gram matrices: float32)")
    p.add_argument("--refit-rounds", type=int, default=1,
                   help="with --refit lstsq: 1 = swaps, then the refit; N > 1 alternates refits and swaps that "
                   "account for the refitted weights N-1 times more")
    p.add_argument("--calibration-order", default=CALIBRATION_ORDERS[0], choices=CALIBRATION_ORDERS,
                   help="level: every layer calibrated through all pruned layers upstream; block: every layer of a "
                   "block on the block's inputs from the pruned blocks before it (Wanda's order); none: one-shot")
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
    p.add_argument("--table", default="auto", choices=TABLE_STYLES,
                   help="the per-site report on the terminal: sites (one row per site, 80 columns), summary (one row "
                   "per projection kind), full (every column), auto (sites up to 40 sites, else summary); "
                   "swappass.json always holds every site")
    p.set_defaults(func=run_prune)
    return p


def _batch_size(text: str) -> int | None:
    """``--batch-size``: a count, or ``auto`` (None)."""
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of sequences or 'auto', got {text!r}") from None


def run_prune(args: argparse.Namespace) -> int:
    """``swappass prune``; returns the exit status (errors propagate to :func:`swappass.cli.exits.run_command`)."""
    from .prune import (  # loads the pass and transformers: only when pruning
        ONNX_FILE,
        prune_to_dir,
    )
    from .recipe import PruneOptions

    opts = PruneOptions(
        model=args.model, out=args.out, pattern=args.pattern, warm_start=args.warm_start, iters=args.iters,
        calib=args.calib, sample_precision=args.sample_precision, nsamples=args.nsamples, seqlen=args.seqlen,
        seed=args.seed, device=args.device,
        dtype=args.dtype, batch_size=args.batch_size, gram_tf32=args.gram_tf32,
        calibration_order=args.calibration_order, refit_rounds=args.refit_rounds,
        targets=split_selectors(args.targets),
        ignore=split_selectors(args.ignore) or [], refine=args.refine, refit=args.refit, onnx=args.onnx,
        plot=args.plot, overwrite=args.overwrite, progress=not args.no_progress,
        threads=str(getattr(args, "threads", "auto")), table=args.table,
    )
    outcome = prune_to_dir(opts, getattr(args, "argv", None))
    if outcome.onnx_passed is False:
        raise VerificationError(f"{Path(args.out) / ONNX_FILE} failed verification")
    return EXIT_OK
