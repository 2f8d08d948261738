"""Calibration sets for the command line: token windows from a text, a hub dataset, or the model itself.

:func:`calibration_set` reads a source spec:

* ``wikitext2``: WikiText-2 validation from the shared data directory (:func:`swappass.lm.data.wikitext2_path`);
* a path to a UTF-8 text file;
* ``self``: data-free calibration: sequences sampled from the dense model itself
  (:func:`swappass.lm.sampling.sample_sequences`);
* ``hf:NAME[:CONFIG[:SPLIT]]``: a Hugging Face dataset (``text`` column; needs the ``datasets`` package and
  network access), e.g. ``hf:wikitext:wikitext-2-raw-v1:train``.

Texts are cut like Wanda's loaders (:func:`swappass.lm.data.calibration_windows`): ``nsamples`` windows of
``seqlen`` tokens at seeded random positions of the tokenized text. Every window is ``(1, seqlen)`` token ids.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from . import data, models
from .errors import CalibrationError, CalibrationTextWarning
from .sampling import sample_sequences

__all__ = ["CalibrationError", "calibration_set", "sample_sequences", "describe_source", "HF_PREFIX"]

HF_PREFIX = "hf:"
_HF_MAX_CHARS_PER_TOKEN = 12  # text gathered from a streamed dataset: enough characters for the windows


def describe_source(spec: str) -> str:
    """A short human description of a calibration spec (for reports)."""
    if spec == "self":
        return "sequences sampled from the dense model (data-free)"
    if spec == "wikitext2":
        return "WikiText-2 validation"
    if spec.startswith(HF_PREFIX):
        return f"Hugging Face dataset {spec[len(HF_PREFIX):]}"
    return f"text file {spec}"


def calibration_set(
    spec: str,
    tokenizer,
    model: nn.Module | None = None,
    *,
    nsamples: int = 128,
    seqlen: int = 2048,
    seed: int = 0,
    sample_precision: str = "auto",
    progress: bool = True,
) -> list[torch.Tensor]:
    """``nsamples`` token windows ``(1, seqlen)`` from the source ``spec`` (see the module docstring);
    ``sample_precision`` is the Linear matmuls' precision while ``self`` samples
    (:mod:`swappass.lm.matmul_precision`)."""
    if isinstance(nsamples, bool) or not isinstance(nsamples, int) or nsamples < 1:
        raise CalibrationError(f"the number of calibration samples must be at least 1, got {nsamples}")
    if isinstance(seqlen, bool) or not isinstance(seqlen, int) or seqlen < 2:
        raise CalibrationError(f"the calibration sequence length must be at least 2 tokens, got {seqlen}")
    if spec == "self":
        if model is None:
            raise CalibrationError("calibration 'self' samples from the model: pass the model")
        return sample_sequences(model, tokenizer, nsamples=nsamples, seqlen=seqlen, seed=seed,
                                matmul_precision=sample_precision, progress=progress)
    if spec.startswith(HF_PREFIX):
        text, where = _hub_text(spec, nsamples * seqlen * _HF_MAX_CHARS_PER_TOKEN), spec
    else:
        try:
            path = data.wikitext2_path("valid") if spec == "wikitext2" else Path(spec).expanduser()
            text = data.read_text(path)
        except data.DataNotFoundError as exc:
            raise CalibrationError(
                f"calibration text not found: {exc}. Pass a text file (--calib FILE.txt), --calib self (data-free: "
                f"samples from the model) or a hub dataset (--calib hf:NAME[:CONFIG[:SPLIT]])"
            ) from exc
        except UnicodeDecodeError as exc:
            raise CalibrationError(f"calibration file {spec} is not UTF-8 text ({exc})") from exc
        where = str(path)
    ids = data.tokenize(tokenizer, text)
    n = ids.shape[1]
    if n <= seqlen + 1:
        shorter = f" or --seqlen {n - 2} or less" if n - 2 >= 2 else ""  # a window needs seqlen + 2 tokens
        raise CalibrationError(
            f"the calibration text {where} has {n} tokens, too few for one window of {seqlen} tokens; use a longer "
            f"text{shorter}"
        )
    _warn_if_one_token(ids, where, tokenizer)
    return data.calibration_windows(tokenizer, text=text, nsamples=nsamples, seqlen=seqlen, seed=seed)


def _warn_if_one_token(ids: torch.Tensor, where: str, tokenizer) -> None:
    """A :class:`CalibrationTextWarning` when the whole text is one token id repeated."""
    first = int(ids[0, 0])
    if bool((ids == first).all()):
        try:
            shown = f" {tokenizer.decode([first])!r}"
        except Exception:  # a tokenizer that cannot decode one id: the id says enough
            shown = ""
        warnings.warn(
            f"the calibration text {where} tokenizes to one token repeated (id {first}{shown}): every window is the "
            f"same token, so the inputs of the first layers are the same vector on every token; use real text",
            CalibrationTextWarning, stacklevel=3,
        )


def _hub_text(spec: str, max_chars: int) -> str:
    """The ``text`` rows of a hub dataset, joined with blank lines, up to about ``max_chars`` characters."""
    parts = spec[len(HF_PREFIX):].split(":")
    if not parts[0] or len(parts) > 3:
        raise CalibrationError(f"hub dataset spec {spec!r} is malformed; write hf:NAME[:CONFIG[:SPLIT]]")
    name, config, split = parts[0], (parts[1] if len(parts) > 1 and parts[1] else None), \
        (parts[2] if len(parts) > 2 and parts[2] else "train")
    try:
        import datasets
    except ImportError as exc:
        raise CalibrationError(
            f"calibration from the hub dataset {name!r} needs the `datasets` package (pip install datasets) and "
            f"network access; or pass a local text file (--calib FILE.txt) or --calib self"
        ) from exc
    if not models.hub_reachable():
        raise CalibrationError(
            f"the Hugging Face hub is unreachable, so dataset {name!r} cannot be streamed; pass a local text file "
            f"(--calib FILE.txt) or --calib self"
        )
    try:
        rows = datasets.load_dataset(name, config, split=split, streaming=True)
        texts, size = [], 0
        for row in rows:
            value = row.get("text") if isinstance(row, dict) else None
            if not isinstance(value, str):
                raise CalibrationError(f"dataset {name!r} ({split}) has no string column 'text'")
            if value.strip():
                texts.append(value)
                size += len(value)
            if size >= max_chars:
                break
    except CalibrationError:
        raise
    except Exception as exc:
        raise CalibrationError(f"could not load dataset {spec!r}: {type(exc).__name__}: {str(exc)[:300]}") from exc
    if not texts:
        raise CalibrationError(f"dataset {spec!r} gave no text")
    return "\n\n".join(texts)
