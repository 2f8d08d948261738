"""Pair evaluations per second of the best-1-swap search: naive broadcast vs swappass, same run, same inputs.

    python tools/bench_swap.py                         # SmolLM2-135M shapes on CPU
    python tools/bench_swap.py --device cuda --shapes llama3-8b

One "pair evaluation" is one (kept u, pruned p) candidate of one row: |U|·|P| per row for per-row patterns,
(d/M)·N·(M−N) per row for N:M. The naive baseline gathers U and P per row and materialises every score with
plain torch ops; the swappass paths return the same choice (checked before timing).
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
from swappass.core.patterns import NMSparsity, parse_pattern  # noqa: E402
from swappass.kernels.torch_search import SwapChoice, nm_diag_blocks, search_nm_torch, search_rows_torch, swap_terms  # noqa: E402

SHAPES = {  # (name, d_out rows benchmarked, d_in)
    "smollm2": [("q/k/v/o/gate/up d_in=576", 576, 576), ("down d_in=1536", 576, 1536)],
    "llama3-8b": [("q/o/gate/up d_in=4096", 4096, 4096), ("down d_in=14336", 1024, 14336)],
}


def naive_search(w, c, keep, G, pattern) -> SwapChoice:
    """Gather kept/pruned indices per row and materialise every candidate score at once."""
    R, d = w.shape
    a, b = swap_terms(w, c, keep, G.diagonal())
    if isinstance(pattern, NMSparsity):
        m, n = pattern.m, pattern.n
        kb = keep.reshape(R, d // m, m)
        base = (torch.arange(d // m, device=w.device) * m)[None, :, None]
        U = torch.sort(kb.to(torch.int8), dim=2, descending=True, stable=True).indices[..., :n] + base
        P = torch.sort(kb.to(torch.int8), dim=2, stable=True).indices[..., : m - n] + base
        U, P = U.reshape(R, -1, n), P.reshape(R, -1, m - n)
        wu, wp = w.gather(1, U.flatten(1)).view_as(U), w.gather(1, P.flatten(1)).view_as(P)
        au, bp = a.gather(1, U.flatten(1)).view_as(U), b.gather(1, P.flatten(1)).view_as(P)
        Gup = G[U[..., :, None], P[..., None, :]]
        S = au[..., :, None] + bp[..., None, :] - 2 * wu[..., :, None] * wp[..., None, :] * Gup
        val, idx = S.reshape(R, -1).min(dim=1)
        blk, rem = idx // (n * (m - n)), idx % (n * (m - n))
        u = U[torch.arange(R), blk, rem // (m - n)]
        p = P[torch.arange(R), blk, rem % (m - n)]
        return SwapChoice(val, u, p)
    k = int(keep[0].sum())
    U = torch.sort(keep.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :k]
    P = torch.sort(keep.to(torch.int8), dim=1, stable=True).indices[:, : d - k]
    wu, wp, au, bp = w.gather(1, U), w.gather(1, P), a.gather(1, U), b.gather(1, P)
    Gup = G[U[:, :, None], P[:, None, :]]
    S = au[:, :, None] + bp[:, None, :] - 2 * wu[:, :, None] * wp[:, None, :] * Gup
    val, idx = S.reshape(R, -1).min(dim=1)
    return SwapChoice(val, U.gather(1, (idx // (d - k))[:, None])[:, 0], P.gather(1, (idx % (d - k))[:, None])[:, 0])


def pairs_per_row(pattern, d: int) -> int:
    if isinstance(pattern, NMSparsity):
        return d // pattern.m * pattern.n * (pattern.m - pattern.n)
    k = pattern.kept_per_row(d)
    return k * (d - k)


def make_inputs(rows: int, d: int, pattern, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, d, generator=g)
    X = torch.randn(d, 2 * d, generator=g) * (0.1 + torch.rand(d, 1, generator=g))
    G = (X @ X.T).to(device)
    W = W.to(device)
    keep = sp.warm_start(W, G, pattern, "wanda")
    c = (W * ~keep) @ G
    return W, G, keep, c


def timeit(fn, device, min_time: float = 1.0, max_reps: int = 50) -> float:
    """Median seconds per call over repetitions (after one warm-up call)."""
    fn()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_time and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _chunk_min(G, w, a, b):
    """search_rows_torch's scores for a chunk of rows (all u at once) and their first minimum."""
    S = G[None, :, :] * w[:, None, :]
    S = S * (-2 * w)[:, :, None] + b[:, None, :] + a[:, :, None]
    return S.reshape(w.shape[0], -1).min(dim=1)


