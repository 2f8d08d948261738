"""Wall time of refine_mask per backend, same run, same inputs (the CPU path of issue 6).

    python tools/bench_refine.py                       # SmolLM2-135M shapes, 576 rows, 20 iterations
    python tools/bench_refine.py --iters 100 --patterns 0.6

Paths: ``torch`` (refine.py's loop around the plain torch search), ``cpu-search`` (refine.py's loop around the
compiled search), ``cpu`` (the compiled search with the loop itself in C++, what ``backend="cpu"`` runs).
Every path must give the same mask as ``torch`` (checked). The time includes the exact losses that
refine_mask computes before and after (two d_out × d_in × d_in products), the same for every path.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import swappass as sp  # noqa: E402
from swappass import kernels, refine  # noqa: E402
from swappass.patterns import parse_pattern  # noqa: E402

SHAPES = {"smollm2": [("q/k/v/o/gate/up d_in=576", 576, 576), ("down d_in=1536", 576, 1536)]}


def make_layer(rows: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, d, generator=g)
    X = torch.randn(d, 2 * d, generator=g) * (0.1 + torch.rand(d, 1, generator=g))
    return W, X @ X.T


def without_fused_loop(make):
    """refine._make_search as it is, but hiding the kernel's refine_batch so refine.py's loop runs."""
    def patched(backend, pattern, G, chunk_elems):
        search = make(backend, pattern, G, chunk_elems)
        return lambda w, c, keep: search(w, c, keep)
    return patched


def run_path(path: str, W, G, mask, pattern, iters: int):
    backend = "torch" if path == "torch" else "cpu"
    original = refine._make_search
    if path == "cpu-search":
        refine._make_search = without_fused_loop(original)
    try:
        t0 = time.perf_counter()
        res = sp.refine_mask(W, G, mask, pattern, max_iters=iters, backend=backend)
        return time.perf_counter() - t0, res
    finally:
        refine._make_search = original


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patterns", nargs="+", default=["0.6", "2:4"])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs per path (torch: one run)")
    ap.add_argument("--paths", nargs="+", default=["torch", "cpu-search", "cpu"])
    ap.add_argument("--threads", type=int, default=0, help="torch/OpenMP threads (0: torch's default)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if "cpu" not in kernels.available_backends("cpu"):
        raise SystemExit("the cpu backend is not registered")
    info = dict(torch=torch.__version__, threads=torch.get_num_threads(), machine=platform.machine(),
                iters=args.iters)
    print(json.dumps(info))
    results = []
    for label, rows, d in SHAPES["smollm2"]:
        W, G = make_layer(rows, d)
        for spec in args.patterns:
            pattern = parse_pattern(spec)
            mask = sp.warm_start(W, G, pattern, "wanda")
            ref = None
            for path in args.paths:
                reps = 1 if path == "torch" else args.repeats  # the baseline alone takes minutes
                best, res = min((run_path(path, W, G, mask, pattern, args.iters) for _ in range(reps)),
                                key=lambda x: x[0])
                ref = res if ref is None else ref
                same = bool(torch.equal(res.mask, ref.mask))
                results.append(dict(shape=label, d_in=d, rows=rows, pattern=str(pattern), path=path, seconds=best,
                                    iters=res.iters, swaps=int(res.swaps.sum()), same_mask=same))
                print(f"{label:28s} {str(pattern):8s} {path:11s} {best * 1e3:9.1f} ms  iters={res.iters:3d} "
                      f"swaps={int(res.swaps.sum()):6d} same_mask={same}", flush=True)
    print("\nspeed-up over the torch path (same run):")
    for r in results:
        base = next(x for x in results if x["shape"] == r["shape"] and x["pattern"] == r["pattern"])
        if r is not base:
            print(f"  {r['shape']:28s} {r['pattern']:8s} {r['path']:11s} x{base['seconds'] / r['seconds']:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"info": info, "results": results}, indent=2))


if __name__ == "__main__":
    main()
