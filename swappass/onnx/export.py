"""ONNX export of a (pruned) model through ``torch.onnx.export(..., dynamo=True)``, verified with onnxruntime.

    report = swappass.export_onnx(model, example_inputs, "model.onnx", masks=records)
    print(report)            # verification errors, sparsity audit, file size
    assert report.passed

What it does, in order: wrap the model so that its outputs are plain tensors (Hugging Face models: called with
``use_cache=False``, ``logits`` or else ``last_hidden_state`` as the output); capture it with ``torch.export``
(dynamic ``batch`` and ``sequence`` axes by default); translate to ONNX; restore parameter names on the weights
the exporter renamed (a folded ``Transpose`` becomes ``NAME.T``); optionally store sparse initializers compactly
(:mod:`swappass.onnx.compact`); write sparsity metadata; write the file atomically (a temporary directory next to
the target, then a rename), with external data when over the 2 GB protobuf limit; then audit the file's sparsity
(:mod:`swappass.onnx.audit`) and compare onnxruntime with PyTorch on the example inputs and on inputs of another
batch size and sequence length (:mod:`swappass.onnx.verify`).
"""
from __future__ import annotations

import contextlib
import re
import time
import warnings
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import onnx
import torch
from torch import nn

from ..core.masks import PrunedWeight, load_masks
from ..core.version import __version__
from .adapter import (
    ExampleInputs,
    ExportAdapter,
    ExportError,
    call_model,
    dynamic_axes,
    eager_attention,
    exportable_experts,
    hf_call_kwargs,
    is_hf_model,
    max_positions,
    max_sizes,
    named_inputs,
    output_tensors,
    pick_outputs,
    widen_unit_axes,
)
from .audit import audit_sparsity, sparsity_metadata
from .compact import compact_initializers
from .files import (
    EXTERNAL_MARGIN,
    PROTOBUF_LIMIT_BYTES,
    AtomicOutput,
    serialized_bytes,
    tensor_bytes,
)
from .metadata import set_metadata
from .naming import rename_dims, restore_weight_names, strip_prefix
from .report import ExportReport, megabytes
from .verify import (
    OutputCheck,
    VerificationError,
    compare_outputs,
    default_tolerances,
    second_inputs,
)

__all__ = ["export_onnx"]

_WRAPPER_PREFIX = "model."  # the adapter holds the user's model as `self.model`


