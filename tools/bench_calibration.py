"""Cost of the graph pass's calibration against the plain one-shot baseline (forward hooks), in one run.

    python tools/bench_calibration.py --device cuda                          # LLaMA-3.1-8B shapes, 32 blocks
    python tools/bench_calibration.py --device cpu --preset smollm2-135m --layers 30 --nsamples 16 --seqlen 128 \
        --batch-size 4 --dtype float32

Model: random weights from a config (``llama3-8b``: hidden 4096, FFN 14336, 32/8 heads, vocab 128256;
``smollm2-135m``: hidden 576, FFN 1536, 9/3 heads, vocab 49152; ``tiny`` for a quick check). Calibration:
``nsamples`` random windows of ``seqlen`` tokens, ``batch_size`` per forward.
Warm start only (``max_iters=0``), so the numbers are capture + calibration + Wanda, not the swap search.

Measured, each after the previous, on the same model:

1. **hooks (baseline)**: one forward pass over the calibration set with forward pre-hooks accumulating the
   float32 Gram matrix of every Linear input (what a one-shot pass needs at least; all G alive at once).
2. **swappass one-shot** (``sequential=False``): the same statistics through the captured graph.
3. **swappass sequential** (default): 4·layers levels, each calibrated on the pruned upstream sites.

Prints wall time, pruning (warm start) time, peak device memory and the capture time of the graph; with
``--repeat N`` the variants run interleaved N times and the fastest run of each is reported (noisy machines).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import swappass as sp  # noqa: E402

PRESETS = {
    "llama3-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                      num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5),
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_attention_heads=9,
                         num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
                         tie_word_embeddings=True),
    "tiny": dict(vocab_size=512, hidden_size=128, intermediate_size=384, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=2048),
}


def build_model(preset: str, layers: int, device: str, dtype: torch.dtype) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(num_hidden_layers=layers, **PRESETS[preset])
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


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")


@torch.no_grad()
def hooks_baseline(model: nn.Module, batches: list[torch.Tensor], device: str) -> dict:
    grams: dict[str, torch.Tensor] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and name != "lm_head":
            def hook(m, args, name=name):
                x = args[0].reshape(-1, args[0].shape[-1]).float()
                if name not in grams:
                    grams[name] = torch.zeros(x.shape[1], x.shape[1], device=x.device)
                grams[name].addmm_(x.T, x)
            handles.append(mod.register_forward_pre_hook(hook))
    sync(device)
    t0 = time.perf_counter()
    for ids in batches:
        model(input_ids=ids, use_cache=False)
    sync(device)
    seconds = time.perf_counter() - t0
    for h in handles:
        h.remove()
    grams.clear()
    return {"seconds": seconds}


def run_pass(model: nn.Module, batches: list[torch.Tensor], sequential: bool, pattern: str, device: str) -> dict:
    sync(device)
    t0 = time.perf_counter()
    _, report = sp.sparsify(model, [{"input_ids": b} for b in batches], pattern=pattern, max_iters=0,
                            sequential=sequential, progress=False)
    sync(device)
    seconds = time.perf_counter() - t0
    for rec in report.pruned_weights():
        rec.check()
    prune = sum(r.seconds for r in report.pruned)
    return {"seconds": seconds, "prune_seconds": prune, "calibration_seconds": seconds - prune,
            "levels": report.settings["levels"], "sites": len(report.pruned)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", default="llama3-8b", choices=sorted(PRESETS))
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--pattern", default="0.6")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="runs per variant, interleaved; the fastest is reported")
    args = ap.parse_args()
    dev, dtype = args.device, getattr(torch, args.dtype)
    info = {"device": torch.cuda.get_device_name() if dev.startswith("cuda") else "cpu",
            "torch": torch.__version__, "threads": torch.get_num_threads(), **vars(args)}
    print(json.dumps(info), flush=True)

    t0 = time.perf_counter()
    model = build_model(args.preset, args.layers, dev, dtype)
    sync(dev)
    print(f"model built in {time.perf_counter() - t0:.1f} s", flush=True)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, PRESETS[args.preset]["vocab_size"], (args.nsamples, args.seqlen), generator=g)
    batches = [ids[i: i + args.batch_size].to(dev) for i in range(0, args.nsamples, args.batch_size)]

    t0 = time.perf_counter()
    sp.capture(model, {"input_ids": batches[0]})
    results = {"capture_seconds": time.perf_counter() - t0}
    variants = [("one_shot", lambda: run_pass(model, batches, False, args.pattern, dev)),
                ("sequential", lambda: run_pass(model, batches, True, args.pattern, dev))]
    if not args.skip_baseline:
        variants.insert(0, ("hooks", lambda: hooks_baseline(model, batches, dev)))
    for rep in range(args.repeat):
        for name, fn in variants:
            reset_peak(dev)
            res = {**fn(), "peak_gib": peak_gib(dev)}
            print(f"run {rep} {name}", res, flush=True)
            if name not in results or res["seconds"] < results[name]["seconds"]:
                results[name] = res
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
