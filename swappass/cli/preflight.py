"""Checks of a prune run before its heavy work: the calibration length against the model's positions, and the
disk space the run's files need.

:func:`check_positions` refuses a ``--seqlen`` beyond a learned position table (GPT-2, OPT, BERT: those inputs
cannot run) and warns beyond rotary positions (they run, out of the trained range). :func:`output_bytes` is the
space the run writes into ``--out``; :func:`model_file_bytes` a lower bound of it known before loading.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ..core.errors import InputError
from ..lm.model_checks import position_limit
from .output_dir import format_bytes

__all__ = ["check_positions", "output_bytes", "model_file_bytes", "SPACE_MARGIN"]

SPACE_MARGIN = 64 << 20  # tokenizer, config, record, calibration tokens and a little room


def check_positions(model: nn.Module, seqlen: int, flag: str = "--seqlen") -> str | None:
    """Raise :class:`InputError` when ``seqlen`` tokens cannot run through ``model`` (a learned position table
    shorter than that); a warning's text when they run beyond the model's positions; None when they fit."""
    limit, learned = position_limit(model)
    if limit is None or seqlen <= limit:
        return None
    if learned:
        raise InputError(
            f"{flag} {seqlen} is above the model's {limit} positions (max_position_embeddings in its config; its "
            f"position table has no row beyond that): use {flag} {limit} or less"
        )
    return (f"{flag} {seqlen} is above the model's max_position_embeddings ({limit}): its rotary positions run, "
            f"but beyond the range it was trained on; {flag} {limit} or less stays in range")


def _unique_tensor_bytes(model: nn.Module) -> int:
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = (t.device, t.data_ptr())
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def output_bytes(model: nn.Module, onnx: bool, refit: bool) -> tuple[int, str]:
    """(bytes the run writes into ``--out``, what they are): the saved model, its masks (a bit per weight),
    the ONNX file (``onnx``), the refitted weights in the checkpoint (``refit``), and :data:`SPACE_MARGIN`."""
    weights = _unique_tensor_bytes(model)
    masks = sum(p.numel() for p in model.parameters() if p.dim() == 2) // 8
    parts = [f"model {format_bytes(weights)}", f"masks {format_bytes(masks)}"]
    need = weights + masks + SPACE_MARGIN
    if onnx:
        need += weights
        parts.append(f"ONNX file {format_bytes(weights)}")
    if refit:
        need += weights
        parts.append(f"refitted weights in the checkpoint {format_bytes(weights)}")
    return need, ", ".join(parts)


def model_file_bytes(spec: str) -> int | None:
    """The size of a local model's weight files (a lower bound of the saved model's size), or None if the model
    is not a local directory or ``.gguf`` file."""
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.stat().st_size
    if path.is_dir():  # a directory may hold both formats: the loader reads one
        return max(sum(p.stat().st_size for p in path.glob(f"*{suffix}") if p.is_file())
                   for suffix in (".safetensors", ".bin"))
    return None
