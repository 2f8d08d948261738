"""Checks of a model's files before loading, the translation of loading failures into :class:`ModelLoadError`
messages that name the file and the fix, and the model's position limit.

* :func:`check_model_dir`: ``config.json`` is JSON with a model type this transformers knows; every
  ``*.safetensors`` file is whole (its header parses and its data reaches the end its header promises).
* :func:`check_gguf_file`: the file starts like a GGUF file and holds more than its fixed header.
* :func:`translated_load_errors`: any other failure while transformers loads a local model becomes one
  :class:`ModelLoadError` (a model that is not a causal LM, e.g. T5, says so).
* :func:`position_limit`: how many positions the model has, and whether they are a learned table (inputs longer
  than that fail: GPT-2, OPT, BERT) or computed (rotary: longer inputs run, out of the trained range).
"""
from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path
from typing import Iterator

from torch import nn

from .errors import ModelLoadError

__all__ = ["check_model_dir", "check_safetensors_file", "check_gguf_file", "translated_load_errors",
           "position_limit", "GGUF_MAGIC"]

GGUF_MAGIC = b"GGUF"
_GGUF_HEADER = 24  # magic, version (u32), tensor count (u64), metadata count (u64)


def check_model_dir(directory: Path) -> None:
    """Raise :class:`ModelLoadError` naming the file if ``directory``'s config or safetensors files are broken."""
    config_path = directory / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"{config_path} is not UTF-8 text ({exc}); restore the model's config.json") from exc
    except ValueError as exc:
        raise ModelLoadError(f"{config_path} is not valid JSON ({exc}); restore the model's config.json (re-download "
                             f"or re-save the model)") from exc
    if not isinstance(config, dict):
        raise ModelLoadError(f"{config_path} holds a JSON {type(config).__name__}, not an object; restore the "
                             f"model's config.json")
    model_type = config.get("model_type")
    if isinstance(model_type, str):
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

        if model_type not in CONFIG_MAPPING_NAMES:
            import transformers

            raise ModelLoadError(
                f"{config_path}: model_type {model_type!r} is not a model type transformers "
                f"{transformers.__version__} knows; check the config, or upgrade transformers if the architecture "
                f"is newer"
            )
    for path in sorted(directory.glob("*.safetensors")):
        check_safetensors_file(path)


def check_safetensors_file(path: Path) -> None:
    """Raise :class:`ModelLoadError` unless the safetensors file's header parses and its data is all there."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > size - 8:
                raise ValueError(f"its header claims {n} bytes, the file has {size}")
            header = json.loads(fh.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ModelLoadError(f"{path} is not a readable safetensors file ({exc}); it is damaged or truncated: "
                             f"re-download or re-save the model") from exc
    if 8 + n + end > size:
        raise ModelLoadError(f"{path} is truncated: it has {size} bytes, its header describes {8 + n + end}; "
                             f"re-download or re-save the model")


def check_gguf_file(path: Path) -> None:
    """Raise :class:`ModelLoadError` unless ``path`` starts with the GGUF magic and holds more than its header."""
    with open(path, "rb") as fh:
        head = fh.read(_GGUF_HEADER + 1)
    if head[:4] != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF file (it does not start with the bytes 'GGUF'); pass a .gguf "
                             f"model file or a Hugging Face model directory")
    if len(head) <= _GGUF_HEADER:
        raise ModelLoadError(f"{path} is truncated ({len(head)} bytes, shorter than a GGUF header); re-download it")


def _not_causal(exc: Exception, spec: str) -> str | None:
    text = str(exc)
    if "Unrecognized configuration class" not in text:
        return None
    config = text.split("<class '")[-1].split("'>")[0].rsplit(".", 1)[-1] if "<class '" in text else "its config"
    return (f"{spec} is not a causal language model ({config}: transformers has no AutoModelForCausalLM class for "
            f"it; e.g. T5 is an encoder-decoder). swappass prune and eval load causal LMs; prune other models "
            f"through the Python API (swappass.sparsify on the loaded model)")


@contextlib.contextmanager
def translated_load_errors(spec: str, what: str = "model") -> Iterator[None]:
    """Within the block, a failure to load the local ``what`` (``model`` / ``tokenizer``) at ``spec`` becomes a
    :class:`ModelLoadError` naming it (out-of-memory and interrupts pass through)."""
    try:
        yield
    except (ModelLoadError, MemoryError):
        raise
    except Exception as exc:
        message = _not_causal(exc, spec)
        if message is None:
            detail = " ".join(str(exc).split())[:400]
            hint = ("the file is damaged or truncated, or transformers cannot load its architecture from GGUF: "
                    "re-download it" if spec.endswith(".gguf") else "check its files (re-download or re-save the model)")
            message = f"could not load the {what} of {spec} ({type(exc).__name__}: {detail}); {hint}"
        raise ModelLoadError(message) from exc


def position_limit(model: nn.Module) -> tuple[int | None, bool]:
    """(the model's ``max_position_embeddings`` or None, whether its positions are a learned table).

    A learned table is an ``nn.Embedding`` other than the token embedding with that many rows (OPT's has 2 more):
    longer inputs index past it and fail. Without one (rotary positions) longer inputs run, beyond the range the
    model was trained on.
    """
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        return None, False
    get = getattr(model, "get_input_embeddings", None)
    try:
        tokens = get() if callable(get) else None
    except (NotImplementedError, AttributeError):
        tokens = None
    learned = any(isinstance(m, nn.Embedding) and m is not tokens and m.num_embeddings in (limit, limit + 2)
                  for m in model.modules())
    return limit, learned
