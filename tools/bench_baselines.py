"""Layer-level baselines side by side on the same synthetic layers: error and wall time per method.

    python tools/bench_baselines.py --device cuda --shapes 576x576 1536x576 576x1536 4096x4096 --sparsity 0.6

Per shape (``d_out x d_in``, synthetic W and G as in tools/bench_refine.py) and sparsity ``s``, with a Wanda warm
start: Wanda alone; SparseSwaps per row (``--iters``); the unstructured budget with cross-row moves (``--iters``);
+ refit on the unstructured result; SparseGPT (its weight update, and its projected mask + SparseSwaps + refit).
DSnoT needs per-sequence channel statistics, which a synthetic G does not have, so it is not timed here.
Errors are relative to the Wanda error; every time is a synchronised wall time of the one call.
The unstructured refinement is also run with ``--check-backends`` on the torch backend, to check that the fast
kernel gives the same mask (variable kept counts per row).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import swappass as sp  # noqa: E402
from bench_refine import make_layer  # noqa: E402


def timed(fn, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def run_shape(d_out: int, d_in: int, s: float, iters: int, device: str, check_backends: bool) -> list[dict]:
    W, G = make_layer(d_out, d_in, device)
    row, unst = f"{s:g}", f"unstructured:{s:g}"
    wanda_mask = sp.warm_start(W, G, row, "wanda")
    base = float(sp.layer_loss(W, G, wanda_mask).double().sum())
    rows: list[dict] = []

    def add(method, loss, sec, **extra):
        rows.append(dict(shape=f"{d_out}x{d_in}", sparsity=s, method=method, rel_error=loss / base, seconds=sec, **extra))

    add("wanda", base, 0.0)
    res, sec = timed(lambda: sp.refine_mask(W, G, wanda_mask, row, max_iters=iters), device)
    add(f"wanda+swaps({iters})", res.total_after, sec, backend=res.info["backend"], iters=res.iters)
    m0 = sp.warm_start(W, G, unst, "wanda")
    add("wanda unstructured", float(sp.layer_loss(W, G, m0).double().sum()), 0.0)
    ures, sec = timed(lambda: sp.refine_mask(W, G, m0, unst, max_iters=iters), device)
    add(f"unstructured+swaps+cross({iters})", ures.total_after, sec, backend=ures.info["backend"], iters=ures.iters,
        cross_moves=ures.info["cross_moves"], converged=ures.info["converged"])
    if check_backends and ures.info["backend"] != "torch":
        tres = sp.refine_mask(W, G, m0, unst, max_iters=iters, backend="torch")
        rows[-1]["same_mask_as_torch"] = bool(torch.equal(tres.mask, ures.mask))
        rows[-1]["torch_rel_error"] = tres.total_after / base
    fit, sec = timed(lambda: sp.refit_weights(W, G, ures.mask), device)
    add("unstructured+swaps+cross+refit", fit.total_after, sec)
    sg, sec = timed(lambda: sp.sparsegpt_prune(W, G, row), device)
    add("sparsegpt (own update)", float(sg.loss.double().sum()), sec)
    sg_mask, sec = timed(lambda: sp.sparsegpt_warm_start(W, G, row), device)
    add("sparsegpt mask projected", float(sp.layer_loss(W, G, sg_mask).double().sum()), sec)
    sres, sec = timed(lambda: sp.refine_mask(W, G, sg_mask, row, max_iters=iters), device)
    add(f"sparsegpt+swaps({iters})", sres.total_after, sec)
    fit2, sec = timed(lambda: sp.refit_weights(W, G, sres.mask), device)
    add(f"sparsegpt+swaps({iters})+refit", fit2.total_after, sec)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shapes", nargs="+", default=["576x576", "1536x576"])
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.6])
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--check-backends", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device: {name}; torch {torch.__version__}")
    rows = []
    for shape in args.shapes:
        d_out, d_in = (int(v) for v in shape.lower().split("x"))
        for s in args.sparsity:
            for r in run_shape(d_out, d_in, s, args.iters, args.device, args.check_backends):
                rows.append(r)
                extra = {k: v for k, v in r.items() if k not in ("shape", "sparsity", "method", "rel_error", "seconds")}
                print(f"{r['shape']:>10} s={r['sparsity']:<4g} {r['method']:<38} rel.err {r['rel_error']:.4f}  "
                      f"{r['seconds']:8.3f} s  {extra if extra else ''}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(dict(device=name, torch=torch.__version__, rows=rows), indent=1))


if __name__ == "__main__":
    main()
