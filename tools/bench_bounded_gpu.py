"""The bound-pruned GPU refinement loop against the dense device loop, side by side, on real Gram matrices.

    python tools/bench_bounded_gpu.py --device cuda                      # LLaMA-3.1-8B shapes, 1 random block
    python tools/bench_bounded_gpu.py --device cpu --tiny --iters 3      # the script end to end (Triton interpreter)
    python tools/bench_bounded_gpu.py --device cuda --widths 576,1024,2048,4096   # where the bound starts to pay

With ``--widths``, each width is one synthetic group instead (4096 rows, G from 16384 correlated random tokens),
after one warm-up iteration of both loops (the kernels compiled for that width), to place
:data:`swappass.kernels.gpu.BOUND_MIN_D_IN`.

One decoder block of a randomly initialised LLaMA-3.1-8B-shaped model (bf16) is calibrated on ``--nsamples`` ×
``--seqlen`` random tokens (one-shot, float32 Gram matrices); each of its four Gram groups (q/k/v, o, gate/up,
down) is refined from its Wanda mask at 60% per row for ``--iters`` iterations by the dense device loop
(``SWAPPASS_GPU_BOUND=0``: the Gluon search over all pairs every iteration) and by the bound-pruned loop
(:mod:`swappass.kernels.gpu_bounded`), alternately; the masks and swaps must be identical. Prints per group the
seconds of both, their ratio and the fraction of the kept (row, u) pairs the bounded loop scored exactly.
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
from swappass.kernels.gpu import gluon_available, make_gluon_search, make_triton_search  # noqa: E402
from swappass.kernels.gpu_bounded import BoundedRowLoop  # noqa: E402
from swappass.refine.loop import refine_batch, refine_batch_device  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pass import LLAMA3_8B, TINY, build_model  # noqa: E402


def gram_groups(args) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(group, W (rows of every site, float32), G) of one random block, calibrated one-shot."""
    shape = TINY if args.tiny else LLAMA3_8B
    model = build_model(1, args.device, torch.bfloat16 if args.device.startswith("cuda") else torch.float32, shape)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, shape["vocab_size"], (args.nsamples, args.seqlen), generator=g)
    prepared = sp.prepare(model, {"input_ids": ids[:1].to(args.device)}, pattern="0.6")
    for i in range(args.nsamples):
        prepared(input_ids=ids[i : i + 1].to(args.device))
    out = []
    for group in prepared.groups:
        G = prepared.observers[group.key].statistics()["G"].float()
        W = torch.cat([s.user_weight().float() for s in group.sites]).to(args.device)
        out.append((group.key.split("+")[0].rsplit(".", 1)[-1], W, G.to(args.device)))
    prepared.remove_observers()
    return out


def synthetic_groups(args) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, W, G) for each of ``--widths``: 4096 random rows, G of correlated heavy-tailed random tokens."""
    g = torch.Generator().manual_seed(0)
    out = []
    for d in (int(w) for w in args.widths.split(",")):
        mix = torch.randn(d, d, generator=g) / d ** 0.5 + torch.eye(d)
        X = mix @ (torch.randn(d, 16384, generator=g) * torch.rand(d, 1, generator=g).pow(2).add(0.05))
        out.append((f"d_in={d}", torch.randn(4096, d, generator=g).to(args.device), (X @ X.T).to(args.device)))
    return out


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    res = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--nsamples", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--resync", type=int, default=16)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--widths", default=None, help="comma-separated input widths (synthetic groups)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu (Triton interpreter)"
    print(f"device {name}; torch {torch.__version__}; {args.iters} iterations from Wanda at 60% per row", flush=True)
    rows = []
    for group, W, G in (synthetic_groups(args) if args.widths else gram_groups(args)):
        Gs = (G + G.T) / 2
        mask = sp.warm_start(W, Gs, "0.6", "wanda")
        make = make_gluon_search if gluon_available(dev) else make_triton_search  # Triton: the interpreter on CPU
        dense_search = make(sp.parse_pattern("0.6"), Gs)
        loop = BoundedRowLoop(Gs)
        fused = type("Bounded", (), {"refine_batch": loop.refine_batch})()
        if args.widths:  # compile both loops' kernels for this width first
            refine_batch_device(W, mask.clone(), Gs, dense_search, 1, 1e-6, args.resync)
            refine_batch(W, mask.clone(), Gs, type("Warm", (), {"refine_batch": BoundedRowLoop(Gs).refine_batch})(),
                         1, 1e-6, args.resync)
        k_dense, k_bound = mask.clone(), mask.clone()
        t_dense, (s_dense, it_dense) = timed(
            lambda: refine_batch_device(W, k_dense, Gs, dense_search, args.iters, 1e-6, args.resync))
        t_bound, (s_bound, it_bound) = timed(
            lambda: refine_batch(W, k_bound, Gs, fused, args.iters, 1e-6, args.resync))
        same = bool(torch.equal(k_dense, k_bound) and torch.equal(s_dense, s_bound) and it_dense == it_bound)
        frac = sum(loop.scored) / max(1, sum(loop.kept))
        row = {"group": group, "shape": list(W.shape), "dense_s": t_dense, "bounded_s": t_bound,
               "speedup": t_dense / t_bound, "scored_fraction": frac, "same": same, "refreshes": loop.refreshes, "swaps": int(s_dense.sum()),
               "scored_fraction_by_iteration": [round(s / max(1, k), 4) for s, k in zip(loop.scored, loop.kept)]}
        rows.append(row)
        print(f"{group:10s} {W.shape[0]:6d}×{W.shape[1]:<6d} dense {t_dense:8.3f} s  bounded {t_bound:8.3f} s  "
              f"×{t_dense / t_bound:5.2f}  scored {100 * frac:5.1f}% of kept pairs  same={same}", flush=True)
    total_dense, total_bound = sum(r["dense_s"] for r in rows), sum(r["bounded_s"] for r in rows)
    print(f"block total: dense {total_dense:.2f} s, bounded {total_bound:.2f} s, ×{total_dense / total_bound:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"device": name, "args": vars(args) | {"json": str(args.json)},
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