def torch_compile_search(G, rows_per_chunk: int = 16):
    """The per-row search as one torch.compile'd (inductor) fused reduction per chunk of rows."""
    compiled = torch.compile(_chunk_min, dynamic=False)
    gd = G.diagonal()

    def search(w, c, keep):
        a, b = swap_terms(w, c, keep, gd)
        d = w.shape[1]
        parts = [compiled(G, w[r:r + rows_per_chunk], a[r:r + rows_per_chunk], b[r:r + rows_per_chunk])
                 for r in range(0, w.shape[0], rows_per_chunk)]
        val, idx = torch.cat([v for v, _ in parts]), torch.cat([i for _, i in parts])
        return SwapChoice(val, idx // d, idx % d)

    return search


def swappass_paths(pattern, G, device, with_compile: bool = False):
    """The swappass search paths available here: name -> callable(w, c, keep)."""
    gd = G.diagonal().contiguous()
    if isinstance(pattern, NMSparsity):
        blocks = nm_diag_blocks(G, pattern.m)
        paths = {"swappass-torch": lambda w, c, k: search_nm_torch(w, c, k, blocks, gd, pattern.m)}
    else:
        paths = {"swappass-torch": lambda w, c, k: search_rows_torch(w, c, k, G, gd)}
    from swappass import kernels

    if with_compile and not isinstance(pattern, NMSparsity):
        paths["torch-compile"] = torch_compile_search(G)
    for backend in kernels.available_backends(device):
        paths[f"swappass-{backend}"] = kernels.make_search(backend, pattern, G)
    return paths


def run(args) -> list[dict]:
    device = torch.device(args.device)
    results = []
    for label, rows, d in SHAPES[args.shapes]:
        rows = min(rows, args.rows) if args.rows else rows
        for spec in args.patterns:
            pattern = parse_pattern(spec)
            W, G, keep, c = make_inputs(rows, d, pattern, device)
            ref = naive_search(W[: args.naive_rows], c[: args.naive_rows], keep[: args.naive_rows], G, pattern)
            candidates = {"naive-broadcast": lambda w, c_, k: naive_search(w, c_, k, G, pattern)}
            candidates.update(swappass_paths(pattern, G, device, args.torch_compile))
            for name, fn in candidates.items():
                n = {"naive-broadcast": args.naive_rows, "swappass-torch": args.torch_rows or rows}.get(name, rows)
                n = min(n, rows)
                got = fn(W[:n], c[:n], keep[:n])
                m = min(n, args.naive_rows)
                same = bool(torch.equal(got.u[:m], ref.u[:m]) and torch.equal(got.p[:m], ref.p[:m]))
                sec = timeit(lambda: fn(W[:n], c[:n], keep[:n]), device)
                rate = n * pairs_per_row(pattern, d) / sec
                results.append(
                    dict(shape=label, d_in=d, rows=n, pattern=str(pattern), path=name, seconds=sec,
                         pairs_per_s=rate, same_choice_as_naive=same)
                )
                print(f"{label:28s} {str(pattern):8s} {name:18s} rows={n:5d} {sec * 1e3:9.2f} ms "
                      f"{rate:10.3e} pairs/s  same={same}", flush=True)
    return results


# LLaMA-3.1-8B: 32 blocks; rows per block reading d_in 4096 (q, k, v, o, gate, up) and 14336 (down)
LLAMA_ROWS = {4096: 4096 + 1024 + 1024 + 4096 + 14336 + 14336, 14336: 4096}
LLAMA_BLOCKS = 32


def project_llama(results: list[dict]) -> None:
    """Projected time of one full-model iteration (every row of every Linear layer searched once)."""
    print("\nprojected time of one LLaMA-3.1-8B iteration (all 224 Linear layers, every row active):")
    for pattern in sorted({r["pattern"] for r in results}):
        for path in sorted({r["path"] for r in results}):
            rates = {r["d_in"]: r["pairs_per_s"] for r in results if r["pattern"] == pattern and r["path"] == path}
            if set(rates) != set(LLAMA_ROWS):
                continue
            pat = parse_pattern(pattern)
            total = sum(LLAMA_BLOCKS * rows * pairs_per_row(pat, d) for d, rows in LLAMA_ROWS.items())
            sec = sum(LLAMA_BLOCKS * rows * pairs_per_row(pat, d) / rates[d] for d, rows in LLAMA_ROWS.items())
            print(f"  {pattern:8s} {path:18s} {total:.3e} pairs  {sec:10.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shapes", choices=sorted(SHAPES), default="smollm2")
    ap.add_argument("--patterns", nargs="+", default=["0.6", "2:4"])
    ap.add_argument("--rows", type=int, default=0, help="cap on rows per shape (0: the table's)")
    ap.add_argument("--naive-rows", type=int, default=64, help="rows given to the naive baseline (memory-bound)")
    ap.add_argument("--torch-rows", type=int, default=0, help="rows given to the plain torch path (0: all)")
    ap.add_argument("--torch-compile", action="store_true",
                    help="also time the per-row search compiled by torch.compile (compiles for minutes on CPU)")
    ap.add_argument("--threads", type=int, default=0, help="torch/OpenMP threads (0: torch's default)")
    ap.add_argument("--json", type=Path, help="write results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    info = dict(torch=torch.__version__, device=args.device, threads=torch.get_num_threads(),
                machine=platform.machine(), processor=platform.processor() or platform.machine())
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(info))
    results = run(args)
    print("\nspeed-up over naive broadcast (pairs/s ratio, same run):")
    for r in results:
        base = next(x for x in results if x["shape"] == r["shape"] and x["pattern"] == r["pattern"]
                    and x["path"] == "naive-broadcast")
        if r["path"] != "naive-broadcast":
            print(f"  {r['shape']:28s} {r['pattern']:8s} {r['path']:18s} x{r['pairs_per_s'] / base['pairs_per_s']:.1f}")
    if args.shapes == "llama3-8b":
        project_llama(results)
    if args.json:
        args.json.write_text(json.dumps({"info": info, "results": results}, indent=2))


if __name__ == "__main__":
    main()
