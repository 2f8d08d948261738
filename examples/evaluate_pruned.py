"""Perplexity of a pruned model and how far it moved from the dense one (KL divergence, top-1 agreement).

    python examples/evaluate_pruned.py smollm2-2of4 smollm2-135m --seqlen 512 --max-windows 40

The protocol is Wanda's / SparseGPT's: the text's rows joined with blank lines, tokenized once, cut into
non-overlapping windows (remainder dropped); perplexity = exp(mean over windows of the mean next-token loss).
State the window length and count with every number. `swappass eval PRUNED --compare DENSE` does the same.
"""
from __future__ import annotations

import argparse

from swappass.lm import data, evaluate
from swappass.lm.models import load_model


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pruned", help="pruned model directory (or any model spec)")
    ap.add_argument("dense", help="the dense reference (directory, .gguf, hub id or alias)")
    ap.add_argument("--text", default=None, help="text file (default: WikiText-2 raw test from a local data directory, the swappass cache "
                    "or, once, the Hugging Face hub: swappass.lm.data.wikitext2_path)")
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--max-windows", type=int, default=40)
    args = ap.parse_args(argv)

    pruned, tokenizer = load_model(args.pruned)
    dense, _ = load_model(args.dense)
    windows = data.perplexity_windows(tokenizer, args.text, seqlen=args.seqlen, max_windows=args.max_windows)
    cmp = evaluate.compare_models(pruned, dense, windows)
    print(f"{len(windows)} windows × {args.seqlen} tokens")
    print(f"perplexity: pruned {cmp.perplexity:.3f}, dense {cmp.reference_perplexity:.3f}")
    print(f"KL(dense ‖ pruned) {cmp.kl:.4f} nats/token; "
          f"top-1 agreement {100 * cmp.top1:.2f}% ({cmp.tokens} positions)")


if __name__ == "__main__":
    main()
