"""``swappass generate DIR --prompt TEXT [--tokens N]``: run an exported decoder, streaming the text, and print
the prefill and decode speed (:mod:`swappass.cli.generate`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.errors import InputError
from .exits import EXIT_OK

__all__ = ["add_generate_parser", "run_generate"]


def add_generate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``swappass generate`` and its options to the command's subparsers."""
    p = subparsers.add_parser(
        "generate",
        help="generate text greedily with an exported ONNX model (onnxruntime-genai or onnxruntime)",
        description="Greedy generation with the model `swappass export` wrote (a directory with model.onnx, "
        "genai_config.json and the tokenizer, or the .onnx file): the text streams to stdout, the prefill and "
        "decode speed (tokens/s) go to stderr.",
    )
    p.add_argument("model", type=Path, help="the exported model's directory (or its .onnx file)")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--tokens", type=int, default=128, help="new tokens to generate at most (default 128)")
    p.add_argument("--runtime", choices=("auto", "genai", "onnxruntime"), default="auto",
                   help="onnxruntime-genai's own loop (genai), swappass's onnxruntime loop (onnxruntime), or genai "
                   "when it is installed and the directory has a genai_config.json (auto)")
    p.add_argument("--ignore-eos", action="store_true", help="do not stop at the end-of-sequence token")
    p.set_defaults(func=run_generate)
    return p


def run_generate(args: argparse.Namespace) -> int:
    """``swappass generate``; returns the exit status."""
    if args.tokens < 1:
        raise InputError(f"--tokens must be ≥ 1 (got {args.tokens})")
    from ..onnx.genai_builder import genai_version
    from ..onnx.genai_config import read_genai_config
    from .generate import generate_genai, generate_onnxruntime, resolve_model

    directory, file = resolve_model(args.model)
    has_config = read_genai_config(directory) is not None
    runtime = args.runtime
    if runtime == "auto":
        runtime = "genai" if genai_version() is not None and has_config else "onnxruntime"
    if runtime == "genai":
        if genai_version() is None:
            raise InputError("--runtime genai: onnxruntime-genai is not installed (pip install 'swappass[genai]')")
        if not has_config:
            raise InputError(f"--runtime genai: {directory} holds no genai_config.json (a graph exported with "
                             "--no-kv-cache runs with --runtime onnxruntime)")
        stats = generate_genai(directory, args.prompt, args.tokens, args.ignore_eos)
    else:
        stats = generate_onnxruntime(file, directory, args.prompt, args.tokens, args.ignore_eos,
                                     args.thread_policy.chosen.get("generate"))  # --threads: onnxruntime's intra-op
    print(stats, file=sys.stderr)
    return EXIT_OK
