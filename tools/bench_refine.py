"""Wall time of refine_mask per backend, same run, same inputs (the CPU path of issue 6).

    python tools/bench_refine.py                       # SmolLM2-135M shapes, 576 rows, 20 iterations
    python tools/bench_refine.py --iters 100 --patterns 0.6
    python tools/bench_refine.py --source smollm2 --iters 100 --patterns 0.6 0.5 --paths cpu-exhaustive cpu

Paths: ``torch`` (the Python refinement loop around the plain torch search), ``cpu-search`` (the Python refinement loop around the
compiled search), ``cpu-exhaustive`` (the loop in C++ around the exhaustive compiled search), ``cpu`` (the loop in
C++ with the bound-pruned search, what ``backend="cpu"`` runs for per-row patterns; for N:M it is the same loop
as ``cpu-exhaustive``). ``--source synthetic``: random weights and Gram matrices of SmolLM2's shapes;
``--source smollm2``: the real weights of four projections of one SmolLM2-135M block and their Gram matrices
from dense calibration on WikiText-2 valid (``--calib`` windows × tokens).
Every path must give the same mask as ``torch`` (checked). The time includes the exact losses that
refine_mask computes before and after (two d_out × d_in × d_in products), the same for every path.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import swappass as sp  # noqa: E402
from swappass import kernels  # noqa: E402
from swappass.refine import rows  # noqa: E402
from swappass.core.patterns import parse_pattern  # noqa: E402

SHAPES = {"smollm2": [("q/k/v/o/gate/up d_in=576", 576, 576), ("down d_in=1536", 576, 1536)]}
REAL = ("self_attn.q_proj", "self_attn.o_proj", "mlp.up_proj", "mlp.down_proj")


def make_layer(rows: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, d, generator=g)
    X = torch.randn(d, 2 * d, generator=g) * (0.1 + torch.rand(d, 1, generator=g))
    return W, X @ X.T


def synthetic_layers() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    return [(label, *make_layer(rows, d)) for label, rows, d in SHAPES["smollm2"]]


def smollm2_layers(block: int, nsamples: int, seqlen: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Real weights of block ``block`` and the Gram matrices of their dense inputs on WikiText-2 valid."""
    from swappass.lm import data
    from swappass.lm.models import load_model

    model, tok = load_model("smollm2-135m")
    mods = dict(model.named_modules())
    names = [f"model.layers.{block}.{n}" for n in REAL]
    grams = {n: sp.GramAccumulator(mods[n].in_features) for n in names}
    hooks = [mods[n].register_forward_pre_hook(lambda m, a, acc=grams[n]: acc.update(a[0].reshape(-1, a[0].shape[-1])))
             for n in names]
    with torch.no_grad():
        for ids in data.calibration_windows(tok, nsamples=nsamples, seqlen=seqlen, seed=0):
            model(ids)
    for h in hooks:
        h.remove()
    return [(f"{n.split('.', 2)[2]} {tuple(mods[n].weight.shape)}", mods[n].weight.detach().float().contiguous(),
             grams[n].G) for n in names]


@contextlib.contextmanager
def exhaustive_fused_loop():
    """Within the block, the compiled per-row search runs its fused loop without the bound."""
    before = os.environ.get("SWAPPASS_CPU_BOUND")
    os.environ["SWAPPASS_CPU_BOUND"] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["SWAPPASS_CPU_BOUND"]
        else:
            os.environ["SWAPPASS_CPU_BOUND"] = before


def without_fused_loop(make):
    """The registry's make_search as it is, but hiding the kernel's refine_batch so the Python loop runs."""
    def patched(backend, pattern, G, budget_elems):
        search = make(backend, pattern, G, budget_elems)
        return lambda w, c, keep: search(w, c, keep)
    return patched


def run_path(path: str, W, G, mask, pattern, iters: int):
    backend = "torch" if path == "torch" else "cpu"
    original = rows.make_search
    if path == "cpu-search":
        rows.make_search = without_fused_loop(original)
    try:
        with exhaustive_fused_loop() if path == "cpu-exhaustive" else contextlib.nullcontext():
            t0 = time.perf_counter()
            res = sp.refine_mask(W, G, mask, pattern, max_iters=iters, backend=backend)
            return time.perf_counter() - t0, res
    finally:
        rows.make_search = original


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patterns", nargs="+", default=["0.6", "2:4"])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs per path (torch: one run)")
    ap.add_argument("--paths", nargs="+", default=["torch", "cpu-search", "cpu-exhaustive", "cpu"],
                    help="the first is the baseline of the speed-ups")
    ap.add_argument("--source", choices=("synthetic", "smollm2"), default="synthetic")
    ap.add_argument("--block", type=int, default=3, help="--source smollm2: the decoder block")
    ap.add_argument("--calib", type=int, nargs=2, default=(8, 512), metavar=("WINDOWS", "TOKENS"),
                    help="--source smollm2: calibration windows and their length")
    ap.add_argument("--threads", type=int, default=0, help="torch/OpenMP threads (0: torch's default)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if "cpu" not in kernels.available_backends("cpu"):
        raise SystemExit("the cpu backend is not registered")
    info = dict(torch=torch.__version__, threads=torch.get_num_threads(), machine=platform.machine(),
                iters=args.iters, source=args.source)
    layers = synthetic_layers() if args.source == "synthetic" else smollm2_layers(args.block, *args.calib)
    print(json.dumps(info))
    results = []
    for label, W, G in layers:
        rows, d = W.shape
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
                print(f"{label:28s} {str(pattern):8s} {path:14s} {best * 1e3:9.1f} ms  iters={res.iters:3d} "
                      f"swaps={int(res.swaps.sum()):6d} same_mask={same}", flush=True)
    print(f"\nspeed-up over the {args.paths[0]} path (same run):")
    for r in results:
        base = next(x for x in results if x["shape"] == r["shape"] and x["pattern"] == r["pattern"])
        if r is not base:
            print(f"  {r['shape']:28s} {r['pattern']:8s} {r['path']:14s} x{base['seconds'] / r['seconds']:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"info": info, "results": results}, indent=2))


if __name__ == "__main__":
    main()
