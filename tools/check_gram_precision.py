"""Precision and speed of the Gram matrix of half-precision activations on the GPU.

``GramAccumulator`` computes ``xᵀx`` for fp16/bf16 activations on TF32 tensor cores (their mantissas fit TF32,
so the products are exact; the question is the tensor cores' float32 accumulation). This compares, in one run,
against a float64 reference:

* ``tf32``: the accumulator's path (TF32 tensor cores),
* ``fp32``: a float32 GEMM with TF32 off (CUDA cores, round-to-nearest FMA),

error = max |G − G_ref| / max |G_ref| and the median of |G − G_ref| / |G_ref| over entries, plus the time per
``xᵀx`` of one batch. Activations: Gaussian with a few large "outlier" channels (LLM-like).

    python tools/check_gram_precision.py --tokens 2048 16384 --d 4096 14336
"""
from __future__ import annotations

import argparse
import time

import torch

from swappass.core.gram import gram_product


def _activations(tokens: int, d: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(tokens, d, device="cuda", generator=g)
    x[:, : max(1, d // 256)] *= 30  # outlier channels
    return x.to(dtype)


def _tf32(x: torch.Tensor) -> torch.Tensor:
    return gram_product(x, tf32=True)


def _fp32(x: torch.Tensor) -> torch.Tensor:
    return gram_product(x, tf32=False)


def _time(fn, x: torch.Tensor, repeat: int = 5) -> float:
    fn(x)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn(x)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat


def _errors(G: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    diff = (G.double() - ref).abs()
    rel_max = float(diff.max() / ref.abs().max())
    rel_med = float((diff / ref.abs().clamp_min(1e-30)).median())
    return rel_max, rel_med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[2048, 16384])
    ap.add_argument("--d", type=int, nargs="+", default=[4096, 14336])
    args = ap.parse_args()
    print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}; "
          f"fp32_precision={getattr(torch.backends.cuda.matmul, 'fp32_precision', 'n/a')}")
    print(f"{'dtype':9} {'tokens':>7} {'d':>6}  {'tf32 max':>9} {'tf32 med':>9} {'fp32 max':>9} {'fp32 med':>9}"
          f"  {'tf32 ms':>8} {'fp32 ms':>8}")
    for dtype in (torch.bfloat16, torch.float16):
        for d in args.d:
            for tokens in args.tokens:
                x = _activations(tokens, d, dtype).float()
                ref = x.double().T @ x.double()
                t_max, t_med = _errors(_tf32(x), ref)
                f_max, f_med = _errors(_fp32(x), ref)
                del ref
                print(f"{str(dtype)[6:]:9} {tokens:7d} {d:6d}  {t_max:9.2e} {t_med:9.2e} {f_max:9.2e} {f_med:9.2e}"
                      f"  {_time(_tf32, x) * 1e3:8.2f} {_time(_fp32, x) * 1e3:8.2f}", flush=True)
                del x
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
