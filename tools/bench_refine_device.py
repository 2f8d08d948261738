"""Whole-layer refinement time on any device (GPU backends at LLaMA shapes), backends side by side, same inputs.

The CPU paths (torch loop vs compiled search vs C++ loop) have their own script, tools/bench_refine.py.

    python tools/bench_refine_device.py --device cuda --shapes 4096x4096 4096x14336 --patterns 0.6 2:4

Reports wall time, iterations run, mean swaps per row, relative error reduction and peak device memory.
The plain torch backend is run for --torch-iters iterations only (it is the slow reference) and its time per
iteration is reported beside the others'.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import swappass as sp  # noqa: E402
from swappass import kernels  # noqa: E402


def make_layer(d_out: int, d_in: int, device: str, seed: int = 0):
    g = torch.Generator(device=device).manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g, device=device) * 0.02
    X = torch.randn(d_in, 4096, generator=g, device=device)
    X = X * (0.05 + torch.rand(d_in, 1, generator=g, device=device) ** 4 * 5)  # outlier channels, as in LLMs
    mix = torch.randn(d_in, 64, generator=g, device=device) @ torch.randn(64, 4096, generator=g, device=device)
    X = X + 0.3 * mix  # low-rank correlation between channels
    return W, X @ X.T


def run_one(W, G, pattern, backend, iters, device):
    mask = sp.warm_start(W, G, pattern, "wanda")
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = sp.refine_mask(W, G, mask, pattern, max_iters=iters, backend=backend)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    return dict(backend=res.info["backend"], iters=res.iters, seconds=sec, sec_per_iter=sec / max(res.iters, 1),
                swaps_mean=float(res.swaps.float().mean()), reduction=res.relative_reduction, peak_gib=peak)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shapes", nargs="+", default=["576x576", "576x1536"])
    ap.add_argument("--patterns", nargs="+", default=["0.6", "2:4"])
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--torch-iters", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="print where the time of a few iterations goes")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    fast = kernels.available_backends(args.device)
    print(f"device={args.device} {torch.cuda.get_device_name() if args.device.startswith('cuda') else ''} "
          f"backends={fast} torch={torch.__version__}")
    rows = []
    for shape in args.shapes:
        d_out, d_in = (int(x) for x in shape.split("x"))
        W, G = make_layer(d_out, d_in, args.device)
        for pattern in args.patterns:
            for backend, iters in [(b, args.iters) for b in fast] + [("torch", args.torch_iters)]:
                r = run_one(W, G, pattern, backend, iters, args.device)
                r.update(shape=shape, pattern=pattern, max_iters=iters)
                rows.append(r)
                print(f"{shape:12s} {pattern:5s} {r['backend']:7s} iters={r['iters']:3d}/{iters:<3d} "
                      f"{r['seconds']:8.2f} s  {r['sec_per_iter'] * 1e3:9.2f} ms/iter  swaps/row={r['swaps_mean']:6.2f} "
                      f"reduction={r['reduction']:.4f}  peak={r['peak_gib']:.2f} GiB", flush=True)
    if args.profile:
        profile(args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def profile(args) -> None:
    """torch.profiler table of 10 refinement iterations of the first shape and pattern, fastest backend."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    d_out, d_in = (int(x) for x in args.shapes[0].split("x"))
    W, G = make_layer(d_out, d_in, args.device)
    pattern = args.patterns[0]
    mask = sp.warm_start(W, G, pattern, "wanda")
    sp.refine_mask(W, G, mask, pattern, max_iters=2)  # warm-up / compile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    with torch_profile(activities=acts) as prof:
        sp.refine_mask(W, G, mask, pattern, max_iters=10)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
    key = "cuda_time_total" if args.device.startswith("cuda") else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=15))


if __name__ == "__main__":
    main()
