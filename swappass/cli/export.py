"""The export job: a pruned model directory (``save_pretrained`` + ``swappass_masks.safetensors``) to ONNX.

``swappass export DIR`` and ``swappass prune … --onnx`` export such a directory with :func:`export_pruned_dir`;
:func:`load_pruned_dir` and :func:`example_inputs_for` are the pieces it is made of.
"""
from __future__ import annotations

import inspect
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.masks import MASKS_FILE, load_masks
from ..lm.errors import LMInputError
from ..lm.models import load_pretrained, load_tokenizer
from ..onnx.adapter import ExportError
from ..onnx.export import export_onnx
from ..onnx.genai_builder import BuilderRun, directory_refusal
from ..onnx.progress import StageLog
from ..onnx.report import ExportReport
from .inputs import decoder_inputs

__all__ = ["load_pruned_dir", "example_inputs_for", "export_pruned_dir", "start_builder_early"]


def load_pruned_dir(model_dir: str | Path, dtype: torch.dtype = torch.float32):
    """``(model, tokenizer or None, masks dict or None)`` from a ``save_pretrained`` directory holding
    ``swappass_masks.safetensors``. The model class is the one named in ``config.json`` (``architectures``), and
    its weights must fit it (:func:`swappass.lm.models.load_pretrained`)."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        what = "does not exist" if not model_dir.exists() else "holds no config.json (not a save_pretrained directory)"
        raise ExportError(f"model directory {model_dir} {what}")
    try:
        model = load_pretrained(str(model_dir), dtype).eval()
    except LMInputError as exc:
        raise ExportError(str(exc)) from exc
    try:
        tokenizer = load_tokenizer(str(model_dir))
    except Exception:  # unreadable tokenizer files: random token ids are used for verification
        tokenizer = None
    masks_path = model_dir / MASKS_FILE
    masks = load_masks(masks_path) if masks_path.is_file() else None
    return model, tokenizer, masks


_SAMPLE_TEXT = (
    "The tower is 324 metres tall, about the same height as an 81-storey building, and the tallest structure in "
    "Paris. Its base is square, measuring 125 metres on each side. During its construction, the Eiffel Tower "
    "surpassed the Washington Monument to become the tallest man-made structure in the world."
)


def example_inputs_for(model: nn.Module, tokenizer=None, batch: int = 2, seq_len: int = 16,
                       seed: int = 0) -> dict[str, torch.Tensor]:
    """Token inputs ``(batch, seq_len)`` for a Hugging Face model: real text through ``tokenizer`` when given,
    else seeded random ids; ``attention_mask`` of ones, ``token_type_ids`` of zeros when forward() takes it, and
    ``decoder_input_ids`` (the ids shifted right) for an encoder-decoder."""
    if batch < 1 or seq_len < 1:
        raise ValueError(f"batch and seq_len must be ≥ 1, got {batch} and {seq_len}")
    config = getattr(model, "config", None)
    vocab = getattr(config, "vocab_size", None)
    if tokenizer is not None:
        ids = tokenizer(_SAMPLE_TEXT, add_special_tokens=False)["input_ids"]
        need = batch * seq_len
        ids = (ids * (need // max(len(ids), 1) + 1))[:need]
        input_ids = torch.tensor(ids, dtype=torch.long).view(batch, seq_len)
        if vocab:
            input_ids = input_ids.clamp_max(vocab - 1)
    else:
        if not vocab:
            raise ExportError("the model config has no vocab_size and no tokenizer was given: pass example inputs")
        input_ids = torch.randint(0, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(seed))
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        inputs["token_type_ids"] = torch.zeros_like(input_ids)
    if getattr(config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = decoder_inputs(model, input_ids)
    return inputs


def start_builder_early(model_dir: Path, out: Path, dtype: torch.dtype, export_kwargs: dict[str, Any]
                        ) -> BuilderRun | None:
    """The onnxruntime-genai builder started on ``model_dir`` now, into a temporary directory beside ``out``,
    when the export will most likely use it (judged from ``config.json``: :func:`directory_refusal`); else None.
    The export decides again on the loaded model and stops the builder if it is not used."""
    if export_kwargs.get("kv_cache") is False or export_kwargs.get("exporter", "auto") == "torch":
        return None
    opset = export_kwargs.get("opset")
    if not isinstance(opset, (int, type(None))) or directory_refusal(model_dir, dtype, opset) is not None:
        return None
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".build", dir=out.parent))
    except OSError:  # the export itself reports an unwritable or missing output directory
        return None
    return BuilderRun(model_dir, work)


def export_pruned_dir(model_dir: str | Path, out: str | Path, *, batch: int = 2, seq_len: int = 16,
                      dtype: torch.dtype = torch.float32, progress: bool = True, **export_kwargs: Any) -> ExportReport:
    """Export a pruned model directory (``save_pretrained`` + ``swappass_masks.safetensors``) to ONNX at ``out``
    and verify it; what ``swappass export`` and ``swappass prune --onnx`` run. A causal LM becomes a KV-cache
    decoder with ``genai_config.json`` and the tokenizer beside ``out`` (the builder reads ``model_dir`` itself).
    ``progress``: each stage and its time on stderr. Keyword arguments go to :func:`export_onnx`."""
    log = StageLog(progress)
    early = start_builder_early(Path(model_dir), Path(out), dtype, export_kwargs)
    try:
        with log.stage("load", str(model_dir) + (" (the onnxruntime-genai builder runs meanwhile)" if early else "")):
            model, tokenizer, masks = load_pruned_dir(model_dir, dtype)
        notes = []
        if masks is None:
            notes.append(f"{Path(model_dir) / MASKS_FILE} not found: exported without a sparsity audit")
        example = example_inputs_for(model, tokenizer, batch=batch, seq_len=seq_len)
        verbose = export_kwargs.pop("verbose", True)
        report = export_onnx(model, example, out, masks=masks, verbose=False, progress=progress,
                             source_dir=Path(model_dir), tokenizer=tokenizer, builder_run=early, **export_kwargs)
    finally:
        if early is not None:
            early.cancel()  # stops it if the export failed before using it; removes what is left of its output
    report.stage_seconds = {**log.seconds, **report.stage_seconds}
    report.notes.extend(notes)
    if verbose:
        print(report)
    return report
