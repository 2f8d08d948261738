"""The ``swappass generate`` job: greedy generation with an exported decoder, streaming the text.

Two runtimes run the same directory (``model.onnx`` + ``genai_config.json`` + tokenizer files, as ``swappass
export`` writes it): onnxruntime-genai's own loop (``og.Model``, its tokenizer and search; the ``genai`` extra)
and swappass's onnxruntime loop (:class:`~swappass.onnx.generation.DecoderSession` with the Hugging Face tokenizer),
which also runs a graph without a KV cache (re-running the whole sequence per token). Both report the prefill
(the prompt, up to the first new token) and the decode speed separately.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import InputError

__all__ = ["GenerationStats", "resolve_model", "generate_genai", "generate_onnxruntime"]


@dataclass
class GenerationStats:
    """What one generation cost: prompt and new token counts, prefill and decode seconds."""

    runtime: str
    prompt_tokens: int
    new_tokens: int
    prefill_seconds: float
    decode_seconds: float
    kv_cache: bool = True

    def __str__(self) -> str:
        prefill = self.prompt_tokens / self.prefill_seconds if self.prefill_seconds else 0.0
        steps = max(self.new_tokens - 1, 0)
        decode = steps / self.decode_seconds if self.decode_seconds else 0.0
        cache = "" if self.kv_cache else " (no KV cache: every token re-runs the whole sequence)"
        return (f"{self.runtime}{cache}: prefill {self.prompt_tokens} tokens in {self.prefill_seconds:.3f} s "
                f"({prefill:.1f} tokens/s); decode {steps} tokens in {self.decode_seconds:.3f} s ({decode:.1f} tokens/s)")


def resolve_model(path: Path) -> tuple[Path, Path]:
    """(directory, .onnx file) from a directory (its ``genai_config.json`` names the file, else ``model.onnx``)
    or a file."""
    from ..onnx.genai_config import read_genai_config

    if path.is_file():
        return path.parent, path
    if not path.is_dir():
        raise InputError(f"{path} does not exist")
    config = read_genai_config(path)
    name = config["model"]["decoder"]["filename"] if config else "model.onnx"
    if not (path / name).is_file():
        raise InputError(f"{path} holds no {name}: export the model first (swappass export DIR --out {path / name})")
    return path, path / name


def _emit(text: str, stream) -> None:
    stream = stream or sys.stdout
    stream.write(text)
    stream.flush()


def generate_genai(directory: Path, prompt: str, tokens: int, ignore_eos: bool, stream=None
                   ) -> GenerationStats:
    """onnxruntime-genai: ``og.Model(directory)``, its tokenizer, greedy search; the text streamed to ``stream``."""
    import onnxruntime_genai as og

    from ..onnx.genai_builder import genai_version

    try:
        model = og.Model(str(directory))
        tokenizer = og.Tokenizer(model)
    except Exception as exc:
        raise InputError(f"onnxruntime-genai cannot load {directory}: {str(exc)[:300]}") from exc
    ids = np.asarray(tokenizer.encode(prompt), dtype=np.int32)
    params = og.GeneratorParams(model)
    search = {"do_sample": False, "max_length": len(ids) + tokens}
    if ignore_eos:
        search["min_length"] = len(ids) + tokens
    params.set_search_options(**search)
    generator = og.Generator(model, params)
    text = tokenizer.create_stream()
    _emit(prompt, stream)
    t0 = time.perf_counter()
    generator.append_tokens(ids[None])
    prefill = time.perf_counter() - t0
    t0, count = time.perf_counter(), 0
    while not generator.is_done() and count < tokens:
        generator.generate_next_token()
        count += 1
        _emit(text.decode(int(generator.get_next_tokens()[0])), stream)
    decode = time.perf_counter() - t0
    _emit("\n", stream)
    return GenerationStats(f"onnxruntime-genai {genai_version()}", len(ids), count, prefill, decode)


def generate_onnxruntime(file: Path, directory: Path, prompt: str, tokens: int, ignore_eos: bool,
                         threads: int | None, stream=None) -> GenerationStats:
    """swappass's onnxruntime loop with the Hugging Face tokenizer of ``directory``; text streamed to ``stream``."""
    import onnxruntime

    from ..onnx.generation import DecoderSession

    tokenizer = _hf_tokenizer(directory)
    ids = np.asarray(tokenizer(prompt)["input_ids"], dtype=np.int64)[None]
    session = DecoderSession(file, threads=threads)
    eos = None if ignore_eos else tokenizer.eos_token_id
    new: list[int] = []
    shown = ""

    def on_token(token: np.ndarray) -> None:
        # what Hugging Face's TextStreamer does: show the text up to its last space, which no later token changes
        # (a multi-byte character completes only with its last token)
        nonlocal shown
        new.append(int(token[0]))
        text = tokenizer.decode(new, skip_special_tokens=True)
        stable = text[: text.rfind(" ") + 1]
        if len(stable) > len(shown) and stable.startswith(shown):
            _emit(stable[len(shown):], stream)
            shown = stable

    _emit(prompt, stream)
    result = session.greedy(ids, tokens, eos_token_id=eos, on_token=on_token)
    final = tokenizer.decode(new, skip_special_tokens=True)
    _emit((final[len(shown):] if final.startswith(shown) else final) + "\n", stream)
    return GenerationStats(f"onnxruntime {onnxruntime.__version__}", ids.shape[1], result.tokens.shape[1],
                           result.prefill_seconds, result.decode_seconds, session.has_cache)


def _hf_tokenizer(directory: Path) -> Any:
    import transformers

    try:
        return transformers.AutoTokenizer.from_pretrained(str(directory))
    except Exception as exc:
        raise InputError(f"{directory} holds no tokenizer that transformers can load ({str(exc)[:200]}); "
                         "export with `swappass export`, which writes it beside the model") from exc
