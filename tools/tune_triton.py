"""Tile-size sweep of the Triton per-row swap-search kernel on CUDA, checked against the torch search.

    python tools/tune_triton.py [--dims 4096 14336] [--rows 2048]

Prints, per configuration (BR rows, BU, BP, warps): the median time of one search over all rows, feasible
pair evaluations per second (|U|·|P| per row) and evaluated scores per second (d² per row, infeasible ones
included), and whether the chosen pairs equal the torch search's on the first rows.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swappass.kernels import triton_search as ts  # noqa: E402
from swappass.core.patterns import parse_pattern  # noqa: E402
from swappass.kernels.torch_search import search_rows_torch  # noqa: E402

TRITON_CONFIGS = [(16, 32, 16, 8), (8, 64, 16, 8)]  # portable kernel: (BR, BU, BP, num_warps)
# Gluon kernel: (RT, UT, BP, TR, TU, WR, WU), see swappass/kernels/gluon_search.py; "gluon-p" adds prefetch
GLUON_CONFIGS = [(4, 8, 8, 8, 4, 1, 4), (4, 8, 8, 8, 4, 2, 2), (4, 4, 8, 8, 4, 2, 2), (4, 4, 16, 8, 4, 2, 2),
                 (8, 4, 8, 4, 8, 2, 2), (4, 8, 8, 4, 8, 2, 2), (4, 4, 4, 8, 4, 2, 2)]


def main() -> None:
    import triton

    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", type=int, nargs="+", default=[4096, 14336])
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--pattern", default="0.6")
    ap.add_argument("--check-rows", type=int, default=64)
    ap.add_argument("--top", type=int, default=5, help="configs carried from the first dim to the others")
    ap.add_argument("--variants", nargs="+", default=["gluon-p", "gluon", "triton"])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--best-env", type=Path, help="write the best Gluon config as SWAPPASS_GLUON_CONFIG text")
    args = ap.parse_args()
    pattern = parse_pattern(args.pattern)
    out = []
    print(torch.cuda.get_device_name(), "triton", triton.__version__, "torch", torch.__version__)
    candidates = [(v, cfg) for v in args.variants for cfg in (TRITON_CONFIGS if v == "triton" else GLUON_CONFIGS)]
    for d in args.dims:
        torch.manual_seed(0)
        X = torch.randn(d, 2048, device="cuda") * (0.1 + torch.rand(d, 1, device="cuda"))
        G = X @ X.T
        G = (G + G.T) / 2
        w = torch.randn(args.rows, d, device="cuda")
        scores = w.abs() * G.diagonal().sqrt()
        from swappass.core.selection import mask_from_scores

        keep = mask_from_scores(scores, pattern)
        c = (w * ~keep) @ G
        gd = G.diagonal().contiguous()
        k = pattern.kept_per_row(d)
        n = args.check_rows
        ref = search_rows_torch(w[:n], c[:n], keep[:n], G, gd)
        for variant, cfg in candidates:
            def call():
                if variant == "triton":
                    return ts.row_search(w, c, keep, G, gd, config=cfg)
                from swappass.kernels.gluon_search import row_search_gluon

                return row_search_gluon(w, c, keep, G, gd, config=cfg, prefetch=variant == "gluon-p")
            try:
                got = call()
                same = bool(torch.equal(got.u[:n], ref.u[:n]) and torch.equal(got.p[:n], ref.p[:n]))
                ms = triton.testing.do_bench(call, warmup=50, rep=300, return_mode="median")
            except Exception as exc:  # a config that does not compile or fit is reported, not fatal
                print(f"d={d:6d} {variant} cfg={cfg} failed: {type(exc).__name__}: {str(exc)[:120]}")
                continue
            feasible = args.rows * k * (d - k) / (ms * 1e-3)
            dense = args.rows * d * d / (ms * 1e-3)
            out.append(dict(d=d, variant=variant, cfg=cfg, ms=ms, pairs_per_s=feasible, scores_per_s=dense, same=same))
            print(f"d={d:6d} {variant} cfg={str(cfg):18s} {ms:8.3f} ms  {feasible:9.3e} pairs/s  {dense:9.3e} scores/s  same={same}",
                  flush=True)
        ranked = sorted((r for r in out if r["d"] == d and r["same"]), key=lambda r: -r["pairs_per_s"])
        if ranked:
            best = ranked[0]
            print(f"BEST d={d}: {best['variant']} cfg={best['cfg']} {best['pairs_per_s']:.3e} pairs/s")
            candidates = [(r["variant"], r["cfg"]) for r in ranked[: args.top]]
    print("\ntop configurations:")
    for d in args.dims:
        for r in sorted((r for r in out if r["d"] == d), key=lambda r: -r["pairs_per_s"])[:6]:
            print(f"  d={d:6d} {r['variant']:6s} {str(r['cfg']):24s} {r['ms']:9.3f} ms {r['pairs_per_s']:.3e} pairs/s "
                  f"{r['scores_per_s']:.3e} scores/s same={r['same']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    if args.best_env:  # the Gluon configuration that was fastest over all dims, for SWAPPASS_GLUON_CONFIG
        score = {}
        for r in out:
            if r["variant"] in ("gluon", "gluon-p") and r["same"]:
                key = (*r["cfg"], int(r["variant"] == "gluon-p"))
                score.setdefault(key, {})[r["d"]] = r["pairs_per_s"]
        full = {k: sum(v.values()) for k, v in score.items() if len(v) == len(args.dims)}
        if full:
            args.best_env.write_text(",".join(map(str, max(full, key=full.get))))


if __name__ == "__main__":
    main()
