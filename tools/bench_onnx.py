"""ONNX deployment of SmolLM2-135M: export time (and where it goes), file size, and generation speed in
onnxruntime on CPU — the KV-cache decoder against the graph without a cache, dense against 2:4 (compact storage).

Exports (each one `swappass export DIR --out … --json …` in its own process, as a user runs it; wall time of the
process, stage times from the report):

* ``nocache-full``  — the graph without a cache, as it was exported before (torch.onnx, ``--optimize full``);
* ``nocache-fold``  — the same graph, translated with swappass's clean-up instead of the optimiser's rewriter;
* ``kv-genai``      — the KV-cache decoder by the onnxruntime-genai model builder (the default for LLaMA-family);
* ``kv-genai-compact`` — the same, 2:4 weights stored compactly;
* ``kv-torch``      — the KV-cache decoder by torch.export + torch.onnx (the path for other architectures);
* ``kv-genai-dense`` — the builder's decoder of the dense (unpruned) model.

Then generation, side by side in one run (interleaved rounds, median): greedy ``--tokens`` tokens after a fixed
prompt, in swappass's onnxruntime loop (:class:`swappass.onnx.generation.DecoderSession`, ``--threads``
intra-op threads) for every file, and in onnxruntime-genai's own loop for the KV-cache directories. The 2:4 model
is SmolLM2 pruned by magnitude (every Linear of the 30 blocks): speed and size do not depend on how the mask was
chosen.

    PYTHONPATH=. python tools/bench_onnx.py --work /tmp/bench_onnx [--tokens 128] [--rounds 3] [--skip-exports]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROMPT = ("The tower is 324 metres tall, about the same height as an 81-storey building, and the tallest structure "
          "in Paris. Its base is square, measuring 125 metres on each side.")
EXPORTS = {  # name: (model directory key, extra `swappass export` options)
    "nocache-full": ("pruned", ["--no-kv-cache", "--optimize", "full"]),
    "nocache-fold": ("pruned", ["--no-kv-cache"]),
    "kv-genai": ("pruned", ["--exporter", "genai"]),
    "kv-genai-compact": ("pruned", ["--exporter", "genai", "--compact"]),
    "kv-torch": ("pruned", ["--exporter", "torch"]),
    "kv-genai-dense": ("dense", ["--exporter", "genai"]),
}


def prepare(work: Path) -> dict[str, Path]:
    """The dense SmolLM2 directory and a 2:4 (magnitude) pruned one with its masks."""
    from swappass.lm.models import load_model

    dense, pruned = work / "dense", work / "pruned"
    if not (pruned / "swappass_masks.safetensors").is_file():
        import torch

        from swappass.core.masks import MASKS_FILE, PrunedWeight, save_masks
        from swappass.core.patterns import parse_pattern
        from swappass.methods.warmstart import warm_start

        model, tokenizer = load_model("smollm2-135m", dtype=torch.float32)
        model.save_pretrained(dense)
        tokenizer.save_pretrained(dense)
        records = []
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and "lm_head" not in name:
                mask = warm_start(module.weight.data, None, "2:4", "magnitude")
                module.weight.data.mul_(mask)
                records.append(PrunedWeight(f"{name}.weight", mask, str(parse_pattern("2:4"))))
        model.save_pretrained(pruned)
        tokenizer.save_pretrained(pruned)
        save_masks(records, pruned / MASKS_FILE)
    return {"dense": dense, "pruned": pruned}


def run_export(name: str, dirs: dict[str, Path], work: Path) -> dict:
    """One export in its own process; the report JSON plus the wall time."""
    source, options = EXPORTS[name]
    out = work / name / "model.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = work / name / "report.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "swappass", "export", str(dirs[source]), "--out", str(out), "--json", str(report), *options]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name}: export failed ({proc.returncode}): {proc.stderr[-2000:]}")
    data = json.loads(report.read_text())
    data["wall_seconds"] = wall
    (work / name / "bench.json").write_text(json.dumps(data, indent=2))
    return data


def speed_onnxruntime(path: Path, ids: np.ndarray, tokens: int, threads: int) -> tuple[float, float]:
    from swappass.onnx.generation import DecoderSession

    session = DecoderSession(path, threads=threads)
    result = session.greedy(ids, tokens)
    return result.prefill_tokens_per_second, result.decode_tokens_per_second


def speed_genai(directory: Path, ids: np.ndarray, tokens: int) -> tuple[float, float]:
    import onnxruntime_genai as og

    model = og.Model(str(directory))
    params = og.GeneratorParams(model)
    n = ids.shape[1]
    params.set_search_options(do_sample=False, max_length=n + tokens, min_length=n + tokens)
    generator = og.Generator(model, params)
    t0 = time.perf_counter()
    generator.append_tokens(ids.astype(np.int32))
    prefill = time.perf_counter() - t0
    t0, count = time.perf_counter(), 0
    while not generator.is_done():
        generator.generate_next_token()
        count += 1
    decode = time.perf_counter() - t0
    return n / prefill, (count - 1) / decode  # tokens after the first, as in DecoderSession


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-exports", action="store_true", help="reuse the exports of an earlier run in --work")
    ap.add_argument("--only", nargs="*", default=list(EXPORTS), help="exports to run")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    dirs = prepare(args.work)
    names = [n for n in EXPORTS if n in args.only]
    exports = {}
    for name in names:
        cached = args.work / name / "bench.json"
        if args.skip_exports and cached.is_file():
            exports[name] = json.loads(cached.read_text())
        else:
            print(f"exporting {name} …", flush=True)
            exports[name] = run_export(name, dirs, args.work)
        e = exports[name]
        print(f"  {name}: wall {e['wall_seconds']:.1f} s, passed {e['passed']}, {e['file_bytes'] / 1e6:.1f} MB, "
              f"stages {({k: round(v, 1) for k, v in e['stage_seconds'].items()})}", flush=True)
    from transformers import AutoTokenizer

    ids = np.asarray(AutoTokenizer.from_pretrained(dirs["pruned"])(PROMPT)["input_ids"], dtype=np.int64)[None]
    runs = [(n, "onnxruntime") for n in names] + [(n, "genai") for n in names if n.startswith("kv-genai")]
    speeds: dict[tuple[str, str], list[tuple[float, float]]] = {r: [] for r in runs}
    for rnd in range(args.rounds):
        for name, runtime in runs:
            path = args.work / name / "model.onnx"
            result = (speed_genai(path.parent, ids, args.tokens) if runtime == "genai"
                      else speed_onnxruntime(path, ids, args.tokens, args.threads))
            speeds[name, runtime].append(result)
            print(f"round {rnd}: {name:18s} {runtime:12s} prefill {result[0]:7.1f} tok/s, decode {result[1]:6.2f} tok/s",
                  flush=True)
    rows = []
    for (name, runtime), values in speeds.items():
        e = exports[name]
        rows.append({"export": name, "runtime": runtime, "prompt_tokens": int(ids.shape[1]), "tokens": args.tokens,
                     "prefill_tok_s": statistics.median(v[0] for v in values),
                     "decode_tok_s": statistics.median(v[1] for v in values),
                     "export_wall_s": e["wall_seconds"], "stage_seconds": e["stage_seconds"],
                     "file_mb": e["file_bytes"] / 1e6, "passed": e["passed"]})
    info = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "threads": args.threads, "rows": rows}
    (args.work / "bench_onnx.json").write_text(json.dumps(info, indent=2))
    print("\n| export | runtime | file MB | export wall s | prefill tok/s | decode tok/s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['export']} | {r['runtime']} | {r['file_mb']:.1f} | {r['export_wall_s']:.1f} | "
              f"{r['prefill_tok_s']:.1f} | {r['decode_tok_s']:.2f} |")


if __name__ == "__main__":
    main()
