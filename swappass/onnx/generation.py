"""Greedy generation with an exported decoder in onnxruntime, with or without a KV cache.

:class:`DecoderSession` wraps an ``onnxruntime.InferenceSession`` of either layout: the KV-cache decoder
(``past_key_values.N.key/value`` in, ``present.N.key/value`` out; :mod:`swappass.onnx.cache_adapter`), fed one
new token per step after the prefill, or the graph without a cache (``input_ids``/``attention_mask`` to
``logits``), which re-runs the whole sequence for every token. It knows no tokenizer: token ids in, token ids out
(``swappass generate`` streams text on top of it). Timings split the prefill (the prompt, up to the first new
token) from the decode steps.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .genai_config import read_genai_config

__all__ = ["GenerationResult", "DecoderSession"]

_PAST = "past_key_values."


@dataclass
class GenerationResult:
    """What :meth:`DecoderSession.greedy` produced. ``tokens``: ``(batch, n)`` new ids; ``step_logits``: the
    ``(batch, vocab)`` logits each token was chosen from (when asked to keep them)."""

    tokens: np.ndarray
    prompt_length: int
    prefill_seconds: float
    decode_seconds: float
    step_logits: list[np.ndarray] = field(default_factory=list)

    @property
    def prefill_tokens_per_second(self) -> float:
        """Prompt tokens (times the batch) per second of the prefill step."""
        return self.tokens.shape[0] * self.prompt_length / self.prefill_seconds if self.prefill_seconds else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        """New tokens after the first (times the batch) per second of the decode steps."""
        steps = self.tokens.shape[1] - 1
        return self.tokens.shape[0] * steps / self.decode_seconds if self.decode_seconds and steps > 0 else 0.0


class DecoderSession:
    """An onnxruntime session of an exported decoder (KV-cache or full-sequence layout)."""

    def __init__(self, path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",),
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.path), options, providers=list(providers))
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.input_names = list(inputs)
        self.past_names = [n for n in self.input_names if n.startswith(_PAST)]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.has_position_ids = "position_ids" in inputs
        self.mask_dtype = np.int32 if "attention_mask" in inputs and inputs["attention_mask"].type == "tensor(int32)" \
            else np.int64
        self._kv_shape = self._cache_dims(inputs) if self.past_names else None
        kinds = {"tensor(float16)": np.float16, "tensor(double)": np.float64}
        self.past_dtype = kinds.get(inputs[self.past_names[0]].type, np.float32) if self.past_names else np.float32

    @property
    def has_cache(self) -> bool:
        return bool(self.past_names)

    def _cache_dims(self, inputs) -> tuple[int, int]:
        """(kv heads, head size) of the past inputs: from the graph, else from ``genai_config.json`` beside it."""
        shape = inputs[self.past_names[0]].shape
        heads, size = shape[1], shape[3]
        if not (isinstance(heads, int) and isinstance(size, int)):
            decoder = (read_genai_config(self.path.parent) or {}).get("model", {}).get("decoder", {})
            heads = heads if isinstance(heads, int) else decoder.get("num_key_value_heads")
            size = size if isinstance(size, int) else decoder.get("head_size")
        if not (isinstance(heads, int) and isinstance(size, int)):
            raise ValueError(f"{self.path}: the past inputs' head count and size are symbolic and no genai_config.json "
                             "beside the file gives them")
        return heads, size

    def _feeds(self, ids: np.ndarray, past_length: int) -> dict[str, np.ndarray]:
        """The step's token inputs (the past is bound separately)."""
        batch, seq = ids.shape
        feeds = {"input_ids": ids.astype(np.int64)}
        if "attention_mask" in self.input_names:
            feeds["attention_mask"] = np.ones((batch, past_length + seq), dtype=self.mask_dtype)
        if self.has_position_ids:
            feeds["position_ids"] = np.broadcast_to(np.arange(past_length, past_length + seq, dtype=np.int64),
                                                    (batch, seq)).copy()
        for name in self.input_names:
            if name == "token_type_ids":
                feeds[name] = np.zeros_like(feeds["input_ids"])
        return feeds

    def greedy(self, input_ids: np.ndarray, max_new_tokens: int, eos_token_id: int | Sequence[int] | None = None,
               on_token: Callable[[np.ndarray], None] | None = None, keep_logits: bool = False) -> GenerationResult:
        """Generate up to ``max_new_tokens`` ids after ``input_ids`` (``(batch, prompt)`` int64) by argmax;
        stops early when every row produced ``eos_token_id``. ``on_token(ids)`` gets each step's ``(batch,)`` ids."""
        ids = np.asarray(input_ids, dtype=np.int64)
        batch, prompt = ids.shape
        eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or ())
        past = self._empty_past(batch)
        new, logits_kept, done = [], [], np.zeros(batch, dtype=bool)
        t0 = time.perf_counter()
        prefill = 0.0
        current, past_length = ids, 0
        for step in range(max_new_tokens):
            outputs = self._run(self._feeds(current, past_length), past)
            logits = outputs["logits"][:, -1].astype(np.float32)
            token = logits.argmax(-1).astype(np.int64)
            if step == 0:
                prefill = time.perf_counter() - t0
                t0 = time.perf_counter()
            new.append(token)
            if keep_logits:
                logits_kept.append(logits)
            if on_token is not None:
                on_token(token)
            done |= np.isin(token, list(eos)) if eos else False
            if done.all():
                break
            if self.has_cache:
                past = {n: outputs[n.replace(_PAST, "present.")] for n in self.past_names}  # stays in onnxruntime
                past_length += current.shape[1]
                current = token[:, None]
            else:
                current = np.concatenate([current, token[:, None]], axis=1)
        decode = time.perf_counter() - t0 if len(new) > 1 else 0.0
        return GenerationResult(np.stack(new, axis=1), prompt, prefill, decode, logits_kept)

    def _run(self, feeds: dict[str, np.ndarray], past: dict) -> dict:
        """One step through an IO binding: the past goes in as the previous step's ``OrtValue``s and ``present``
        comes back as ``OrtValue``s (no copy through numpy); ``logits`` is returned as a numpy array."""
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        for name, value in past.items():
            binding.bind_ortvalue_input(name, value)
        for name in self.output_names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        outputs = dict(zip(self.output_names, binding.get_outputs()))
        outputs["logits"] = outputs["logits"].numpy()
        return outputs

    def _empty_past(self, batch: int) -> dict:
        import onnxruntime as ort

        if not self.has_cache:
            return {}
        heads, size = self._kv_shape
        return {n: ort.OrtValue.ortvalue_from_numpy(np.zeros((batch, heads, 0, size), dtype=self.past_dtype))
                for n in self.past_names}
