"""The CPU N:M refinement loop of two kernel sources, in one process, alternately, on the same real layers.

    python tools/bench_nm_loop.py --baseline be2ab5a                 # SmolLM2 block 3, 2:4, 100 iterations
    python tools/bench_nm_loop.py --baseline HEAD~1 --patterns 2:4 4:8 --repeats 5

The baseline revision's ``swappass/kernels/swap_search_cpu.cpp`` is compiled with this checkout's flags
(``swappass.kernels.cpu.FLAGS``) into a temporary library; both libraries serve ``NMSearch.refine_batch`` (the
fused loop: search, accept, c update in C++, the exact resyncs of c every 16 iterations in torch, identical
for both) on the real weights of SmolLM2-135M block ``--block`` (q/k/v, o, gate/up, down, each Gram group as
one refinement, as the pass runs it) and their Gram matrices from dense calibration on WikiText-2 valid. Timed:
the loop's C++ calls alone (``NMSearch.loop_cpu_seconds``) and the whole ``refine_batch``, as process CPU time (less
sensitive than wall time to the other jobs of a shared machine) and wall time, best of ``--repeats``, the two
libraries alternating. Both must give the same masks, swaps and iterations (checked).
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

import swappass as sp  # noqa: E402
from swappass.core.patterns import parse_pattern  # noqa: E402
from swappass.kernels import cpu  # noqa: E402

GROUPS = {"q/k/v": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "o": ("self_attn.o_proj",),
          "gate/up": ("mlp.gate_proj", "mlp.up_proj"), "down": ("mlp.down_proj",)}


def build(rev: str, into: Path):
    """The kernel library of revision ``rev``'s source (this checkout's flags and compiler)."""
    src = into / "swap_search_cpu.cpp"
    src.write_bytes(subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:swappass/kernels/swap_search_cpu.cpp"],
                                   check=True, capture_output=True).stdout)
    lib = into / "baseline.so"
    subprocess.run([cpu.find_compiler(), *cpu.FLAGS, str(src), "-o", str(lib)], check=True)
    return cpu.open_library(lib)


def real_groups(block: int, nsamples: int, seqlen: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(group, W of its sites stacked, G) for the four Gram groups of one SmolLM2 block (dense calibration)."""
    from swappass.lm import data
    from swappass.lm.models import load_model

    model, tok = load_model("smollm2-135m")
    mods = dict(model.named_modules())
    first = {g: f"model.layers.{block}.{names[0]}" for g, names in GROUPS.items()}
    grams = {g: sp.GramAccumulator(mods[n].in_features) for g, n in first.items()}
    hooks = [mods[first[g]].register_forward_pre_hook(
        lambda m, a, acc=grams[g]: acc.update(a[0].reshape(-1, a[0].shape[-1]))) for g in GROUPS]
    with torch.no_grad():
        for ids in data.calibration_windows(tok, nsamples=nsamples, seqlen=seqlen, seed=0):
            model(ids)
    for h in hooks:
        h.remove()
    out = []
    for g, names in GROUPS.items():
        W = torch.cat([mods[f"model.layers.{block}.{n}"].weight.detach().float() for n in names]).contiguous()
        out.append((f"{g} {tuple(W.shape)}", W, grams[g].G))
    return out


def timed(lib, W, G, mask, pattern, iters: int) -> tuple[float, float, float, torch.Tensor, torch.Tensor, int]:
    """(C++ CPU seconds, refine_batch CPU seconds, refine_batch wall seconds, mask, swaps, iterations)."""
    search = cpu.NMSearch(lib, G, pattern.m)
    keep = mask.clone()
    t0, w0 = time.process_time(), time.perf_counter()
    swaps, it = search.refine_batch(W, keep, G, iters, 1e-6, 16)
    return search.loop_cpu_seconds, time.process_time() - t0, time.perf_counter() - w0, keep, swaps, it


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, help="git revision whose kernel source is the baseline")
    ap.add_argument("--patterns", nargs="+", default=["2:4"])
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--block", type=int, default=3)
    ap.add_argument("--calib", type=int, nargs=2, default=(16, 128), metavar=("WINDOWS", "TOKENS"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        libs = {"baseline": build(args.baseline, Path(tmp)), "this": cpu.load_library()}
        groups = real_groups(args.block, *args.calib)
        print(json.dumps(dict(torch=torch.__version__, threads=args.threads, machine=platform.machine(),
                              baseline=args.baseline, iters=args.iters)))
        results = []
        for label, W, G in groups:
            for spec in args.patterns:
                pattern = parse_pattern(spec)
                mask = sp.warm_start(W, G, pattern, "wanda")
                best: dict[str, list] = {}
                for _ in range(args.repeats):
                    for name, lib in libs.items():
                        r = timed(lib, W, G, mask, pattern, args.iters)
                        prev = best.get(name)
                        best[name] = r if prev is None else [min(a, b) for a, b in zip(r[:3], prev[:3])] + list(r[3:])
                same = all(torch.equal(best["this"][i], best["baseline"][i]) for i in (3, 4)) and \
                    best["this"][5] == best["baseline"][5]
                row = dict(group=label, pattern=spec, iters=best["this"][5], same=same,
                           **{f"{n}_{k}": best[n][i] for n in libs for i, k in enumerate(("loop_cpu_s", "refine_cpu_s",
                                                                                          "refine_wall_s"))})
                results.append(row)
                print(f"{label:22s} {spec:5s} iters={row['iters']:3d} same={same}  loop (CPU s) "
                      f"{row['baseline_loop_cpu_s']:.3f} -> {row['this_loop_cpu_s']:.3f} "
                      f"(x{row['baseline_loop_cpu_s'] / row['this_loop_cpu_s']:.2f})  refine_batch (CPU s) "
                      f"{row['baseline_refine_cpu_s']:.3f} -> {row['this_refine_cpu_s']:.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
