"""ONNX export of a (pruned) model through ``torch.onnx.export(..., dynamo=True)``, verified with onnxruntime.

    report = swappass.export_onnx(model, example_inputs, "model.onnx", masks=records)
    print(report)            # verification errors, sparsity audit, file size
    assert report.passed

What it does, in order: wrap the model so that its outputs are plain tensors (Hugging Face models: called with
``use_cache=False``, ``logits`` or else ``last_hidden_state`` as the output); capture it with ``torch.export``
(dynamic ``batch`` and ``sequence`` axes by default); translate to ONNX; restore parameter names on the weights
the exporter renamed (a folded ``Transpose`` becomes ``NAME.T``); optionally store sparse initializers compactly
(:mod:`swappass.onnx_compact`); write sparsity metadata; write the file atomically (a temporary directory next to
the target, then a rename), with external data when over the 2 GB protobuf limit; then audit the file's sparsity
(:mod:`swappass.onnx_audit`) and compare onnxruntime with PyTorch on the example inputs and on inputs of another
batch size and sequence length (:mod:`swappass.onnx_verify`).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import onnx
import torch
from torch import nn

from .masks import PrunedWeight, load_masks
from .onnx_audit import (
    GraphIndex,
    SparsityAudit,
    audit_sparsity,
    locate_pruned_weights,
    set_metadata,
    sparsity_metadata,
)
from .onnx_adapter import (
    ExampleInputs,
    ExportAdapter,
    ExportError,
    call_model,
    dynamic_axes,
    hf_call_kwargs,
    is_hf_model,
    max_positions,
    max_sizes,
    named_inputs,
    output_tensors,
    pick_outputs,
    widen_unit_axes,
)
from .onnx_compact import compact_initializers
from .onnx_verify import OutputCheck, compare_outputs, default_tolerances, second_inputs

__all__ = [
    "export_onnx",
    "ExportReport",
    "ExportError",
    "PROTOBUF_LIMIT_BYTES",
]

PROTOBUF_LIMIT_BYTES = 2**31 - 1  # a serialized ModelProto cannot be larger
_EXTERNAL_MARGIN = 2**26  # room for the graph itself next to the weights
_WRAPPER_PREFIX = "model."  # the adapter holds the user's model as `self.model`

# ---------------------------------------------------------------------------------------------- the report
@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how it verified. ``passed``: every check and the audit passed."""

    path: Path
    file_bytes: int
    opset: int
    inputs: dict[str, list]
    outputs: dict[str, list]
    external_data: Path | None = None
    dense_bytes: int | None = None  # file size without compaction, when compact=True
    compacted: list[str] = field(default_factory=list)
    checks: list[OutputCheck] = field(default_factory=list)
    audit: SparsityAudit | None = None
    verified: bool = True
    rtol: float = 0.0
    atol: float = 0.0
    notes: list[str] = field(default_factory=list)
    export_seconds: float = 0.0
    verify_seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks) and (self.audit is None or self.audit.passed)

    def failures(self) -> list[str]:
        """One line per failed check: which output on which inputs and by how much, or which weight and why."""
        out = []
        for c in self.checks:
            if not c.passed:
                what = c.note or (f"max |onnxruntime − PyTorch| = {c.max_abs:.3g} > tolerance {c.tolerance:.3g} "
                                  f"(relative {c.max_rel:.3g})")
                out.append(f"output {c.output!r} on {c.inputs} inputs: {what}")
        if self.audit is not None:
            for e in self.audit.failures:
                out.append(f"weight {e.parameter} ({e.initializer or 'not located'}): " + "; ".join(e.problems))
        return out

    def __str__(self) -> str:
        status = "PASSED" if self.passed else "FAILED"
        if not self.verified:
            status = "written, not verified"
        lines = [f"swappass ONNX export: {self.path} ({_mb(self.file_bytes)}, opset {self.opset}) — {status}"]
        lines.append("  inputs : " + ", ".join(f"{k} {_dims(v)}" for k, v in self.inputs.items()))
        lines.append("  outputs: " + ", ".join(f"{k} {_dims(v)}" for k, v in self.outputs.items()))
        if self.external_data is not None:
            lines.append(f"  weights: in the external data file {self.external_data.name}")
        if self.checks:
            lines.append(f"  onnxruntime vs PyTorch (pass: max|Δ| ≤ {self.atol:g} + {self.rtol:g}·max|PyTorch|):")
            lines.append(f"    {'inputs':<16} {'output':<20} {'max|Δ|':>9} {'relative':>9} {'top-1':>7}  result")
            for c in self.checks:
                top1 = f"{100 * c.top1:6.1f}%" if c.top1 is not None else "      -"
                result = "ok" if c.passed else "FAIL" + (f" ({c.note})" if c.note else f" > {c.tolerance:.2g}")
                lines.append(f"    {c.inputs:<16} {c.output:<20} {c.max_abs:9.2e} {c.max_rel:9.2e} {top1}  {result}")
        if self.audit is not None:
            pruned = [e for e in self.audit.entries if e.sparsity is not None]
            mean = sum(e.sparsity for e in pruned) / len(pruned) if pruned else 0.0
            patterns = ", ".join(sorted({e.pattern for e in self.audit.entries}))
            lines.append(f"  sparsity audit: {self.audit.summary()} (pattern {patterns}, "
                         f"mean sparsity {100 * mean:.1f}%)")
        if self.dense_bytes is not None:
            lines.append(f"  size: {_mb(self.file_bytes)} with {len(self.compacted)} initializers stored compactly, "
                         f"{_mb(self.dense_bytes)} dense")
        lines.extend(f"  note: {n}" for n in self.notes)
        if not self.passed:
            lines.extend(f"  FAILED: {f}" for f in self.failures())
        lines.append(f"  time: export {self.export_seconds:.1f} s, verification {self.verify_seconds:.1f} s")
        return "\n".join(lines)

    def write_json(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, default=str))

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "passed": self.passed,
            "verified": self.verified,
            "file_bytes": self.file_bytes,
            "dense_bytes": self.dense_bytes,
            "external_data": str(self.external_data) if self.external_data else None,
            "opset": self.opset,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "compacted": self.compacted,
            "rtol": self.rtol,
            "atol": self.atol,
            "checks": [c.to_dict() for c in self.checks],
            "audit": self.audit.to_dict() if self.audit else None,
            "failures": self.failures(),
            "notes": self.notes,
            "export_seconds": self.export_seconds,
            "verify_seconds": self.verify_seconds,
        }


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def _dims(dims: list) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


