"""Cost of the row tiles (swappass.core.rowtiles) against one matmul per batch, same run, same inputs.

refine_mask computes ``c = ((1 − m) ⊙ w) G`` and the row errors in fixed tiles of rows so that a row's bits do
not depend on the rows computed with it (needed for the bit-for-bit distributed result). This measures what
that costs: (1) the products alone for a whole layer, tiles vs one ``E @ G``; (2) refine_mask end to end with
the tiles vs with the single-matmul products the refinement used before (patched in for the comparison).

    python tools/bench_row_tiles.py --device cpu --threads 1                      # SmolLM2-135M shapes
    python tools/bench_row_tiles.py --device cuda --shapes 28672x4096 4096x14336  # LLaMA-3.1-8B gate/up, down
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import swappass as sp  # noqa: E402
from swappass.core import rowtiles  # noqa: E402
from swappass.refine import loop, rows  # noqa: E402
from swappass.kernels import cpu as cpu_kernel  # noqa: E402


def single_matmul(w, keep, G, tile=None):
    e = w * ~keep
    c = e @ G
    return c, (e * c).sum(dim=1)


def single_matmul_resync(w, keep, G, c, loss, rows, tile=None):
    e = w[rows] * ~keep[rows]
    c[rows] = e @ G
    loss[rows] = (e * c[rows]).sum(dim=1)


@contextmanager
def products(kind: str):
    """Patch the refinement loop, its row setup and the CPU kernel's loop to the chosen row products."""
    patches = {"row_errors": single_matmul, "resync_rows": single_matmul_resync}
    saved = [(m, name, getattr(m, name)) for m in (loop, rows, cpu_kernel) for name in patches if hasattr(m, name)]
    if kind == "single":
        for m, name, _ in saved:
            setattr(m, name, patches[name])
    try:
        yield
    finally:
        for m, name, original in saved:
            setattr(m, name, original)


def timed(fn, device, repeat):
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shapes", nargs="+", default=["576x576", "576x1536", "3072x576"], help="ROWSxD_IN")
    ap.add_argument("--pattern", default="0.6")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} thread(s)"
    print(f"device {device} ({name}); tile {rowtiles.row_tile(device)} rows; torch {torch.__version__}")
    print(f"{'shape':12s} {'products: tiles':>16s} {'single':>9s} {'refine: tiles':>14s} {'single':>9s} "
          f"{'ratio':>6s}  same masks")
    for shape in args.shapes:
        rows, d_in = (int(x) for x in shape.split("x"))
        g = torch.Generator(device=device).manual_seed(0)
        W = torch.randn(rows, d_in, generator=g, device=device) * 0.02
        X = torch.randn(d_in, 2 * d_in, generator=g, device=device) * (
            0.05 + torch.rand(d_in, 1, generator=g, device=device) ** 4 * 5)
        G = X @ X.T
        G = (G + G.T) / 2
        mask = sp.warm_start(W, G, args.pattern, "wanda")
        t_tile, _ = timed(lambda: rowtiles.row_errors(W, mask, G), device, args.repeat)
        t_one, _ = timed(lambda: single_matmul(W, mask, G), device, args.repeat)
        run = lambda: sp.refine_mask(W, G, mask, args.pattern, max_iters=args.iters)  # noqa: E731
        r_tile, res_tile = timed(run, device, args.repeat)
        with products("single"):
            r_one, res_one = timed(run, device, args.repeat)
        print(f"{shape:12s} {t_tile * 1e3:13.2f} ms {t_one * 1e3:6.2f} ms {r_tile:12.3f} s {r_one:7.3f} s "
              f"{r_tile / r_one:6.2f}  {torch.equal(res_tile.mask, res_one.mask)}", flush=True)


if __name__ == "__main__":
    main()