def _capture(adapter: nn.Module, args: tuple[torch.Tensor, ...], names: Sequence[str],
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
            return _export(adapter, args, specs if axes else None)
        except Exception as exc:
            if not axes or "Constraints violated" not in str(exc):
                raise
            # Some torch releases cannot prove guards such as min(8*s, 16*s) == 8*s over a named Dim's range.
            # Dim.AUTO lets export keep the axes dynamic with runtime checks; verification on a second input
            # shape then shows whether they really stayed dynamic.
            auto = tuple({a: torch.export.Dim.AUTO for a in axes.get(n, {})} or None for n in names)
            return _export(adapter, args, auto)
    except Exception as exc:
        text = str(exc)
        hint = ""
        if "dynamic" in text.lower() or "constraint" in text.lower() or "specializ" in text.lower():
            hint = (" The dynamic axes (" + ", ".join(f"{n}: {dict(a)}" for n, a in axes.items()) + ") do not fit the "
                    "model: pass dynamic=False for fixed shapes, or a mapping of the axes that may vary.")
        summary = _first_lines(text)
        raise ExportError(f"torch.export could not capture the model ({type(exc).__name__}): {summary}.{hint}") from exc


def _export(adapter: nn.Module, args: tuple[torch.Tensor, ...], specs: tuple | None) -> torch.export.ExportedProgram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(adapter, args, dynamic_shapes=(specs,) if specs is not None else None, strict=False)


_OP_PATTERNS = (
    re.compile(r"No ONNX function found for <OpOverload\(op='([^']+)', overload='([^']+)'\)>"),
    re.compile(r"target=torch\.ops\.([\w.]+)"),
)


def _unsupported_operator(exc: BaseException, ep: torch.export.ExportedProgram) -> str | None:
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


def _translate(ep: torch.export.ExportedProgram, input_names: Sequence[str], output_names: Sequence[str],
               opset: int | None) -> onnx.ModelProto:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(ep, (), dynamo=True, opset_version=opset, input_names=list(input_names),
                                        output_names=list(output_names), optimize=True, verbose=False,
                                        custom_translation_table={torch.ops.aten._is_all_true.default: _is_all_true})
    except Exception as exc:
        op = _unsupported_operator(exc, ep)
        if op is not None:
            raise ExportError(
                f"the ONNX exporter cannot translate operator {op} (no ONNX function registered for it). Replace it "
                "in the model, or register a translation (torch.onnx.export's custom_translation_table)."
            ) from exc
        raise ExportError(f"the ONNX exporter failed ({type(exc).__name__}): {_first_lines(str(exc))}") from exc
    return program.model_proto


def _is_view_failure(exc: BaseException) -> bool:
    """Whether an export error comes from a view the decomposition cannot take ("Cannot view a tensor …")."""
    seen = exc
    while seen is not None:
        if "Cannot view a tensor" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _is_all_true(x):
    """``aten._is_all_true`` (the argument of transformers' ``torch_compilable_check`` assertions) in ONNX."""
    from onnxscript import BOOL, INT32
    from onnxscript import opset18 as op

    flat = op.Reshape(x, op.Constant(value_ints=[-1]))
    return op.Cast(op.ReduceMin(op.Cast(flat, to=INT32.dtype), keepdims=0), to=BOOL.dtype)


def _first_lines(text: str, n: int = 6) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " ".join(lines[:n])[:1500]


def _as_records(masks: Iterable[PrunedWeight] | Mapping[str, PrunedWeight] | str | Path | None) -> list[PrunedWeight]:
    if masks is None:
        return []
    if isinstance(masks, (str, Path)):
        masks = load_masks(masks)
    return list(masks.values()) if isinstance(masks, Mapping) else list(masks)


def _check_records(model: nn.Module, records: Sequence[PrunedWeight]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    weights = {}
    for rec in records:
        if rec.name not in params:
            raise ExportError(f"mask for {rec.key!r}: the model has no such parameter (masks from another model?)")
        param = params[rec.name]
        if rec.expert is not None and (param.dim() != 3 or not 0 <= rec.expert < param.shape[0]):
            raise ExportError(f"mask for {rec.key!r}: {rec.name} {tuple(param.shape)} has no expert {rec.expert}")
        if tuple(rec.stored(param).shape) != tuple(rec.mask.shape):
            raise ExportError(f"mask for {rec.key!r} has shape {tuple(rec.mask.shape)}, the parameter "
                              f"{tuple(rec.stored(param).shape)}")
        weights[rec.name] = param
    return weights


def export_onnx(
    model: nn.Module,
    example_inputs: ExampleInputs,
    path: str | Path,
    *,
    masks: Iterable[PrunedWeight] | Mapping[str, PrunedWeight] | str | Path | None = None,
    opset: int | None = None,
    dynamic: bool | Mapping[str, Mapping[int, str]] = True,
    verify: bool = True,
    compact: bool = False,
    outputs: Sequence[str] | None = None,
    external_data: bool | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    verify_inputs: Mapping[str, torch.Tensor] | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    strict: bool = False,
    verbose: bool = True,
) -> ExportReport:
    """Export ``model`` to ONNX at ``path`` and verify the file; returns (and with ``verbose`` prints) the report.

    ``example_inputs``: a tensor (Hugging Face models: ``input_ids``), a tuple (positional arguments), or a
    mapping such as a tokenizer's ``BatchEncoding`` (keyword arguments; keys become the ONNX input names).
    ``masks``: the pruned weights (:class:`~swappass.core.masks.PrunedWeight` list or dict, or a masks file) to audit
    and describe in the metadata. ``dynamic``: True = dynamic ``batch`` (axis 0) and ``sequence`` (axis 1 of
    token inputs and of rank-3 inputs) axes; False = fixed shapes; or ``{input: {axis: name}}``. ``opset``: the
    ONNX opset (None: the exporter's default). ``compact``: store highly sparse initializers as bit mask +
    values (smaller file, onnxruntime folds it back at load). ``outputs``: fields of a dict / ModelOutput result
    to export (default for Hugging Face models: ``logits`` if present, else ``last_hidden_state``).
    ``external_data``: None = automatically when over the 2 GB protobuf limit. ``rtol``/``atol``: verification
    tolerance (default by dtype, see :func:`swappass.onnx.verify.default_tolerances`). ``verify_inputs``: a
    second input set (default: one of another batch size and sequence length). ``strict``: raise
    :class:`~swappass.onnx.verify.VerificationError` when verification fails (the file stays, for inspection).
    """
    path = Path(path)
    records = _as_records(masks)
    weights = _check_records(model, records)
    hf = is_hf_model(model)
    named, positional = named_inputs(model, example_inputs, hf)
    axes = dynamic_axes(named, dynamic)
    call_kwargs = hf_call_kwargs(model, hf)
    with _eval_mode(model), exportable_experts(model), AtomicOutput(path) as out:
        t0 = time.perf_counter()
        with torch.no_grad():
            eager = call_model(model, named, positional, call_kwargs)
        fields = pick_outputs(eager, outputs, hf)
        output_names = list(output_tensors(eager, fields))
        del eager
        adapter = ExportAdapter(model, list(named), call_kwargs, fields, positional).eval()

        def capture_and_translate():
            ep = _capture(adapter, widen_unit_axes(named, axes), list(named), axes, max_sizes(model, hf))
            return _unused_parameters(ep), _folded_parameters(ep), _translate(ep, list(named), output_names, opset)

        note = None
        try:
            unused, folded, proto = capture_and_translate()
        except ExportError as exc:
            if not _is_view_failure(exc):
                raise
            with eager_attention(model) as changed:
                if not changed:
                    raise
                unused, folded, proto = capture_and_translate()
            note = ("exported with transformers' eager attention (the same function): torch.export's decomposition "
                    "of this model's sdpa attention fails (a view of a transposed tensor)")
        strip_prefix(proto, _WRAPPER_PREFIX)
        rename_dims(proto, axes)
        report = _describe(proto, path)
        if note:
            report.notes.append(note)
        _finish_proto(proto, report, records, weights, unused, compact, folded)
        too_big = tensor_bytes(proto) > PROTOBUF_LIMIT_BYTES - EXTERNAL_MARGIN
        if too_big and external_data is False:
            raise ExportError(f"the model's weights ({megabytes(tensor_bytes(proto))}) exceed the 2 GB protobuf limit; "
                              "use external_data=True (or None)")
        out.save(proto, too_big if external_data is None else bool(external_data))
        del proto
        final, report.external_data = out.commit()
        report.export_seconds = time.perf_counter() - t0
        report.file_bytes = final.stat().st_size + (report.external_data.stat().st_size if report.external_data else 0)
        if verify:
            _verify(report, model, adapter, named, axes, output_names, records, weights, unused, rtol, atol,
                    verify_inputs, providers, folded)
        else:
            report.verified = False
    if verbose:
        print(report)
    if verify and not report.passed:
        if strict:
            raise VerificationError(f"{final} failed verification:\n  " + "\n  ".join(report.failures()))
        warnings.warn(f"{final} failed verification: " + "; ".join(report.failures()[:3]), stacklevel=2)
    return report


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Export and verify in eval mode (no dropout), then restore the model's mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _describe(proto: onnx.ModelProto, path: Path) -> ExportReport:
    """A report holding what the graph says: opset, input and output names with their (named) dims."""
    return ExportReport(
        path=path,
        file_bytes=0,
        opset=next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0),
        inputs={vi.name: _vi_dims(vi) for vi in proto.graph.input},
        outputs={vi.name: _vi_dims(vi) for vi in proto.graph.output},
    )


def _finish_proto(proto: onnx.ModelProto, report: ExportReport, records: Sequence[PrunedWeight],
                  weights: Mapping[str, torch.Tensor], unused: set[str], compact: bool,
                  folded: set[str] = frozenset()) -> None:
    """Name the pruned weights, store sparse ones compactly (if asked), and write the sparsity metadata."""
    audit = None
    if records:
        restore_weight_names(proto, records, weights)
        audit = audit_sparsity(proto, records, weights, unused, folded)  # of the dense graph: gives the metadata

    def write_metadata() -> None:
        set_metadata(proto, sparsity_metadata(audit) if audit is not None else {"swappass.version": __version__})

    write_metadata()
    if compact:
        report.dense_bytes = serialized_bytes(proto)
        report.compacted = [c.name for c in compact_initializers(proto)]
        if audit is not None:
            for e in audit.entries:
                if e.initializer in report.compacted:
                    e.storage = "compact"  # bit mask + values, rebuilt by swappass.onnx.compact's subgraph
            write_metadata()


def _unused_parameters(ep: torch.export.ExportedProgram) -> set[str]:
    """Parameters that no exported output depends on (e.g. BERT's pooler when exporting last_hidden_state).

    Walks the captured graph backwards from its outputs (which include functionalised buffer mutations)."""
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
            out.add(fqn[len(_WRAPPER_PREFIX):] if fqn.startswith(_WRAPPER_PREFIX) else fqn)
    return out


def _folded_parameters(ep: torch.export.ExportedProgram) -> set[str]:
    """Parameters applied to constants only (every node reading one depends on no user input), e.g. DeBERTa-v2's
    ``pos_key_proj`` on its relative position embeddings: the exporter folds their products into constants, so the
    file holds the product, not the weight (the outputs still verify it)."""
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
            out.add(fqn[len(_WRAPPER_PREFIX):] if fqn.startswith(_WRAPPER_PREFIX) else fqn)
    return out


def _vi_dims(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def _verify(report: ExportReport, model, adapter, named, axes, output_names, records, weights, unused, rtol, atol,
            verify_inputs, providers, folded=frozenset()) -> None:
    import onnxruntime as ort

    t0 = time.perf_counter()
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    d_rtol, d_atol = default_tolerances(dtype)
    report.rtol = d_rtol if rtol is None else rtol
    report.atol = d_atol if atol is None else atol
    if records:
        report.audit = audit_sparsity(report.path, records, weights, unused, folded)
    try:
        session = ort.InferenceSession(str(report.path), providers=list(providers))
    except Exception as exc:
        report.checks.append(OutputCheck("load", "-", float("inf"), float("inf"), 0.0, False,
                                         note=f"onnxruntime could not load the file: {_first_lines(str(exc), 3)}"))
        report.verify_seconds = time.perf_counter() - t0
        return
    device = next((t.device for t in named.values()), torch.device("cpu"))

    def reference(*inputs):
        return adapter(*(t.to(device) for t in inputs))

    lm = [n for n in output_names if n == "logits"]
    report.checks += compare_outputs(session, reference, named, output_names, "example", report.rtol, report.atol, lm)
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    max_len = max_positions(model)
    second = verify_inputs if verify_inputs is not None else second_inputs(
        {k: v.cpu() for k, v in named.items()}, axes, vocab, max_len)
    if second is not None:
        report.checks += compare_outputs(session, reference, second, output_names, "second", report.rtol, report.atol,
                                         lm)
    else:
        report.notes.append("fixed input shapes: verified on the example inputs only")
    report.verify_seconds = time.perf_counter() - t0
