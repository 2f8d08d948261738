"""``swappass eval``: perplexity of a model on a text, optionally against a dense reference model."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from ..core.errors import InputError
from ..lm import data, evaluate
from ..lm.errors import DataNotFoundError, LMInputError
from ..lm.models import load_model
from .exits import EXIT_OK
from .options import DTYPES, HelpFormatter, resolve_device
from .preflight import check_positions

__all__ = ["add_eval_parser", "run_eval", "evaluate_to_console"]


def add_eval_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``swappass eval`` and its options to the command's subparsers."""
    p = subparsers.add_parser(
        "eval",
        help="perplexity of a causal LM (standard windows protocol), optionally against a dense model",
        description="Perplexity with the protocol of Wanda / SparseGPT: the text's rows joined with blank lines, "
        "tokenized once, cut into non-overlapping windows of --seqlen tokens (remainder dropped), "
        "exp(mean over windows of the mean next-token cross-entropy). --compare adds the KL divergence "
        "KL(dense || model) per token and the top-1 agreement with the dense model.",
        formatter_class=HelpFormatter,
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
    """``swappass eval``; returns the exit status (errors propagate to :func:`swappass.cli.exits.run_command`)."""
    evaluate_to_console(
        args.model, text=args.text, seqlen=args.seqlen, max_windows=args.max_windows,
        batch_size=args.batch_size, compare=args.compare, device=args.device, dtype=args.dtype,
        json_path=args.json, progress=not args.no_progress,
    )
    return EXIT_OK


def _text_path(text: str) -> Path:
    if text == "wikitext2":
        try:
            return data.wikitext2_path("test")
        except DataNotFoundError as exc:
            raise InputError(f"--text wikitext2: {exc}; or pass a text file with --text FILE") from exc
    path = Path(text).expanduser()
    if not path.is_file():
        raise InputError(f"--text {text}: no such file")
    return path


def _load(spec: str, dtype: torch.dtype, device: str, role: str):
    print(f"swappass: loading {role} {spec}", file=sys.stderr, flush=True)
    try:
        return load_model(spec, dtype=dtype, device=device)
    except LMInputError as exc:
        raise InputError(str(exc)) from exc


def evaluate_to_console(
    model_spec: str,
    *,
    text: str = "wikitext2",
    seqlen: int = 2048,
    max_windows: int | None = None,
    batch_size: int = 1,
    compare: str | None = None,
    device: str = "auto",
    dtype: str = "float32",
    json_path: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate and print; returns the numbers (also written to ``json_path`` if given)."""
    if seqlen < 2:
        raise InputError(f"--seqlen must be at least 2, got {seqlen}")
    if max_windows is not None and max_windows < 1:
        raise InputError(f"--max-windows must be at least 1, got {max_windows}")
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    if dtype not in DTYPES:
        raise InputError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    dev = resolve_device(device)
    path = _text_path(text)
    model, tokenizer = _load(model_spec, DTYPES[dtype], dev, "model")
    beyond = check_positions(model, seqlen)  # raises where the positions are a learned table
    if beyond is not None:
        print(f"swappass: warning: {beyond}", file=sys.stderr, flush=True)
    try:
        windows = data.perplexity_windows(tokenizer, path, seqlen=seqlen, max_windows=max_windows)
    except ValueError as exc:
        raise InputError(f"--text {path}: {exc}; use a longer text or a smaller --seqlen") from exc
    where = f"{path.name} ({len(windows)} windows × {seqlen} tokens)"
    result: dict[str, Any] = {
        "model": model_spec, "text": str(path), "seqlen": seqlen, "windows": len(windows), "dtype": dtype,
    }
    if compare is None:
        ppl = evaluate.perplexity(model, windows, batch_size=batch_size, progress=progress)
        result["perplexity"] = ppl
        print(f"{model_spec}: perplexity {ppl:.3f} on {where}")
    else:
        reference, _ = _load(compare, DTYPES[dtype], dev, "reference")
        try:
            cmp = evaluate.compare_models(model, reference, windows, batch_size=batch_size, progress=progress)
        except ValueError as exc:
            raise InputError(f"--compare {compare}: {exc}") from exc
        result.update(
            perplexity=cmp.perplexity, reference=compare, reference_perplexity=cmp.reference_perplexity,
            kl_divergence=cmp.kl, top1_agreement=cmp.top1, tokens=cmp.tokens,
        )
        print(f"{model_spec}: perplexity {cmp.perplexity:.3f} on {where}")
        print(f"{compare} (reference): perplexity {cmp.reference_perplexity:.3f}")
        print(f"KL(reference ‖ model) {cmp.kl:.4f} nats/token; top-1 agreement {100 * cmp.top1:.2f}% "
              f"over {cmp.tokens} next-token positions")
    if json_path is not None:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result
