"""What 2:4 sparsity buys in PyTorch on a GPU: ``to_sparse_semi_structured`` (cuSPARSELt / CUTLASS) against the
dense matmul, side by side in one run.

    python tools/bench_semistructured.py --json out.json

For each weight shape (d_out × d_in) of LLaMA-3.1-8B and each token count, a 2:4-pruned bf16 / fp16 weight is
multiplied as ``F.linear(x, W)`` dense and as ``F.linear(x, W_sparse)`` with ``W_sparse`` from
``torch.sparse.to_sparse_semi_structured`` (each backend PyTorch offers: cuSPARSELt, CUTLASS); the median of
CUDA-event timings, the ratio sparse/dense (< 1: faster) and whether the result matches the dense one. A backend
that refuses the shape or the GPU is reported with its error.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

SHAPES = [(4096, 4096), (6144, 4096), (28672, 4096), (4096, 14336), (14336, 4096)]
TOKENS = [1, 16, 128, 512, 2048]


def median_ms(fn, repeat: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def pruned_2_4(d_out: int, d_in: int, dtype: torch.dtype) -> torch.Tensor:
    W = torch.randn(d_out, d_in, device="cuda", dtype=dtype)
    blocks = W.view(d_out, d_in // 4, 4)
    low = blocks.abs().argsort(dim=2)[..., :2]
    return blocks.scatter(2, low, 0).view(d_out, d_in)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float16"])
    args = ap.parse_args()
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    info = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    print(info, flush=True)
    rows = []
    backends = {"cusparselt": True, "cutlass": False}
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for d_out, d_in in SHAPES:
            W = pruned_2_4(d_out, d_in, dtype)
            for backend, use_cusparselt in backends.items():
                SparseSemiStructuredTensor._FORCE_CUTLASS = not use_cusparselt
                try:
                    Ws = to_sparse_semi_structured(W)
                except Exception as exc:  # the backend refuses the GPU, dtype or shape: recorded
                    rows.append({"dtype": dtype_name, "shape": [d_out, d_in], "backend": backend,
                                 "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
                    print(f"{dtype_name} {d_out}x{d_in} {backend}: {rows[-1]['error']}", flush=True)
                    continue
                for n in TOKENS:
                    x = torch.randn(n, d_in, device="cuda", dtype=dtype)
                    try:
                        dense_ms = median_ms(lambda: F.linear(x, W))
                        sparse_ms = median_ms(lambda: F.linear(x, Ws))
                        err = float((F.linear(x, Ws) - F.linear(x, W)).abs().max() / F.linear(x, W).abs().max())
                    except Exception as exc:
                        rows.append({"dtype": dtype_name, "shape": [d_out, d_in], "backend": backend, "tokens": n,
                                     "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
                        print(f"{dtype_name} {d_out}x{d_in} {backend} n={n}: {rows[-1]['error']}", flush=True)
                        continue
                    rows.append({"dtype": dtype_name, "shape": [d_out, d_in], "backend": backend, "tokens": n,
                                 "dense_ms": dense_ms, "sparse_ms": sparse_ms, "ratio": sparse_ms / dense_ms,
                                 "rel_err": err})
                    print(f"{dtype_name} {d_out:5d}x{d_in:<5d} {backend:10s} n={n:5d} dense {dense_ms:7.3f} ms "
                          f"sparse {sparse_ms:7.3f} ms  ratio {sparse_ms / dense_ms:5.2f}  rel.err {err:.1e}",
                          flush=True)
    SparseSemiStructuredTensor._FORCE_CUTLASS = False
    if args.json:
        args.json.write_text(json.dumps({"info": info, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
