"""A Hugging Face causal LM as a decoder step with a KV cache: the graph inputs and outputs, and the module that
``torch.export`` captures.

The layout is onnxruntime-genai's (and Optimum's): inputs ``input_ids`` and ``attention_mask`` (int64,
``[batch_size, sequence_length]`` and ``[batch_size, total_sequence_length]``), ``position_ids``
(``[batch_size, sequence_length]``) and per layer ``past_key_values.N.key`` / ``.value``
(``[batch_size, kv_heads, past_sequence_length, head_size]``); outputs ``logits``
(``[batch_size, sequence_length, vocab]``) and ``present.N.key`` / ``.value`` (the past with this step appended,
``total_sequence_length`` long). A prefill is the same graph with an empty past.

The helpers hide what changed across transformers releases: the cache argument is ``cache`` from 5.2x and
``past_key_values`` before, the output field likewise, and a cache's tensors are read per layer
(``cache.layers[i].keys``) or from the older ``key_cache`` / ``value_cache`` lists.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .adapter import ExportError, is_hf_model

__all__ = [
    "PAST_KEY", "PAST_VALUE", "PRESENT_KEY", "PRESENT_VALUE", "DecoderGeometry", "is_causal_lm", "cache_kwarg",
    "returned_cache", "cache_pairs", "make_cache", "probe_geometry", "CacheDecoderAdapter", "AXIS_NAMES",
]

PAST_KEY, PAST_VALUE = "past_key_values.%d.key", "past_key_values.%d.value"
PRESENT_KEY, PRESENT_VALUE = "present.%d.key", "present.%d.value"
AXIS_NAMES = ("batch_size", "sequence_length", "past_sequence_length", "total_sequence_length")


@dataclass(frozen=True)
class DecoderGeometry:
    """What the KV cache of a decoder looks like: ``num_layers`` layers of ``[batch, num_kv_heads, length,
    head_size]`` keys and values; the config's attention heads, hidden size, vocabulary and context length."""

    num_layers: int
    num_kv_heads: int
    head_size: int
    num_attention_heads: int
    hidden_size: int
    vocab_size: int
    context_length: int | None

    def past_names(self) -> list[str]:
        """``past_key_values.0.key``, ``past_key_values.0.value``, ``past_key_values.1.key``, …"""
        return [n % i for i in range(self.num_layers) for n in (PAST_KEY, PAST_VALUE)]

    def present_names(self) -> list[str]:
        return [n % i for i in range(self.num_layers) for n in (PRESENT_KEY, PRESENT_VALUE)]

    def empty_past(self, batch: int, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
        """Zero-length past tensors (the prefill's cache)."""
        return [torch.zeros(batch, self.num_kv_heads, 0, self.head_size, dtype=dtype)
                for _ in range(2 * self.num_layers)]


def is_causal_lm(model: nn.Module) -> bool:
    """A Hugging Face decoder-only model with a generation head (GPT-2, LLaMA, OPT, Qwen…), not BERT or T5."""
    if not is_hf_model(model):
        return False
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        return False
    can_generate = getattr(model, "can_generate", None)
    return bool(can_generate()) if callable(can_generate) else False


def cache_kwarg(model: nn.Module) -> str:
    """The keyword that passes a cache to ``model.forward``: ``cache`` (transformers ≥ 5.2x) or ``past_key_values``."""
    params = inspect.signature(model.forward).parameters
    if "cache" in params:
        return "cache"
    if "past_key_values" in params:
        return "past_key_values"
    raise ExportError(f"{type(model).__name__}.forward takes no cache argument (neither cache nor past_key_values): "
                      "it cannot be exported with a KV cache; use kv_cache=False")


def returned_cache(output: Any) -> Any:
    """The cache a forward pass returned (``output.cache`` or ``output.past_key_values``)."""
    for field in ("cache", "past_key_values"):
        value = getattr(output, field, None)
        if value is not None:
            return value
    raise ExportError("the model returned no cache with use_cache=True; it cannot be exported with a KV cache")


def cache_pairs(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``[(keys, values)]`` per layer, ``[batch, kv_heads, length, head_size]`` each."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache))
    return [(k, v) for k, v, *_ in cache]  # the legacy tuple of tuples


def make_cache(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    """A ``DynamicCache`` holding ``pairs`` (full-attention layers)."""
    from transformers import DynamicCache

    try:
        return DynamicCache(ddp_cache_data=pairs)
    except TypeError:  # transformers before the ddp_cache_data argument
        return DynamicCache.from_legacy_cache(tuple(pairs))


def probe_geometry(model: nn.Module) -> DecoderGeometry:
    """The cache geometry, measured by one forward pass over two tokens (every layer must hold a full-attention
    cache of the same shape: a sliding-window or hybrid cache is refused with a message)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    layer_types = set(getattr(config, "layer_types", None) or [])
    if layer_types - {"full_attention"}:
        raise ExportError(f"the model mixes attention layer types {sorted(layer_types)}: the KV-cache export supports "
                          "full attention in every layer; use kv_cache=False")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    ids = torch.zeros(1, 2, dtype=torch.long, device=device)
    with torch.no_grad():
        pairs = cache_pairs(returned_cache(model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)))
    shapes = {(tuple(k.shape), tuple(v.shape)) for k, v in pairs}
    if len(shapes) != 1 or next(iter(shapes))[0] != next(iter(shapes))[1]:
        raise ExportError(f"the layers' caches differ in shape ({sorted(shapes)}): not supported by the KV-cache "
                          "export; use kv_cache=False")
    _, kv_heads, length, head_size = next(iter(shapes))[0]
    if length != 2:
        raise ExportError(f"the cache holds {length} positions after 2 tokens (a sliding or compressed cache?): not "
                          "supported by the KV-cache export; use kv_cache=False")
    heads = getattr(config, "num_attention_heads", None) or kv_heads
    return DecoderGeometry(
        num_layers=len(pairs), num_kv_heads=int(kv_heads), head_size=int(head_size), num_attention_heads=int(heads),
        hidden_size=int(getattr(config, "hidden_size", heads * head_size)), vocab_size=int(config.vocab_size),
        context_length=getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None),
    )


class CacheDecoderAdapter(nn.Module):
    """``forward(input_ids, attention_mask, position_ids, *past) -> (logits, *present)`` for ``torch.export``;
    ``past`` and ``present`` interleave keys and values per layer (the order of :meth:`DecoderGeometry.past_names`)."""

    def __init__(self, model: nn.Module, geometry: DecoderGeometry) -> None:
        super().__init__()
        self.model = model
        self.geometry = geometry
        self.cache_kwarg = cache_kwarg(model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cache = make_cache([(past[2 * i], past[2 * i + 1]) for i in range(self.geometry.num_layers)])
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=True, **{self.cache_kwarg: cache})
        present = [t for pair in cache_pairs(returned_cache(out)) for t in pair]
        return (out.logits, *present)
