"""From a PyTorch module to an ONNX ``ModelProto``: ``torch.export`` (the capture), then ``torch.onnx.export`` of
the exported program (the translation) and a clean-up of the graph.

The clean-up is onnxscript's constant folding (weight ``Transpose`` nodes fold into ``NAME.T`` initializers),
unused-node removal, constant lifting, initializer deduplication and common-subexpression elimination — what
``optimize=True`` runs, less its pattern rewriter, which took most of the export time (80 of 160 s for
SmolLM2-135M's KV-cache graph, docs/BENCHMARKS.md) and which onnxruntime's own graph optimiser repeats when it
loads the file anyway. ``optimize="full"`` runs the exporter's whole optimiser as before.
"""
from __future__ import annotations

import re
import warnings
from typing import Any, Mapping, Sequence

import onnx
import torch
from torch import nn

from .adapter import ExportError

__all__ = ["export_program", "capture", "translate", "unused_parameters", "folded_parameters", "is_view_failure",
           "first_lines", "OPTIMIZE_LEVELS"]

OPTIMIZE_LEVELS = ("fold", "full", "none")


def first_lines(text: str, n: int = 6) -> str:
    """The first ``n`` non-empty lines of an error text, joined (at most 1500 characters)."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " ".join(lines[:n])[:1500]


def export_program(module: nn.Module, args: tuple, dynamic_shapes: Any) -> torch.export.ExportedProgram:
    """``torch.export.export`` (non-strict) with warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(module, args, dynamic_shapes=dynamic_shapes, strict=False)


def capture(adapter: nn.Module, args: tuple[torch.Tensor, ...], names: Sequence[str],
            axes: Mapping[str, Mapping[int, str]], max_sizes: Mapping[str, int]) -> torch.export.ExportedProgram:
    """torch.export with one ``Dim`` per axis name (bounded by ``max_sizes``, e.g. the model's positions)."""
    dims: dict[str, torch.export.Dim] = {}

    def dim(name: str) -> torch.export.Dim:
        if name not in dims:
            dims[name] = torch.export.Dim(name, max=max_sizes[name]) if name in max_sizes else torch.export.Dim(name)
        return dims[name]

    specs = tuple({a: dim(d) for a, d in axes.get(n, {}).items()} or None for n in names)
    try:
        try:
            return export_program(adapter, args, (specs,) if axes else None)
        except Exception as exc:
            if not axes or "Constraints violated" not in str(exc):
                raise
            # Some torch releases cannot prove guards such as min(8*s, 16*s) == 8*s over a named Dim's range.
            # Dim.AUTO lets export keep the axes dynamic with runtime checks; verification on a second input
            # shape then shows whether they really stayed dynamic.
            auto = tuple({a: torch.export.Dim.AUTO for a in axes.get(n, {})} or None for n in names)
            return export_program(adapter, args, (auto,))
    except Exception as exc:
        raise capture_error(exc, axes) from exc


def capture_error(exc: BaseException, axes: Mapping[str, Mapping[int, str]]) -> ExportError:
    """The :class:`ExportError` for a failed capture, with a hint when the dynamic axes are the cause."""
    text = str(exc)
    hint = ""
    if "dynamic" in text.lower() or "constraint" in text.lower() or "specializ" in text.lower():
        hint = (" The dynamic axes (" + ", ".join(f"{n}: {dict(a)}" for n, a in axes.items()) + ") do not fit the "
                "model: pass dynamic=False for fixed shapes, or a mapping of the axes that may vary.")
    return ExportError(f"torch.export could not capture the model ({type(exc).__name__}): {first_lines(text)}.{hint}")


_OP_PATTERNS = (
    re.compile(r"No ONNX function found for <OpOverload\(op='([^']+)', overload='([^']+)'\)>"),
    re.compile(r"target=torch\.ops\.([\w.]+)"),
)


def _unsupported_operator(exc: BaseException) -> str | None:
    """The operator named by an exporter error (walking the exception chain)."""
    seen = exc
    while seen is not None:
        text = str(seen)
        m = _OP_PATTERNS[0].search(text)
        if m:
            return f"{m.group(1).replace('.', '::', 1)}.{m.group(2)}"
        m = _OP_PATTERNS[1].search(text)
        if m:
            ns, rest = m.group(1).split(".", 1)
            return f"{ns}::{rest}"
        seen = seen.__cause__ or seen.__context__
    return None


