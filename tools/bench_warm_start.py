"""Warm-start mask selection: swappass's mask_from_scores against the plain stable sort, same run, same scores.

    python tools/bench_warm_start.py                  # SmolLM2 shapes, 2:4, 4:8 and 60% per row, 1 thread

The baseline is the previous implementation: a stable ascending sort per M-block (N:M) or per row, the lowest
pruned. swappass now ranks N:M blocks of up to 8 by pairwise comparisons and selects per row from the k-th
smallest score (both with the sort's tie order; checked here). Process CPU time, best of ``--repeats``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swappass.core.patterns import NMSparsity, parse_pattern  # noqa: E402
from swappass.core.selection import mask_from_scores  # noqa: E402

SHAPES = [("gate/up", 3072, 576), ("q/k/v", 960, 576), ("down", 576, 1536)]


def sorted_mask(scores: torch.Tensor, spec: str) -> torch.Tensor:
    pattern = parse_pattern(spec)
    d_out, d_in = scores.shape
    if isinstance(pattern, NMSparsity):
        blocks = scores.reshape(d_out, d_in // pattern.m, pattern.m)
        order = torch.sort(blocks, dim=2, stable=True).indices
        mask = torch.ones_like(blocks, dtype=torch.bool)
        mask.scatter_(2, order[..., : pattern.m - pattern.n], False)
        return mask.reshape(d_out, d_in)
    order = torch.sort(scores, dim=1, stable=True).indices
    mask = torch.ones_like(scores, dtype=torch.bool)
    mask.scatter_(1, order[:, : d_in - pattern.kept_per_row(d_in)], False)
    return mask


def best_cpu(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patterns", nargs="+", default=["2:4", "4:8", "0.6"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    for label, rows, d in SHAPES:
        scores = torch.randn(rows, d, generator=g).abs() * torch.rand(d, generator=g)  # Wanda-like
        scores[:, : d // 8] = scores[:, : d // 8].mul(8).round()  # some ties
        for spec in args.patterns:
            assert torch.equal(mask_from_scores(scores, spec), sorted_mask(scores, spec))
            old = best_cpu(lambda: sorted_mask(scores, spec), args.repeats)
            new = best_cpu(lambda: mask_from_scores(scores, spec), args.repeats)
            print(f"{label:8s} {rows:5d}x{d:<5d} {spec:4s} sort {old * 1e3:7.1f} ms  swappass {new * 1e3:7.1f} ms  "
                  f"x{old / new:.1f}  same masks", flush=True)


if __name__ == "__main__":
    main()
