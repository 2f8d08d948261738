"""What ``swappass prune`` feeds a model: calibration items built from token windows, per kind of model.

The command line calibrates from text (:mod:`swappass.lm.calibration` gives ``(1, seqlen)`` token windows), so it
builds inputs for the models that read tokens:

* ``decoder`` (causal LMs: Llama, GPT-2, Mixtral …) and ``encoder`` (BERT, RoBERTa, DeBERTa …): the window as
  ``input_ids``;
* ``encoder-decoder`` (T5, BART …): ``input_ids`` and ``decoder_input_ids``, the same window shifted right by
  the decoder start token (teacher forcing on the calibration text, as the model's own
  ``prepare_decoder_input_ids_from_labels`` does), so that the encoder, the decoder and the cross-attention all
  see calibration data;
* ``vision-language`` (Gemma3, LLaVA, Qwen2-VL …): the window as ``input_ids``, text only: the language model's
  sites (the default targets) are calibrated; the vision tower and projector do not run.

It does not build inputs for ``speech`` models (Whisper: ``input_features``) or ``vision`` models (ViT:
``pixel_values``), nor images for a vision-language model's vision tower: those are pruned from Python, with
``swappass.sparsify(model, [{"pixel_values": …}, …])`` (dicts of tensors are calibration items there).
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.errors import InputError

__all__ = ["MODEL_KINDS", "TEXT_KINDS", "model_kind", "check_text_model", "calibration_items", "decoder_inputs"]

MODEL_KINDS = ("decoder", "encoder", "encoder-decoder", "vision-language", "speech", "vision")
TEXT_KINDS = ("decoder", "encoder", "encoder-decoder", "vision-language")
_NOT_BUILT = {
    "speech": "reads audio features (input_features)",
    "vision": "reads images (pixel_values)",
}


def model_kind(model: nn.Module) -> str:
    """One of :data:`MODEL_KINDS`, from the model's main input and config."""
    config = getattr(model, "config", None)
    main = getattr(model, "main_input_name", "input_ids")
    if getattr(config, "vision_config", None) is not None and main == "input_ids":
        return "vision-language"
    if main in ("input_features", "input_values"):
        return "speech"
    if main == "pixel_values":
        return "vision"
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    name = type(model).__name__
    if name.endswith(("ForCausalLM", "LMHeadModel")) or getattr(config, "is_decoder", False):
        return "decoder"
    return "encoder"


def check_text_model(model: nn.Module, tokenizer, model_spec: str, calib: str) -> str:
    """The model's kind, if the command line can calibrate it from ``calib``; else :class:`InputError` saying
    what it cannot build and what to do."""
    kind = model_kind(model)
    name = type(model).__name__
    if kind not in TEXT_KINDS:
        raise InputError(
            f"{model_spec}: {name} is a {kind} model that {_NOT_BUILT[kind]}; swappass prune builds calibration "
            f"inputs from text only (for {', '.join(TEXT_KINDS)} models). Prune it from Python: "
            f"swappass.sparsify(model, [{{'{model.main_input_name}': …}}, …]) takes dicts of tensors"
        )
    if calib == "self" and kind not in ("decoder", "vision-language"):
        raise InputError(f"--calib self samples text from a causal LM; {name} is an {kind} model: pass a text file "
                         f"(--calib FILE.txt) or --calib wikitext2")
    if tokenizer is None:
        raise InputError(f"{model_spec} holds no tokenizer, which swappass prune needs to calibrate from text; add "
                         f"the tokenizer files of the model to the directory")
    return kind


def decoder_inputs(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """``ids`` shifted right by the decoder start token (the teacher-forcing decoder input for the text ``ids``)."""
    prepare = getattr(model, "prepare_decoder_input_ids_from_labels", None)
    if callable(prepare):
        try:
            return prepare(labels=ids)
        except (TypeError, ValueError, AttributeError):
            pass
    config = model.config
    start = getattr(config, "decoder_start_token_id", None)
    if start is None:
        start = getattr(config, "bos_token_id", None) or 0
    return torch.cat([torch.full_like(ids[:, :1], int(start)), ids[:, :-1]], dim=1)


def calibration_items(model: nn.Module, windows: list[torch.Tensor], kind: str) -> list:
    """The model inputs for ``windows`` (``(1, seqlen)`` token ids): the windows themselves, or for an
    encoder-decoder ``{"input_ids", "decoder_input_ids"}`` dicts."""
    if kind != "encoder-decoder":
        return list(windows)
    return [{"input_ids": w, "decoder_input_ids": decoder_inputs(model, w)} for w in windows]
