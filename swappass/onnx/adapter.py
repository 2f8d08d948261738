"""How a model is called for export: named example inputs, dynamic axes, and tensor outputs.

:class:`ExportAdapter` wraps the user's model so that ``torch.export`` sees positional tensor inputs (named for
the ONNX graph) and a tuple of tensor outputs. Hugging Face models are called with ``use_cache=False`` and
export ``logits`` (language models) or else ``last_hidden_state``; other models export their tensor, tuple or
dict outputs.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..core.errors import InputError

__all__ = [
    "ExportError",
    "ExportAdapter",
    "ExampleInputs",
    "named_inputs",
    "dynamic_axes",
    "widen_unit_axes",
    "call_model",
    "pick_outputs",
    "output_tensors",
    "is_hf_model",
    "hf_call_kwargs",
    "max_positions",
    "max_sizes",
    "exportable_experts",
    "eager_attention",
]

ExampleInputs = Any  # torch.Tensor | tuple[torch.Tensor, ...] | Mapping[str, torch.Tensor] (e.g. BatchEncoding)


class ExportError(InputError, RuntimeError):
    """The model could not be exported or written; the message says which operator, axis or path, and what to do."""


def hf_call_kwargs(model: nn.Module, hf: bool) -> dict[str, Any]:
    """Extra keyword arguments of every call: ``use_cache=False`` for Hugging Face models that take it."""
    return {"use_cache": False} if hf and "use_cache" in inspect.signature(model.forward).parameters else {}


class ExportAdapter(nn.Module):
    """Calls the user's model with named inputs and returns a tuple of tensors (what ONNX outputs are)."""

    def __init__(self, model: nn.Module, input_names: Sequence[str], call_kwargs: Mapping[str, Any],
                 output_fields: Sequence[str] | None, positional: bool) -> None:
        super().__init__()
        self.model = model
        self.input_names = list(input_names)
        self.call_kwargs = dict(call_kwargs)
        self.output_fields = list(output_fields) if output_fields is not None else None
        self.positional = positional

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.positional:
            out = self.model(*inputs, **self.call_kwargs)
        else:
            out = self.model(**dict(zip(self.input_names, inputs)), **self.call_kwargs)
        return tuple(output_tensors(out, self.output_fields).values())


def output_tensors(out: Any, fields: Sequence[str] | None) -> dict[str, torch.Tensor]:
    """Name → tensor for a model output (tensor, tuple/list of tensors, dict or HF ModelOutput)."""
    if isinstance(out, torch.Tensor):
        return {"output": out}
    if isinstance(out, Mapping):
        keys = fields if fields is not None else [k for k, v in out.items() if isinstance(v, torch.Tensor)]
        missing = [k for k in keys if k not in out or not isinstance(out[k], torch.Tensor)]
        if missing:
            raise ExportError(f"the model output has no tensor field(s) {missing}; it has {list(out.keys())}")
        return {k: out[k] for k in keys}
    if isinstance(out, (tuple, list)):
        if not all(isinstance(t, torch.Tensor) for t in out):
            kinds = [type(t).__name__ for t in out]
            raise ExportError(f"the model returns a {type(out).__name__} of {kinds}; ONNX outputs must be tensors "
                              "(pass outputs=[...] to pick fields of a dict output, or wrap the model)")
        return {f"output_{i}": t for i, t in enumerate(out)}
    raise ExportError(f"cannot export a model returning {type(out).__name__}; return tensors, a tuple or a dict "
                      "of tensors")


def is_hf_model(model: nn.Module) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    return isinstance(model, PreTrainedModel)


