"""Prune a causal LM with the Python API, then save it the way `swappass prune` does.

    python examples/prune_with_api.py                                    # SmolLM2-135M, 2:4, data-free calibration
    python examples/prune_with_api.py --model DIR --pattern 0.6 --calib wikitext2 --nsamples 128 --seqlen 2048
    python examples/prune_with_api.py --manual                           # prepare -> calibrate -> convert by hand

`sparsify` calibrates sequentially (each Linear sees inputs through the already pruned layers upstream);
the manual prepare/convert form calibrates one-shot (every Linear sees the dense model), like PT2E's
prepare_pt2e -> calibrate -> convert_pt2e.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import swappass as sp
from swappass.lm.calibration import calibration_set
from swappass.core.masks import MASKS_FILE, save_masks
from swappass.lm.models import load_model


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="HF directory, .gguf file, hub id or alias")
    ap.add_argument("--pattern", default="2:4")
    ap.add_argument("--iters", type=int, default=100, help="1-swap iterations per row")
    ap.add_argument("--calib", default="self", help="self, wikitext2, a text file or hf:NAME[:CONFIG[:SPLIT]]")
    ap.add_argument("--nsamples", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=128)
    ap.add_argument("--manual", action="store_true", help="prepare / calibrate / convert instead of sparsify")
    ap.add_argument("--out", type=Path, default=Path("pruned-api"))
    args = ap.parse_args(argv)

    model, tokenizer = load_model(args.model)
    calib = calibration_set(args.calib, tokenizer, model, nsamples=args.nsamples, seqlen=args.seqlen, seed=0)

    if args.manual:
        prepared = sp.prepare(model, calib[0], pattern=args.pattern)  # observers inserted as graph nodes
        for ids in calib:
            prepared(ids)                                             # calibration: Gram matrices accumulate
        report = sp.convert(prepared, warm_start="wanda", max_iters=args.iters)  # masks chosen, weights written
    else:
        model, report = sp.sparsify(model, calib, pattern=args.pattern, warm_start="wanda", max_iters=args.iters)

    print(report)  # one row per Linear site: warm-start loss, final loss, relative reduction, swaps
    print(f"mean relative error reduction: {100 * report.mean_relative_reduction:.2f}%")

    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)                          # plain transformers checkpoint, zeros in place
    tokenizer.save_pretrained(args.out)
    save_masks(report.pruned_weights(), args.out / MASKS_FILE)  # bit-packed masks: what export audits
    report.to_json(args.out / "report.json")
    print(f"saved to {args.out}; export with: swappass export {args.out} --out {args.out / 'model.onnx'}")


if __name__ == "__main__":
    main()