def translate(ep: torch.export.ExportedProgram, input_names: Sequence[str], output_names: Sequence[str],
              opset: int | None, optimize: str = "fold") -> onnx.ModelProto:
    """The ONNX model of an exported program; ``optimize``: ``"fold"`` (the clean-up above), ``"full"`` (the
    exporter's optimiser with its rewriter) or ``"none"``."""
    if optimize not in OPTIMIZE_LEVELS:
        raise ValueError(f"optimize must be one of {OPTIMIZE_LEVELS}, got {optimize!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(ep, (), dynamo=True, opset_version=opset, input_names=list(input_names),
                                        output_names=list(output_names), optimize=optimize == "full", verbose=False,
                                        custom_translation_table={torch.ops.aten._is_all_true.default: _is_all_true})
            if optimize == "fold":
                clean_up(program.model)
    except Exception as exc:
        op = _unsupported_operator(exc)
        if op is not None:
            raise ExportError(
                f"the ONNX exporter cannot translate operator {op} (no ONNX function registered for it). Replace it "
                "in the model, or register a translation (torch.onnx.export's custom_translation_table)."
            ) from exc
        raise ExportError(f"the ONNX exporter failed ({type(exc).__name__}): {first_lines(str(exc))}") from exc
    return program.model_proto


def _is_all_true(x):
    """``aten._is_all_true`` (the argument of transformers' ``torch_compilable_check`` assertions) in ONNX."""
    from onnxscript import BOOL, INT32
    from onnxscript import opset18 as op

    flat = op.Reshape(x, op.Constant(value_ints=[-1]))
    return op.Cast(op.ReduceMin(op.Cast(flat, to=INT32.dtype), keepdims=0), to=BOOL.dtype)


def is_view_failure(exc: BaseException) -> bool:
    """Whether an export error comes from a view the decomposition cannot take ("Cannot view a tensor …")."""
    seen = exc
    while seen is not None:
        if "Cannot view a tensor" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def clean_up(model: Any) -> None:
    """Constant folding and the structural passes of onnxscript's optimiser, in place on an ``onnx_ir.Model``."""
    import onnx_ir.passes.common as common
    import onnxscript.optimizer

    onnxscript.optimizer.fold_constants(model)
    passes = [common.RemoveUnusedNodesPass(), common.RemoveUnusedFunctionsPass(), common.RemoveUnusedOpsetsPass(),
              common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
              common.DeduplicateInitializersPass(), common.CommonSubexpressionEliminationPass(),
              common.RemoveUnusedNodesPass(), common.NameFixPass()]
    for p in passes:
        p(model)


def unused_parameters(ep: torch.export.ExportedProgram, prefix: str) -> set[str]:
    """Parameters that no exported output depends on (e.g. BERT's pooler when exporting last_hidden_state),
    named without the adapter's ``prefix``. Walks the captured graph backwards from its outputs (which include
    functionalised buffer mutations)."""
    output = next(n for n in ep.graph.nodes if n.op == "output")
    live, stack = set(), [output]
    while stack:
        node = stack.pop()
        for arg in node.all_input_nodes:
            if arg.name not in live:
                live.add(arg.name)
                stack.append(arg)
    out = set()
    for placeholder, fqn in ep.graph_signature.inputs_to_parameters.items():
        if placeholder not in live:
            out.add(fqn[len(prefix):] if fqn.startswith(prefix) else fqn)
    return out


def folded_parameters(ep: torch.export.ExportedProgram, prefix: str) -> set[str]:
    """Parameters applied to constants only (every node reading one depends on no user input), e.g. DeBERTa-v2's
    ``pos_key_proj`` on its relative position embeddings: the exporter folds their products into constants, so the
    file holds the product, not the weight (the outputs still verify it). Named without the adapter's ``prefix``."""
    users_inputs = set(ep.graph_signature.user_inputs)
    live: set[str] = set()  # nodes that depend on a user input
    for node in ep.graph.nodes:
        if node.op == "placeholder":
            if node.name in users_inputs:
                live.add(node.name)
        elif any(a.name in live for a in node.all_input_nodes):
            live.add(node.name)
    out = set()
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    for placeholder, fqn in ep.graph_signature.inputs_to_parameters.items():
        users = placeholders[placeholder].users if placeholder in placeholders else {}
        if users and not any(u.name in live for u in users):
            out.add(fqn[len(prefix):] if fqn.startswith(prefix) else fqn)
    return out
