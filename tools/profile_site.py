"""Where a real SmolLM2 site's pruning time goes: warm start, the exact row terms, the fused loop, the resyncs.

    python tools/profile_site.py                       # block 3, 2:4, 100 iterations, 1 thread
    python tools/profile_site.py --pattern 0.6 --block 10

For each Gram group of one SmolLM2-135M block (q/k/v, o, gate/up, down: their weights stacked, as the pass
refines them) with the Gram matrix of its dense inputs on WikiText-2 valid (``tools/bench_nm_loop.py``'s
layers): the warm start (Wanda scores and mask), then ``refine_mask`` split into the exact row terms computed
before and after (``row_errors``), the exact re-derivations of c every 16 iterations (``resync_rows``) and the
fused C++ loop (``loop_cpu_seconds``), as process CPU time (the other jobs of a shared machine inflate wall time
far more). The parts are timed by wrapping the functions as the refinement calls them.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

import swappass as sp  # noqa: E402
from bench_nm_loop import real_groups  # noqa: E402
from swappass.kernels import cpu  # noqa: E402
from swappass.refine import rows  # noqa: E402

SPENT: dict[str, float] = collections.defaultdict(float)
CALLS: collections.Counter = collections.Counter()


def timed(module, name: str, label: str) -> None:
    """Replace ``module.name`` by a wrapper that adds its process CPU time to SPENT[label]."""
    fn = getattr(module, name)

    def wrapper(*args, **kwargs):
        t = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[label] += time.process_time() - t
            CALLS[label] += 1

    setattr(module, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pattern", default="2:4")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--block", type=int, default=3)
    ap.add_argument("--calib", type=int, nargs=2, default=(16, 128), metavar=("WINDOWS", "TOKENS"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    timed(rows, "row_errors", "exact row terms (before, after)")
    timed(cpu, "row_errors", "exact row terms (fused loop's own)")
    timed(cpu, "resync_rows", "resyncs of c")
    made = []
    original = rows.make_search

    def keep(*a, **k):
        made.append(original(*a, **k))
        return made[-1]

    rows.make_search = keep
    print(f"SmolLM2-135M block {args.block}, {args.pattern}, {args.iters} iterations, {args.threads} thread(s); "
          f"process CPU ms")
    for label, W, G in real_groups(args.block, *args.calib):
        SPENT.clear()
        CALLS.clear()
        made.clear()
        t = time.process_time()
        mask = sp.warm_start(W, G, args.pattern, "wanda")
        warm = time.process_time() - t
        t = time.process_time()
        res = sp.refine_mask(W, G, mask, args.pattern, max_iters=args.iters)
        total = time.process_time() - t
        loop = sum(getattr(s, "loop_cpu_seconds", 0.0) for s in made)
        parts = {"warm start": warm, "fused C++ loop": loop, **SPENT}
        parts["rest of refine_mask"] = total - loop - sum(SPENT.values())
        print(f"{label:20s} iters={res.iters:3d} swaps={int(res.swaps.sum()):7d} refine_mask {total * 1e3:7.1f}")
        for k, v in parts.items():
            n = f" ({CALLS[k]} calls)" if k in CALLS else ""
            print(f"    {k:36s} {v * 1e3:8.1f}{n}")


if __name__ == "__main__":
    main()
