"""Prune a causal LM with the 1-swap refinement split across GPUs (or CPU processes) by torch.distributed.

Launch one process per GPU with torchrun; the same script also runs as a single process, with the same result::

    torchrun --standalone --nproc-per-node 4 examples/distributed_prune.py smollm2-135m --out pruned/
    python examples/distributed_prune.py smollm2-135m --out pruned/            # one process, identical output

Every rank loads the model, runs the same calibration and warm starts; each refines a slice of every site's
rows, and the slices are gathered so that all ranks hold the same pruned model (see docs/DISTRIBUTED.md).
Rank 0 alone writes ``--out`` (``save_pretrained`` + ``swappass_masks.safetensors`` + ``swappass_report.json``)
and prints the report. On CPU, torchrun starts the ranks with one thread each (``OMP_NUM_THREADS=1``); compare a
single-process run with the same thread count.
"""
from __future__ import annotations

import os

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast off, before NCCL can start

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import swappass as sp  # noqa: E402
from swappass.refine import distributed  # noqa: E402
from swappass.lm.data import calibration_windows  # noqa: E402
from swappass.core.masks import MASKS_FILE, save_masks  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="Hugging Face model directory, .gguf file, hub id or the alias smollm2-135m")
    p.add_argument("--out", type=Path, required=True, help="output directory (written by rank 0)")
    p.add_argument("--pattern", default="0.6", help="0.6 (60%% per row), 2:4, 4:8, …")
    p.add_argument("--warm-start", default="wanda", help="magnitude, wanda, ria or sparsegpt")
    p.add_argument("--iters", type=int, default=100, help="1-swap iterations per row")
    p.add_argument("--calib", default="wikitext2",
                   help="wikitext2 (the shared WikiText-2 validation text), a text file, or random (random token "
                   "ids: no tokenizer needed, for smoke tests)")
    p.add_argument("--nsamples", type=int, default=128, help="calibration windows")
    p.add_argument("--seqlen", type=int, default=2048, help="tokens per calibration window")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration windows (the same on every rank)")
    p.add_argument("--device", default=None, help="default: this rank's GPU (its LOCAL_RANK), else the CPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (rank 0 shows them otherwise)")
    return p.parse_args(argv)


def load(spec: str):
    """``(model, tokenizer or None)``; a model directory without tokenizer files loads with ``tokenizer=None``."""
    from transformers import AutoModelForCausalLM

    from swappass.lm.models import load_model

    if Path(spec).is_dir() and not any(Path(spec).glob("tokenizer*")):
        return AutoModelForCausalLM.from_pretrained(spec, dtype=torch.float32).eval(), None
    return load_model(spec, dtype=torch.float32)


def calibration(args: argparse.Namespace, model, tokenizer) -> list[torch.Tensor]:
    """The same windows on every rank: they depend on ``--seed`` only."""
    if args.calib == "random":
        g = torch.Generator().manual_seed(args.seed)
        vocab = model.config.vocab_size
        return [torch.randint(0, vocab, (1, args.seqlen), generator=g) for _ in range(args.nsamples)]
    if tokenizer is None:
        raise SystemExit(f"{args.model} has no tokenizer: use --calib random")
    path = None if args.calib == "wikitext2" else args.calib
    return calibration_windows(tokenizer, path, nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed)


def save(out: Path, model, tokenizer, report: sp.SparsifyReport) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    save_masks(report.pruned_weights(), out / MASKS_FILE)
    report.to_json(out / "swappass_report.json")
    print(report)
    print(f"mean relative error reduction {report.mean_relative_reduction:.4f}; written to {out}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    group = distributed.init_distributed()  # None when started as a single process
    main_rank = distributed.is_main_process(group)
    device = torch.device(args.device) if args.device else distributed.rank_device(group)
    done = False
    try:
        model, tokenizer = load(args.model)
        calib = calibration(args, model, tokenizer)
        model, report = sp.sparsify(
            model, calib, pattern=args.pattern, warm_start=args.warm_start, max_iters=args.iters, device=device,
            progress=main_rank and not args.no_progress, group=group,
        )
        distributed.main_process_only(lambda: save(args.out, model, tokenizer, report), group,
                                      what=f"writing {args.out}")
        done = True
    finally:
        distributed.close_distributed(group, wait=done)  # on an error, peers may not arrive: do not wait
    return 0


if __name__ == "__main__":
    sys.exit(main())