def _forward_params(model: nn.Module) -> list[str]:
    params = inspect.signature(model.forward).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def named_inputs(model: nn.Module, example_inputs: ExampleInputs, hf: bool) -> tuple[dict[str, torch.Tensor], bool]:
    """(name → tensor, positional call?) from a tensor, a tuple or a mapping (e.g. a tokenizer's BatchEncoding)."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if isinstance(example_inputs, Mapping):
        named = dict(example_inputs)
        bad = [k for k, v in named.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise ExportError(f"example input(s) {bad} are not tensors; pass only tensors (non-tensor arguments are "
                              "not graph inputs)")
        return named, False
    if isinstance(example_inputs, (tuple, list)):
        if not all(isinstance(t, torch.Tensor) for t in example_inputs):
            raise ExportError("example_inputs must be a tensor, a tuple of tensors or a dict of tensors, got a "
                              f"{type(example_inputs).__name__} of {[type(t).__name__ for t in example_inputs]}")
        names = _forward_params(model)
        var_positional = any(p.kind == p.VAR_POSITIONAL for p in inspect.signature(model.forward).parameters.values())
        if len(names) < len(example_inputs) and not var_positional:
            raise ExportError(f"{len(example_inputs)} example inputs for a forward() taking {len(names)}: {names}")
        names = (names + [f"input_{i}" for i in range(len(names), len(example_inputs))])[: len(example_inputs)]
        return dict(zip(names, example_inputs)), not hf
    raise ExportError("example_inputs must be a tensor, a tuple or a dict of tensors, got "
                      f"{type(example_inputs).__name__}")


def dynamic_axes(named: Mapping[str, torch.Tensor],
                 dynamic: bool | Mapping[str, Mapping[int, str]]) -> dict[str, dict[int, str]]:
    """Input name → {axis: dim name}. Default: axis 0 is ``batch``; axis 1 is ``sequence`` for integer
    (token) inputs of rank ≥ 2 and for any input of rank ≥ 3, ``decoder_sequence`` for ``decoder_*`` inputs;
    images and audio features (:data:`FIXED_SHAPE_INPUTS`) vary in the batch only."""
    if dynamic is False:
        return {}
    if isinstance(dynamic, Mapping):
        unknown = set(dynamic) - set(named)
        if unknown:
            raise ExportError(f"dynamic axes given for unknown input(s) {sorted(unknown)}; inputs are {list(named)}")
        for name, axes in dynamic.items():
            bad = [a for a in axes if not 0 <= a < named[name].dim()]
            if bad:
                shape = tuple(named[name].shape)
                raise ExportError(f"dynamic axis {bad[0]} of input {name!r} is out of range (shape {shape})")
        return {k: dict(v) for k, v in dynamic.items()}
    axes = {}
    for name, t in named.items():
        if t.dim() == 0:
            continue
        a = {0: "batch"}
        if name in FIXED_SHAPE_INPUTS:
            pass
        elif name.startswith("decoder_") and t.dim() >= 2:
            a[1] = "decoder_sequence"  # an encoder-decoder's decoder runs on its own length
        elif t.dim() >= 3 or (t.dim() == 2 and not t.is_floating_point()):
            a[1] = "sequence"
        axes[name] = a
    return axes


FIXED_SHAPE_INPUTS = ("pixel_values", "input_features", "pixel_values_videos", "image_grid_thw")
"""Inputs whose axes after the batch are fixed by the model (image size and channels, mel bins and frames)."""


def widen_unit_axes(named: Mapping[str, torch.Tensor],
                    axes: Mapping[str, Mapping[int, str]]) -> tuple[torch.Tensor, ...]:
    """Capture inputs: a dynamic axis of size 1 is repeated to size 2, because torch.export specialises size-1
    dims to constants (the 0/1 specialisation). Verification still runs on the inputs as given."""
    out = []
    for name, t in named.items():
        for axis in axes.get(name, {}):
            if t.shape[axis] == 1:
                t = t.repeat_interleave(2, dim=axis)
        out.append(t)
    return tuple(out)


def call_model(model: nn.Module, named: Mapping[str, torch.Tensor], positional: bool,
               call_kwargs: Mapping[str, Any]) -> Any:
    """Run the model on the named inputs as :class:`ExportAdapter` will (positionally or by keyword)."""
    if positional:
        return model(*named.values(), **call_kwargs)
    return model(**named, **call_kwargs)


def pick_outputs(out: Any, outputs: Sequence[str] | None, hf: bool) -> list[str] | None:
    """The output fields to export: the user's choice, else for HF models ``logits`` or ``last_hidden_state``."""
    if outputs is not None:
        return list(outputs)
    if not hf:
        return None
    if isinstance(out, Mapping):
        for name in ("logits", "last_hidden_state"):
            if isinstance(out.get(name), torch.Tensor):
                return [name]
    return None


def max_positions(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def max_sizes(model: nn.Module, hf: bool) -> dict[str, int]:
    """Upper bounds of named axes: a Hugging Face model's ``sequence`` is at most its position count."""
    limit = max_positions(model) if hf else None
    return {"sequence": int(limit)} if limit else {}


EXPORTABLE_EXPERTS = "batched_mm"


@contextlib.contextmanager
def exportable_experts(model: nn.Module) -> Iterator[None]:
    """Within the block, a Hugging Face mixture-of-experts model computes its experts as batched matmuls over
    gathered weights (``experts_implementation="batched_mm"``: ``Gather`` + ``MatMul`` in ONNX, the same function):
    transformers' default grouped matmul has no ONNX translation and its ``eager`` loop cannot be captured.
    Other models are untouched; the model's own setting is restored afterwards."""
    get = getattr(model, "get_experts_implementation", None)
    put = getattr(model, "set_experts_implementation", None)
    before = get() if callable(get) and callable(put) else None
    if not before or all(v in (EXPORTABLE_EXPERTS, None) for v in before.values()):
        yield
        return
    put(EXPORTABLE_EXPERTS)
    try:
        yield
    finally:
        put(before)


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[bool]:
    """Within the block, a Hugging Face model runs its attention in transformers' ``eager`` implementation (the
    same function as ``sdpa``); yields whether it changed anything. The export falls back to it where
    torch.export's decomposition of ``sdpa`` attention fails (T5: a view of a transposed attention output)."""
    config = getattr(model, "config", None)
    put = getattr(model, "set_attn_implementation", None)
    before = getattr(config, "_attn_implementation", None)
    if not callable(put) or before in (None, "eager"):
        yield False
        return
    put("eager")
    try:
        yield True
    finally:
        put(before)
