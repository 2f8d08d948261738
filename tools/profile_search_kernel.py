"""Run the GPU swap-search kernel a few times on one LLaMA-shaped problem, for Nsight Compute.

    ncu --kernel-name regex:gluon --launch-skip 1 --launch-count 1 --section SpeedOfLight \
        python tools/profile_search_kernel.py --variant acc
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swappass.kernels.gluon_search import row_search_gluon  # noqa: E402
from swappass.core.selection import mask_from_scores  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, default=4096)
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--variant", default="tile")
    ap.add_argument("--config", type=int, nargs=7, default=None)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    X = torch.randn(args.d, 2048, device="cuda")
    G = X @ X.T
    G = (G + G.T) / 2
    w = torch.randn(args.rows, args.d, device="cuda")
    keep = mask_from_scores(w.abs(), "0.6")
    c = (w * ~keep) @ G
    for _ in range(args.reps):
        row_search_gluon(w, c, keep, G, G.diagonal().contiguous(), config=tuple(args.config) if args.config else None,
                         variant=args.variant)
    torch.cuda.synchronize()
    print("done")


if __name__ == "__main__":
    main()
