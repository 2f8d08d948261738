"""The whole swappass pass on a LLaMA-3.1-8B-shaped model with random weights (issue 6 benchmark).

    python tools/bench_pass.py --device cuda                       # 32 blocks, bf16, 128 x 2048 tokens, 60%, 100 iters
    python tools/bench_pass.py --device cuda --layers 4 --iters 100 # a slice of the depth, same per-layer shapes

Prints and writes (--json) wall time per stage (model build, capture + calibration, warm start + refinement,
total), per-site refinement time, iterations and swaps, and peak GPU memory. With --layers < 32 it also prints
the linear projection to the full 32 blocks (per-block cost is the same for every block of this model).
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

LLAMA3_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                 num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5)


TINY = dict(LLAMA3_8B, vocab_size=1000, hidden_size=256, intermediate_size=512, num_attention_heads=4,
            num_key_value_heads=2)  # --tiny: the same structure, small enough to check the script on a CPU


def build_model(layers: int, device: str, dtype: torch.dtype, shape: dict):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(num_hidden_layers=layers, **shape)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(prev)
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=8, help="calibration sequences per forward")
    ap.add_argument("--pattern", default="0.6")
    ap.add_argument("--warm-start", default="wanda")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--tiny", action="store_true", help="small dimensions, to check the script on a CPU")
    ap.add_argument("--gram-tf32", action="store_true",
                    help="Gram products of the bf16 activations on TF32 tensor cores (faster, less precise)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    shape = TINY if args.tiny else LLAMA3_8B
    dtype = getattr(torch, args.dtype)
    cuda = args.device.startswith("cuda")
    info = {"gpu": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__, **vars(args)}
    info["json"] = str(args.json) if args.json else None
    print(json.dumps(info), flush=True)

    t0 = time.perf_counter()
    model = build_model(args.layers, args.device, dtype, shape)
    if cuda:
        torch.cuda.synchronize()
    t_build = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, shape["vocab_size"], (args.nsamples, args.seqlen), generator=g)
    calib = [{"input_ids": ids[i: i + 1].to(args.device)} for i in range(args.nsamples)]
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t1 = time.perf_counter()
    model, report = sp.sparsify(model, calib, pattern=args.pattern, warm_start=args.warm_start, max_iters=args.iters,
                                device=args.device, batch_size=args.batch_size, gram_tf32=args.gram_tf32,
                                progress=False)
    if cuda:
        torch.cuda.synchronize()
    t_pass = time.perf_counter() - t1
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    rows = report.to_dict()["sites"] if hasattr(report, "to_dict") else json.loads(report.to_json())["sites"]
    t_prune = sum(r.get("seconds", r.get("time_s", 0.0)) or 0.0 for r in rows)
    result = dict(build_s=t_build, pass_s=t_pass, prune_s=t_prune, calibrate_and_capture_s=t_pass - t_prune,
                  peak_gib=peak, sites=len(report.pruned), mean_reduction=report.mean_relative_reduction,
                  max_iters_run=max((r.get("iters") or 0) for r in rows))
    print(report)
    print(json.dumps(result, indent=1))
    if args.layers < 32:
        f = 32 / args.layers
        print(f"projection to 32 blocks: pass ≈ {t_pass * f:.1f} s (calibration+capture ≈ "
              f"{(t_pass - t_prune) * f:.1f} s, pruning ≈ {t_prune * f:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps({"info": info, "result": result, "sites": rows}, indent=1))


if __name__ == "__main__":
    main()