# ---------------------------------------------------------------------------------------------- export steps
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
                                        output_names=list(output_names), optimize=True, verbose=False)
    except Exception as exc:
        op = _unsupported_operator(exc, ep)
        if op is not None:
            raise ExportError(
                f"the ONNX exporter cannot translate operator {op} (no ONNX function registered for it). Replace it "
                "in the model, or register a translation (torch.onnx.export's custom_translation_table)."
            ) from exc
        raise ExportError(f"the ONNX exporter failed ({type(exc).__name__}): {_first_lines(str(exc))}") from exc
    return program.model_proto


def _first_lines(text: str, n: int = 6) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " ".join(lines[:n])[:1500]


def _rename_values(model: onnx.ModelProto, mapping: Mapping[str, str]) -> None:
    """Rename graph values (initializers, node inputs/outputs, graph inputs/outputs, value_info) in place."""
    if not mapping:
        return
    g = model.graph
    for t in g.initializer:
        t.name = mapping.get(t.name, t.name)
    for node in g.node:
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
        for i, name in enumerate(node.output):
            if name in mapping:
                node.output[i] = mapping[name]
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        vi.name = mapping.get(vi.name, vi.name)


def _all_value_names(model: onnx.ModelProto) -> set[str]:
    g = model.graph
    names = {t.name for t in g.initializer} | {vi.name for vi in g.input} | {vi.name for vi in g.output}
    for node in g.node:
        names.update(node.input)
        names.update(node.output)
    return names


def _strip_adapter_prefix(model: onnx.ModelProto) -> None:
    """Initializers of the user's model are named ``model.<name>`` inside the adapter; restore ``<name>``."""
    taken = _all_value_names(model)
    mapping = {}
    for t in model.graph.initializer:
        if t.name.startswith(_WRAPPER_PREFIX):
            new = t.name[len(_WRAPPER_PREFIX):]
            if new not in taken:
                mapping[t.name] = new
                taken.add(new)
    _rename_values(model, mapping)


