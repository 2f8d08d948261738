"""Run an exported sparse model with onnxruntime: read its sparsity metadata, then greedy-generate with the KV cache.

    swappass prune smollm2-135m --pattern 2:4 --calib self --nsamples 16 --seqlen 128 --out smollm2-2of4 --onnx
    python examples/onnx_inference.py smollm2-2of4 --prompt "The capital of France is" --tokens 24 --check

The exported decoder takes `input_ids`, `attention_mask` (int64) and, per layer, `past_key_values.N.key/value`
(`[batch, kv_heads, past, head_size]`; empty for the prompt), plus `position_ids` when the graph has that input
(torch.onnx-exported decoders; the onnxruntime-genai builder's graph takes positions from the attention mask); it
returns `logits` and `present.N.key/value`, which are the next step's past. This file runs that loop by hand in
plain onnxruntime; `--genai` runs the same directory in onnxruntime-genai instead (`og.Model`, its tokenizer and
search — what `swappass generate` does; it stops at the end-of-sequence token). `--check` compares the tokens
with PyTorch's greedy generation (argmax, with its KV cache) of the model saved in the same directory.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def describe_sparsity(path: Path) -> None:
    from swappass.onnx.metadata import read_sparsity_metadata

    meta = read_sparsity_metadata(path)
    entries = meta.get("swappass.sparsity", {})
    if not entries:
        print(f"{path}: no swappass sparsity metadata (a dense export?)")
        return
    mean = sum(e["sparsity"] for e in entries.values()) / len(entries)
    storage = sorted({e["storage"] for e in entries.values()})
    print(f"{path}: pattern {meta.get('swappass.pattern')}, {len(entries)} sparse weights, mean sparsity "
          f"{100 * mean:.1f}%, storage {', '.join(storage)} (written by swappass {meta.get('swappass.version')})")
    name, e = next(iter(entries.items()))
    print(f"  e.g. {name}: parameter {e['parameter']}, shape {e['shape']}, pruned inputs along axis {e['in_axis']}"
          f" = the MatMul reduction axis {e['reduction_axis']}")


def greedy_with_cache(session, config: dict, input_ids: np.ndarray, steps: int) -> np.ndarray:
    """Greedy generation, one new token per step after the prompt, the cache carried from step to step."""
    decoder = config["model"]["decoder"]
    inputs = {i.name for i in session.get_inputs()}
    past = {f"past_key_values.{layer}.{kind}": np.zeros((1, decoder["num_key_value_heads"], 0, decoder["head_size"]),
                                                        dtype=np.float32)
            for layer in range(decoder["num_hidden_layers"]) for kind in ("key", "value")}
    outputs = [o.name for o in session.get_outputs()]
    ids, total, new = input_ids, 0, []
    for _ in range(steps):
        feeds = {"input_ids": ids, "attention_mask": np.ones((1, total + ids.shape[1]), dtype=np.int64), **past}
        if "position_ids" in inputs:
            feeds["position_ids"] = np.arange(total, total + ids.shape[1], dtype=np.int64)[None]
        result = dict(zip(outputs, session.run(None, feeds)))
        token = int(result["logits"][0, -1].argmax())
        new.append(token)
        past = {name: result[name.replace("past_key_values.", "present.")] for name in past}
        total += ids.shape[1]
        ids = np.array([[token]], dtype=np.int64)
    return np.array(new)


def greedy_with_genai(directory: Path, input_ids: np.ndarray, steps: int) -> np.ndarray:
    import onnxruntime_genai as og

    model = og.Model(str(directory))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=input_ids.shape[1] + steps)
    generator = og.Generator(model, params)
    generator.append_tokens(input_ids.astype(np.int32))
    new = []
    while not generator.is_done():
        generator.generate_next_token()
        new.append(int(generator.get_next_tokens()[0]))
    return np.array(new)


def main(argv: list[str] | None = None) -> None:
    import onnxruntime as ort
    from transformers import AutoTokenizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path, help="output of `swappass prune ... --onnx` (model.onnx, genai_config.json)")
    ap.add_argument("--prompt", default="The tower is 324 metres tall, about the same height as")
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--genai", action="store_true", help="run it in onnxruntime-genai instead of plain onnxruntime")
    ap.add_argument("--check", action="store_true", help="compare with PyTorch's greedy tokens (model in MODEL_DIR)")
    args = ap.parse_args(argv)

    config = json.loads((args.model_dir / "genai_config.json").read_text())
    path = args.model_dir / config["model"]["decoder"]["filename"]
    describe_sparsity(path)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    prompt = tokenizer(args.prompt, return_tensors="np")["input_ids"].astype(np.int64)
    t0 = time.perf_counter()
    if args.genai:
        new = greedy_with_genai(args.model_dir, prompt, args.tokens)
    else:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        new = greedy_with_cache(session, config, prompt, args.tokens)
    runtime = "onnxruntime-genai" if args.genai else "onnxruntime"
    print(f"{runtime} ({len(new)} tokens, {time.perf_counter() - t0:.1f} s):",
          repr(tokenizer.decode(new, skip_special_tokens=True)))

    if args.check:
        import torch
        from transformers import AutoModelForCausalLM

        from swappass.onnx.cache_verify import torch_greedy  # argmax with PyTorch's own KV cache

        model = AutoModelForCausalLM.from_pretrained(args.model_dir).eval()
        expected = torch_greedy(model, torch.from_numpy(prompt), len(new))[0][0]
        same = np.array_equal(expected, new)
        print("PyTorch:    ", repr(tokenizer.decode(expected, skip_special_tokens=True)))
        print("greedy tokens identical:", same)
        if not same:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
