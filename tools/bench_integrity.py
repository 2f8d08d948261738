"""What the integrity checks cost on SmolLM2-135M (fp32, 540 MB), each beside the work it guards.

    PYTHONPATH=. python tools/bench_integrity.py [--repeats 3]

Timed, median of ``--repeats``: the model's file fingerprint (a cold hash of every file, then the digest cache),
the dense state digest the pass records in checkpointed runs (``state_sha256``), the check of every Linear weight
against a 2:4 mask (``check_pruned_weight``), the degeneracy test of the Gram matrices of a block (576² and 1536²),
and the save: plain ``save_pretrained`` + tokenizer + masks against the CLI's staged save with read-back
(``write_model_files``) and the digests of the written files. SmolLM2 must be in the swappass cache.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from swappass.cli.digests import file_digest, file_sha256
    from swappass.cli.fingerprint import file_fingerprint, model_files
    from swappass.cli.output_dir import RunDir
    from swappass.cli.saving import write_model_files
    from swappass.core.digests import state_sha256
    from swappass.core.gram import gram_degeneracy
    from swappass.core.masks import MASKS_FILE, PrunedWeight, check_pruned_weight, save_masks
    from swappass.lm.models import load_model, smollm2_dir
    from swappass.methods.warmstart import mask_from_scores

    directory = smollm2_dir()
    model, tokenizer = load_model(str(directory))
    rows: dict[str, float] = {}

    def cold_fingerprint():  # what a digest-cache miss does, file by file (the cache itself is left alone)
        return {p.name: file_sha256(p) for p in model_files(directory)}

    rows["file fingerprint, cold (hash every file)"] = timed(cold_fingerprint, args.repeats)
    file_fingerprint(str(directory))
    rows["file fingerprint, cached"] = timed(lambda: file_fingerprint(str(directory)), args.repeats)
    rows["state_sha256 (dense state digest)"] = timed(lambda: state_sha256(model), args.repeats)

    linears = {n: p for n, p in model.named_parameters() if p.dim() == 2 and "layers." in n}
    records = []
    with torch.no_grad():
        for name, p in linears.items():
            mask = mask_from_scores(p.abs(), "2:4")
            p.mul_(mask)
            records.append(PrunedWeight(name, mask, "2:4"))
    params = dict(model.named_parameters())
    rows[f"check_pruned_weight, all {len(records)} Linear weights (2:4)"] = timed(
        lambda: [check_pruned_weight(params[r.name], r.mask, r.pattern, r.name) for r in records], args.repeats)
    g = {d: (lambda x: x.T @ x)(torch.randn(4096, d)) for d in (576, 1536)}
    rows["gram_degeneracy, one block's 4 Gram matrices (3×576², 1536²)"] = timed(
        lambda: [gram_degeneracy(g[d]) for d in (576, 576, 576, 1536)], args.repeats)

    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        def plain():
            out = Path(tempfile.mkdtemp(dir=tmp))
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)
            save_masks(records, out / MASKS_FILE)

        def staged():
            run = RunDir(Path(tempfile.mkdtemp(dir=tmp)))
            names = write_model_files(run, model, tokenizer, records)
            return {n: file_digest(run.path / n) for n in names}

        rows["save: save_pretrained + tokenizer + masks (baseline)"] = timed(plain, args.repeats)
        rows["save: checked, staged, read back, installed, digests"] = timed(staged, args.repeats)
    width = max(map(len, rows))
    for name, seconds in rows.items():
        print(f"{name.ljust(width)}  {seconds:7.3f} s")
    print(json.dumps({"threads": torch.get_num_threads(), **rows}))


if __name__ == "__main__":
    main()