def _rename_dims(model: onnx.ModelProto, axes: Mapping[str, Mapping[int, str]]) -> None:
    """Give the exporter's symbolic dims (``s33``) the axis names (``batch``, ``sequence``) everywhere."""
    mapping: dict[str, str] = {}
    for vi in model.graph.input:
        for axis, name in axes.get(vi.name, {}).items():
            dim = vi.type.tensor_type.shape.dim[axis]
            if dim.dim_param:
                mapping.setdefault(dim.dim_param, name)
    if not mapping:
        return
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in mapping) + r")\b")
    g = model.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        for dim in vi.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: mapping[m.group(1)], dim.dim_param)


def _restore_weight_names(model: onnx.ModelProto, records: Sequence[PrunedWeight],
                          weights: Mapping[str, torch.Tensor]) -> None:
    """Name each pruned weight's initializer after its parameter: ``NAME`` when stored like the parameter,
    ``NAME.T`` when the exporter stored its transpose (e.g. a folded ``Transpose`` feeding ``MatMul``)."""
    locations = locate_pruned_weights(GraphIndex(model), records, weights)
    taken, mapping = _all_value_names(model), {}
    for rec in records:
        loc = locations.get(rec.name)
        if loc is None or loc.storage != "initializer" or loc.source in mapping:
            continue
        new = rec.name if (loc.in_axis == 1) != rec.transposed else rec.name + ".T"
        if new != loc.source and new not in taken:
            mapping[loc.source] = new
            taken.add(new)
    _rename_values(model, mapping)


def _tensor_bytes(model: onnx.ModelProto) -> int:
    total = 0
    for t in model.graph.initializer:
        if t.raw_data:
            total += len(t.raw_data)
        else:
            n = 1
            for d in t.dims:
                n *= d
            total += n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return total


def _serialized_bytes(model: onnx.ModelProto) -> int:
    tensors = _tensor_bytes(model)
    return model.ByteSize() if tensors < PROTOBUF_LIMIT_BYTES - _EXTERNAL_MARGIN else tensors


