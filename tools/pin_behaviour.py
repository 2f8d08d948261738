"""Hashes of the masks and weights that fixed pruning runs produce: the behaviour a refactoring must not change.

Runs a small SmolLM2-135M pass (its first two decoder blocks, WikiText-2 calibration) and tiny randomly
initialised Hugging Face models through ``swappass.sparsify`` with a spread of methods and patterns, and hashes
every pruned parameter (mask and stored values). ``tests/test_pinned_behaviour.py`` compares the result with
``tests/fixtures/pinned_hashes.json``; ``--write`` records a new reference (only when a change of results is
intended, and say so in the commit).

    python tools/pin_behaviour.py            # print the hashes
    python tools/pin_behaviour.py --write    # record them as the reference

Runs single-threaded (BLAS results may depend on the thread count).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import swappass as sp  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "pinned_hashes.json"

# name -> (architecture, sparsify keyword arguments)
TINY_RUNS = {
    "llama-row0.6-wanda": ("llama", dict(pattern="0.6", warm_start="wanda", max_iters=20)),
    "gpt2-2:4-ria": ("gpt2", dict(pattern="2:4", warm_start="ria", max_iters=20)),
    "opt-unstructured0.6-sparsegpt-lstsq": ("opt", dict(pattern="unstructured:0.6", warm_start="sparsegpt",
                                                          max_iters=5, refit="lstsq")),
    "bert-row0.6-dsnot": ("bert", dict(pattern="0.6", refine="dsnot")),
    "qwen2-2:4-sparsegpt-baseline": ("qwen2", dict(pattern="2:4", warm_start="sparsegpt", refine="none",
                                                   refit="sparsegpt")),
    "llama-4:8-magnitude-oneshot": ("llama", dict(pattern="4:8", warm_start="magnitude", max_iters=10,
                                                  sequential=False)),
}
SMOLLM2_RUNS = {
    "smollm2-2blocks-row0.6": dict(pattern="0.6", max_iters=10),
    "smollm2-2blocks-2:4": dict(pattern="2:4", max_iters=10),
}


def digest(model: torch.nn.Module, report) -> str:
    """SHA-256 over every pruned parameter's name, mask bits and stored float32 values, in report order."""
    params = dict(model.named_parameters())
    h = hashlib.sha256()
    for rec in report.pruned_weights():
        h.update(rec.name.encode())
        h.update(rec.mask.to(torch.uint8).contiguous().numpy().tobytes())
        h.update(params[rec.name].detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def tiny_hashes() -> dict[str, str]:
    import tiny_hf

    out = {}
    for name, (arch, kwargs) in TINY_RUNS.items():
        model = tiny_hf.build(arch, seed=0)
        _, report = sp.sparsify(model, tiny_hf.calib(4), progress=False, **kwargs)
        out[name] = digest(model, report)
    return out


def smollm2_hashes() -> dict[str, str]:
    from swappass.lm import data
    from swappass.lm.models import load_model

    out = {}
    for name, kwargs in SMOLLM2_RUNS.items():
        model, tokenizer = load_model("smollm2-135m")
        model.model.layers = model.model.layers[:2]
        model.config.num_hidden_layers = 2
        calib = data.calibration_windows(tokenizer, nsamples=4, seqlen=64, seed=0)
        _, report = sp.sparsify(model, calib, progress=False, **kwargs)
        out[name] = digest(model, report)
    return out


def pinned_hashes(smollm2: bool = True) -> dict[str, str]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tiny_hashes()
        if smollm2:
            out.update(smollm2_hashes())
        return out
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help=f"record the hashes in {FIXTURE.relative_to(REPO)}")
    args = ap.parse_args()
    hashes = pinned_hashes()
    print(json.dumps(hashes, indent=2))
    if args.write:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text(json.dumps(hashes, indent=2, sort_keys=True) + "\n")
        print(f"written to {FIXTURE}")


if __name__ == "__main__":
    main()
