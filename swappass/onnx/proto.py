"""What both exports do to a translated ``ModelProto`` before it is written, and the inputs they share: the
pruned-weight records, the model in eval mode, the report skeleton read from the graph.

:func:`finish_proto` names each pruned weight's initializer after its parameter, audits the (dense) graph for the
``swappass.sparsity`` metadata, and stores sparse initializers compactly when asked.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import onnx
import torch
from torch import nn

from ..core.masks import PrunedWeight, load_masks
from ..core.version import __version__
from .adapter import ExportError
from .audit import SparsityAudit, audit_sparsity, sparsity_metadata
from .compact import compact_initializers
from .files import serialized_bytes
from .metadata import set_metadata
from .naming import restore_weight_names
from .report import ExportReport
from .verify import default_tolerances

__all__ = ["MasksLike", "as_records", "check_records", "eval_mode", "describe", "finish_proto", "value_dims",
           "set_tolerances"]

MasksLike = Iterable[PrunedWeight] | Mapping[str, PrunedWeight] | str | Path | None


def as_records(masks: MasksLike) -> list[PrunedWeight]:
    """The pruned-weight records from a list, a dict or a masks file (None: none)."""
    if masks is None:
        return []
    if isinstance(masks, (str, Path)):
        masks = load_masks(masks)
    return list(masks.values()) if isinstance(masks, Mapping) else list(masks)


def check_records(model: nn.Module, records: Sequence[PrunedWeight]) -> dict[str, torch.Tensor]:
    """Parameter name → tensor for each record; :class:`ExportError` when a mask does not fit the model."""
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


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Export and verify in eval mode (no dropout), then restore the model's mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def value_dims(vi: onnx.ValueInfoProto) -> list:
    """A graph value's dims: names for symbolic ones, sizes for fixed ones."""
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def describe(proto: onnx.ModelProto, path: Path) -> ExportReport:
    """A report holding what the graph says: opset, input and output names with their (named) dims."""
    return ExportReport(
        path=path,
        file_bytes=0,
        opset=next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0),
        inputs={vi.name: value_dims(vi) for vi in proto.graph.input},
        outputs={vi.name: value_dims(vi) for vi in proto.graph.output},
    )


def finish_proto(proto: onnx.ModelProto, report: ExportReport, records: Sequence[PrunedWeight],
                 weights: Mapping[str, torch.Tensor], unused: set[str], compact: bool,
                 folded: set[str] = frozenset()) -> SparsityAudit | None:
    """Name the pruned weights, store sparse ones compactly (if asked), and write the sparsity metadata; the
    audit of the dense graph (None without records). ``unused`` / ``folded``: as for :func:`audit_sparsity`."""
    audit = None
    if records:
        restore_weight_names(proto, records, weights)
        audit = audit_sparsity(proto, records, weights, unused, folded, measure_only=True)  # for the metadata

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
    return audit


def set_tolerances(report: ExportReport, model: nn.Module, rtol: float | None, atol: float | None) -> None:
    """The report's verification tolerances: ``rtol`` / ``atol`` where given, else the defaults for the model's
    floating-point dtype (:func:`swappass.onnx.verify.default_tolerances`)."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    d_rtol, d_atol = default_tolerances(dtype)
    report.rtol = d_rtol if rtol is None else rtol
    report.atol = d_atol if atol is None else atol
