"""Would splitting calibration across ranks keep G bit-identical? (It does not: docs/DISTRIBUTED.md.)

Accumulates the Gram matrix of synthetic activations (outlier channels) item by item, as one process does, and
as N ranks would — each summing its share of the items, then the parts added (an all-reduce) — and counts the
entries whose bits differ, in float32 and float64.

    python tools/check_gram_split.py --dim 256 --items 16 --tokens 512
"""
from __future__ import annotations

import argparse

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    acts = [torch.randn(args.tokens, args.dim, generator=g) * (0.05 + torch.rand(args.dim, generator=g) ** 4 * 5)
            for _ in range(args.items)]
    for dt in (torch.float32, torch.float64):
        seq = torch.zeros(args.dim, args.dim, dtype=dt)
        for x in acts:
            seq += x.to(dt).T @ x.to(dt)
        for world in args.ranks:
            parts = [sum((x.to(dt).T @ x.to(dt) for x in acts[r::world]), torch.zeros_like(seq)) for r in range(world)]
            split = parts[0].clone()
            for p in parts[1:]:
                split += p
            rel = ((split - seq).abs() / seq.abs().clamp_min(torch.finfo(dt).tiny)).max()
            print(f"{str(dt):14s} ranks={world}: {(split != seq).double().mean():6.1%} of G's entries differ, "
                  f"max relative difference {rel:.2e}")


if __name__ == "__main__":
    main()
