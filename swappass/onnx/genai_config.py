"""``genai_config.json``: what onnxruntime-genai reads beside a decoder file (``og.Model(directory)``).

The onnxruntime-genai model builder writes its own; for a graph exported by torch.onnx, :func:`decoder_config`
writes the same structure (model type ``decoder``, the input and output names of
:mod:`swappass.onnx.cache_adapter`, ``past_present_share_buffer`` off because ``present`` is a new tensor, the
past with the step appended). Greedy search is the default, as for a Hugging Face ``generate`` call.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from .cache_adapter import PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE, DecoderGeometry

__all__ = ["GENAI_CONFIG", "decoder_config", "write_genai_config", "read_genai_config", "set_decoder_filename"]

GENAI_CONFIG = "genai_config.json"


def _token_id(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple)) and value else value


def decoder_config(geometry: DecoderGeometry, filename: str, token_ids: Mapping[str, Any]) -> dict:
    """The ``genai_config.json`` content for a torch.onnx-exported decoder named ``filename``. ``token_ids``:
    ``bos_token_id``, ``eos_token_id``, ``pad_token_id`` from the model config (None where it has none)."""
    eos = token_ids.get("eos_token_id")
    pad = token_ids.get("pad_token_id")
    context = int(geometry.context_length or 2048)
    return {
        "model": {
            "bos_token_id": _token_id(token_ids.get("bos_token_id")) or 0,
            "eos_token_id": eos if eos is not None else 0,
            "pad_token_id": _token_id(pad if pad is not None else eos) or 0,
            "context_length": context,
            "vocab_size": geometry.vocab_size,
            "type": "decoder",
            "decoder": {
                "filename": filename,
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "head_size": geometry.head_size,
                "hidden_size": geometry.hidden_size,
                "num_attention_heads": geometry.num_attention_heads,
                "num_key_value_heads": geometry.num_kv_heads,
                "num_hidden_layers": geometry.num_layers,
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "position_ids": "position_ids", "past_key_names": PAST_KEY,
                           "past_value_names": PAST_VALUE},
                "outputs": {"logits": "logits", "present_key_names": PRESENT_KEY,
                            "present_value_names": PRESENT_VALUE},
            },
        },
        "search": {"do_sample": False, "num_beams": 1, "num_return_sequences": 1, "max_length": context,
                   "min_length": 0, "past_present_share_buffer": False, "repetition_penalty": 1.0,
                   "temperature": 1.0, "top_k": 1, "top_p": 1.0, "early_stopping": True},
    }


def write_genai_config(config: Mapping, directory: str | Path) -> Path:
    path = Path(directory) / GENAI_CONFIG
    path.write_text(json.dumps(config, indent=4) + "\n")
    return path


def read_genai_config(directory: str | Path) -> dict | None:
    """The ``genai_config.json`` in ``directory``, or None when there is none."""
    path = Path(directory) / GENAI_CONFIG
    return json.loads(path.read_text()) if path.is_file() else None


def set_decoder_filename(config: dict, filename: str) -> dict:
    """Point the config at the decoder file's final name (the builder writes ``model.onnx``)."""
    config["model"]["decoder"]["filename"] = filename
    return config
