"""The ``swappass eval`` job: perplexity of a model on a text, optionally against a dense reference model."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["EvalInputError", "evaluate_to_console"]


class EvalInputError(ValueError):
    """An option, a model or the text cannot be used (exit status 2)."""


def _text_path(text: str) -> Path:
    from . import data

    if text == "wikitext2":
        try:
            return data.wikitext2_path("test")
        except data.DataNotFoundError as exc:
            raise EvalInputError(f"--text wikitext2: {exc}; or pass a text file with --text FILE") from exc
    path = Path(text).expanduser()
    if not path.is_file():
        raise EvalInputError(f"--text {text}: no such file")
    return path


def _load(spec: str, dtype: torch.dtype, device: str, role: str):
    from .models import ModelLoadError, load_model

    print(f"swappass: loading {role} {spec}", file=sys.stderr, flush=True)
    try:
        return load_model(spec, dtype=dtype, device=device)
    except ModelLoadError as exc:
        raise EvalInputError(str(exc)) from exc


def evaluate_to_console(
    model_spec: str,
    *,
    text: str = "wikitext2",
    seqlen: int = 2048,
    max_windows: int | None = None,
    batch_size: int = 1,
    compare: str | None = None,
    device: str = "auto",
    dtype: str = "float32",
    json_path: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate and print; returns the numbers (also written to ``json_path`` if given)."""
    from . import data, evaluate
    from .prune_run import DTYPES, resolve_device

    if seqlen < 2:
        raise EvalInputError(f"--seqlen must be at least 2, got {seqlen}")
    if max_windows is not None and max_windows < 1:
        raise EvalInputError(f"--max-windows must be at least 1, got {max_windows}")
    if batch_size < 1:
        raise EvalInputError(f"--batch-size must be at least 1, got {batch_size}")
    if dtype not in DTYPES:
        raise EvalInputError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    try:
        dev = resolve_device(device)
    except ValueError as exc:
        raise EvalInputError(str(exc)) from exc
    path = _text_path(text)
    model, tokenizer = _load(model_spec, DTYPES[dtype], dev, "model")
    try:
        windows = data.perplexity_windows(tokenizer, path, seqlen=seqlen, max_windows=max_windows)
    except ValueError as exc:
        raise EvalInputError(f"--text {path}: {exc}; use a longer text or a smaller --seqlen") from exc
    where = f"{path.name} ({len(windows)} windows × {seqlen} tokens)"
    result: dict[str, Any] = {
        "model": model_spec, "text": str(path), "seqlen": seqlen, "windows": len(windows), "dtype": dtype,
    }
    if compare is None:
        ppl = evaluate.perplexity(model, windows, batch_size=batch_size, progress=progress)
        result["perplexity"] = ppl
        print(f"{model_spec}: perplexity {ppl:.3f} on {where}")
    else:
        reference, _ = _load(compare, DTYPES[dtype], dev, "reference")
        try:
            cmp = evaluate.compare_models(model, reference, windows, batch_size=batch_size, progress=progress)
        except ValueError as exc:
            raise EvalInputError(f"--compare {compare}: {exc}") from exc
        result.update(
            perplexity=cmp.perplexity, reference=compare, reference_perplexity=cmp.reference_perplexity,
            kl_divergence=cmp.kl, top1_agreement=cmp.top1, tokens=cmp.tokens,
        )
        print(f"{model_spec}: perplexity {cmp.perplexity:.3f} on {where}")
        print(f"{compare} (reference): perplexity {cmp.reference_perplexity:.3f}")
        print(f"KL(reference ‖ model) {cmp.kl:.4f} nats/token; top-1 agreement {100 * cmp.top1:.2f}% "
              f"over {cmp.tokens} next-token positions")
    if json_path is not None:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result