# ---------------------------------------------------------------------------------------------- atomic write
class _AtomicOutput:
    """A temporary directory beside ``path``; ``commit`` moves the written files into place, any exit without
    commit removes everything, so a failed export never leaves a partial file (or clobbers an existing one)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        parent = path.parent
        if path.is_dir():
            raise ExportError(f"cannot write {path}: it is a directory; give a file name such as {path / 'model.onnx'}")
        if not parent.is_dir():
            what = "is not a directory" if parent.exists() else "does not exist"
            raise ExportError(f"cannot write {path}: {parent} {what}")
        try:
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=parent))
        except OSError as exc:
            raise ExportError(f"cannot write {path}: {parent} is not writable ({exc.strerror or exc})") from exc

    def save(self, model: onnx.ModelProto, external: bool) -> tuple[Path, Path | None]:
        target = self.tmp / self.path.name
        data_name = self.path.name + ".data"
        try:
            if external:
                onnx.save_model(model, str(target), save_as_external_data=True, all_tensors_to_one_file=True,
                                location=data_name, size_threshold=1024)
            else:
                onnx.save_model(model, str(target))
        except (OSError, ValueError) as exc:
            raise ExportError(f"writing {self.path} failed: {exc}") from exc
        return target, (self.tmp / data_name) if external else None

    def commit(self) -> tuple[Path, Path | None]:
        """Move the data file (if any) and then the model into place."""
        data = self.tmp / (self.path.name + ".data")
        data_final = None
        if data.exists():
            data_final = self.path.with_name(data.name)
            os.replace(data, data_final)
        os.replace(self.tmp / self.path.name, self.path)
        return self.path, data_final

    def __enter__(self) -> "_AtomicOutput":
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- public API
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
            raise ExportError(f"mask for {rec.name!r}: the model has no such parameter (masks from another model?)")
        if tuple(params[rec.name].shape) != tuple(rec.mask.shape):
            raise ExportError(f"mask for {rec.name!r} has shape {tuple(rec.mask.shape)}, the parameter "
                              f"{tuple(params[rec.name].shape)}")
        weights[rec.name] = params[rec.name]
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
    ``masks``: the pruned weights (:class:`~swappass.masks.PrunedWeight` list or dict, or a masks file) to audit
    and describe in the metadata. ``dynamic``: True = dynamic ``batch`` (axis 0) and ``sequence`` (axis 1 of
    token inputs and of rank-3 inputs) axes; False = fixed shapes; or ``{input: {axis: name}}``. ``opset``: the
    ONNX opset (None: the exporter's default). ``compact``: store highly sparse initializers as bit mask +
    values (smaller file, onnxruntime folds it back at load). ``outputs``: fields of a dict / ModelOutput result
    to export (default for Hugging Face models: ``logits`` if present, else ``last_hidden_state``).
    ``external_data``: None = automatically when over the 2 GB protobuf limit. ``rtol``/``atol``: verification
    tolerance (default by dtype, see :func:`swappass.onnx_verify.default_tolerances`). ``verify_inputs``: a
    second input set (default: one of another batch size and sequence length). ``strict``: raise
    :class:`ExportError` when verification fails (the file stays, for inspection).
    """
    path = Path(path)
    records = _as_records(masks)
    weights = _check_records(model, records)
    hf = is_hf_model(model)
    named, positional = named_inputs(model, example_inputs, hf)
    axes = dynamic_axes(named, dynamic)
    call_kwargs = hf_call_kwargs(model, hf)
    with _eval_mode(model), _AtomicOutput(path) as out:
        t0 = time.perf_counter()
        with torch.no_grad():
            eager = call_model(model, named, positional, call_kwargs)
        fields = pick_outputs(eager, outputs, hf)
        output_names = list(output_tensors(eager, fields))
        del eager
        adapter = ExportAdapter(model, list(named), call_kwargs, fields, positional).eval()
        ep = _capture(adapter, widen_unit_axes(named, axes), list(named), axes, max_sizes(model, hf))
        unused = _unused_parameters(ep)
        proto = _translate(ep, list(named), output_names, opset)
        del ep
        _strip_adapter_prefix(proto)
        _rename_dims(proto, axes)
        report = _describe(proto, path)
        _finish_proto(proto, report, records, weights, unused, compact)
        too_big = _tensor_bytes(proto) > PROTOBUF_LIMIT_BYTES - _EXTERNAL_MARGIN
        if too_big and external_data is False:
            raise ExportError(f"the model's weights ({_mb(_tensor_bytes(proto))}) exceed the 2 GB protobuf limit; "
                              "use external_data=True (or None)")
        out.save(proto, too_big if external_data is None else bool(external_data))
        del proto
        final, report.external_data = out.commit()
        report.export_seconds = time.perf_counter() - t0
        report.file_bytes = final.stat().st_size + (report.external_data.stat().st_size if report.external_data else 0)
        if verify:
            _verify(report, model, adapter, named, axes, output_names, records, weights, unused, rtol, atol,
                    verify_inputs, providers)
        else:
            report.verified = False
    if verbose:
        print(report)
    if verify and not report.passed:
        if strict:
            raise ExportError(f"{final} failed verification:\n  " + "\n  ".join(report.failures()))
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
                  weights: Mapping[str, torch.Tensor], unused: set[str], compact: bool) -> None:
    """Name the pruned weights, store sparse ones compactly (if asked), and write the sparsity metadata."""
    from . import __version__

    audit = None
    if records:
        _restore_weight_names(proto, records, weights)
        audit = audit_sparsity(proto, records, weights, unused)  # of the dense graph: gives the metadata

    def write_metadata() -> None:
        set_metadata(proto, sparsity_metadata(audit) if audit is not None else {"swappass.version": __version__})

    write_metadata()
    if compact:
        report.dense_bytes = _serialized_bytes(proto)
        report.compacted = [c.name for c in compact_initializers(proto)]
        if audit is not None:
            for e in audit.entries:
                if e.initializer in report.compacted:
                    e.storage = "compact"  # bit mask + values, rebuilt by swappass.onnx_compact's subgraph
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


def _vi_dims(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def _verify(report: ExportReport, model, adapter, named, axes, output_names, records, weights, unused, rtol, atol,
            verify_inputs, providers) -> None:
    import onnxruntime as ort

    t0 = time.perf_counter()
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    d_rtol, d_atol = default_tolerances(dtype)
    report.rtol = d_rtol if rtol is None else rtol
    report.atol = d_atol if atol is None else atol
    if records:
        report.audit = audit_sparsity(report.path, records, weights, unused)
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
