"""Run an exported sparse model with onnxruntime: read its sparsity metadata, then greedy-generate a few tokens.

    swappass prune smollm2-135m --pattern 2:4 --calib self --nsamples 16 --seqlen 128 --out smollm2-2of4 --onnx
    python examples/onnx_inference.py smollm2-2of4 --prompt "The capital of France is" --tokens 12 --check

The exported graph takes `input_ids` and `attention_mask` (int64, dynamic batch and sequence axes) and returns
`logits` (batch, sequence, vocab). It has no KV cache, so each generated token re-runs the whole sequence; that
is fine for checking a deployment, use a KV-cache export for serving long outputs. `--check` compares every
step with the PyTorch model saved in the same directory.
"""
from __future__ import annotations

import argparse
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


def greedy(session, input_ids: np.ndarray, steps: int) -> np.ndarray:
    ids = input_ids
    for _ in range(steps):
        logits = session.run(["logits"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
        ids = np.concatenate([ids, logits[:, -1:].argmax(-1).astype(np.int64)], axis=1)
    return ids


def main(argv: list[str] | None = None) -> None:
    import onnxruntime as ort
    from transformers import AutoTokenizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path, help="output of `swappass prune ... --onnx` (holds model.onnx)")
    ap.add_argument("--onnx", type=Path, default=None, help="the .onnx file (default: MODEL_DIR/model.onnx)")
    ap.add_argument("--prompt", default="The tower is 324 metres tall, about the same height as")
    ap.add_argument("--tokens", type=int, default=12)
    ap.add_argument("--check", action="store_true", help="compare with the PyTorch model in MODEL_DIR")
    args = ap.parse_args(argv)

    path = args.onnx or args.model_dir / "model.onnx"
    describe_sparsity(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    prompt = tokenizer(args.prompt, return_tensors="np")["input_ids"].astype(np.int64)
    out = greedy(session, prompt, args.tokens)
    print("onnxruntime:", repr(tokenizer.decode(out[0], skip_special_tokens=True)))

    if args.check:
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(args.model_dir).eval()
        ids = torch.from_numpy(prompt)
        with torch.no_grad():
            for _ in range(args.tokens):
                ids = torch.cat([ids, model(input_ids=ids).logits[:, -1:].argmax(-1)], dim=1)
        same = np.array_equal(ids.numpy(), out)
        print("PyTorch:    ", repr(tokenizer.decode(ids[0], skip_special_tokens=True)))
        print("greedy tokens identical:", same)
        if not same:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
