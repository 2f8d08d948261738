"""Sparsity audit of an ONNX file: every pruned weight found in the graph, its zeros checked against its mask.

Each pruned parameter is located (:mod:`swappass.onnx.locate`); then every pruned position must be exactly 0 in
the file, kept positions must equal the PyTorch weights (when given), ``d_in`` must be the reduction axis of every
consuming MatMul/Gemm, and the tensor itself must hold its pattern (:func:`pattern_problems`: per-row kept
counts, N:M blocks along the reduction axis, the layer budget) — the check that needs no mask.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import onnx
import torch

from ..core.masks import PrunedWeight
from ..core.patterns import NMSparsity, RowSparsity, SparsityPattern, UnstructuredSparsity, parse_pattern
from ..core.version import __version__
from .locate import GraphIndex, Location, locate_pruned_weights, record_view
from .metadata import METADATA_PATTERN, METADATA_SPARSITY, METADATA_VERSION, read_sparsity_metadata

__all__ = ["WeightAudit", "SparsityAudit", "audit_sparsity", "pattern_problems", "sparsity_metadata"]


@dataclass
class WeightAudit:
    """The audit of one pruned parameter."""

    parameter: str
    pattern: str
    status: str  # "ok" | "FAIL" | "unused" | "folded"
    initializer: str | None = None
    storage: str | None = None
    shape: tuple[int, ...] | None = None
    in_axis: int | None = None
    reduction_axes: list[int] = field(default_factory=list)
    located_by: str | None = None
    sparsity: float | None = None  # fraction of zeros in the file's tensor
    mask_sparsity: float = 0.0
    kept_zeros: int = 0  # kept weights that are exactly zero (allowed; reported)
    problems: list[str] = field(default_factory=list)
    expert: int | None = None  # one expert (index along the first axis) of a fused 3-D parameter

    @property
    def key(self) -> str:
        return self.parameter if self.expert is None else f"{self.parameter}[{self.expert}]"

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["shape"] = list(self.shape) if self.shape else None
        return d


@dataclass
class SparsityAudit:
    """Per-parameter results of :func:`audit_sparsity`; ``passed`` when no entry failed."""

    entries: list[WeightAudit]

    @property
    def passed(self) -> bool:
        return all(e.status != "FAIL" for e in self.entries)

    @property
    def failures(self) -> list[WeightAudit]:
        return [e for e in self.entries if e.status == "FAIL"]

    def summary(self) -> str:
        ok = sum(e.status == "ok" for e in self.entries)
        unused = sum(e.status == "unused" for e in self.entries)
        text = f"{ok}/{len(self.entries)} pruned weights verified in the file"
        if unused:
            text += f", {unused} not used by the exported outputs"
        folded = sum(e.status == "folded" for e in self.entries)
        if folded:
            text += f", {folded} folded into constants by the exporter"
        if self.failures:
            text += f", {len(self.failures)} FAILED"
        return text

    def __str__(self) -> str:
        lines = [f"sparsity audit: {self.summary()}"]
        for e in self.failures:
            lines.append(f"  FAIL {e.key} ({e.initializer or 'not located'}): " + "; ".join(e.problems))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "summary": self.summary(), "weights": [e.to_dict() for e in self.entries]}


def audit_sparsity(
    model: onnx.ModelProto | str | Path,
    records: Iterable[PrunedWeight] | Mapping[str, PrunedWeight],
    weights: Mapping[str, torch.Tensor] | None = None,
    unused: Iterable[str] = (),
    folded: Iterable[str] = (),
    measure_only: bool = False,
) -> SparsityAudit:
    """Check that every pruned weight in an ONNX file is zero exactly where its mask prunes.

    For each record: the weight is located (see :func:`locate_pruned_weights`); every pruned position must be
    exactly 0 in the file; kept positions must equal ``weights`` (if given); ``d_in`` must be the reduction
    axis of every consuming MatMul/Gemm; the tensor itself must hold the pattern (:func:`pattern_problems`: at
    most k non-zeros per row, at most N per block of M along the reduction axis, at most the layer budget), and
    the mask must satisfy it exactly. ``unused``: parameters known not to feed the exported outputs; ``folded``:
    parameters applied to constants only, whose products the exporter folded into constants (both reported, not
    failed). A record of one expert of a fused parameter is checked on that expert's slice of the 3-D tensor.
    ``measure_only``: locate and measure (for the metadata), skip the checks.
    """
    if isinstance(model, (str, Path)):
        base_dir = Path(model).parent
        model = onnx.load(str(model))
    else:
        base_dir = None
    records = list(records.values()) if isinstance(records, Mapping) else list(records)
    index = GraphIndex(model, base_dir)
    metadata = read_sparsity_metadata(model).get(METADATA_SPARSITY)
    locations = locate_pruned_weights(index, records, weights, metadata)
    unused, folded = set(unused), set(folded)
    entries = []
    pending: dict[str, int] = {}
    for loc in locations.values():
        if loc is not None:
            pending[loc.source] = pending.get(loc.source, 0) + 1
    for rec in records:
        loc = locations[rec.key]
        w = weights.get(rec.name) if weights is not None else None
        absent = "unused" if rec.name in unused else ("folded" if rec.name in folded else None)
        entries.append(_audit_one(index, rec, loc, w, absent, measure_only))
        if loc is not None:
            pending[loc.source] -= 1
            if not pending[loc.source]:
                index.forget(loc.source)  # keep memory flat on large models (experts share one 3-D source)
    return SparsityAudit(entries)


def _audit_one(index: GraphIndex, rec: PrunedWeight, loc: Location | None, weight, absent: str | None,
               measure_only: bool) -> WeightAudit:
    mask_user = rec.user_mask.cpu().numpy()
    entry = WeightAudit(rec.name, rec.pattern, "ok", mask_sparsity=float(1.0 - mask_user.mean()), expert=rec.expert)
    if loc is None:
        if absent == "unused":
            entry.status = "unused"
            entry.problems.append("not in the graph: the exported outputs do not use this parameter")
        elif absent == "folded":
            entry.status = "folded"
            entry.problems.append("folded into a constant by the exporter: it is applied to constants only, so the "
                                  "file holds its product, not the weight (the output checks cover it)")
        else:
            entry.status = "FAIL"
            entry.problems.append(
                f"not found in the ONNX graph: no MatMul/Gemm weight of shape {tuple(mask_user.shape)} (or its "
                "transpose) is named like it or holds its kept values"
            )
        return entry
    entry.initializer, entry.storage, entry.located_by = loc.source, loc.storage, loc.how
    if loc.error is not None:
        entry.status = "FAIL"
        entry.problems.append(loc.error)
        return entry
    arr = record_view(index.array(loc.source), rec)  # an expert: its 2-D slice of the 3-D tensor
    entry.shape, entry.in_axis = tuple(arr.shape), loc.in_axis
    entry.reduction_axes = sorted({op.reduction_axis for op in loc.operands})
    nonzero = arr != 0
    entry.sparsity = 1.0 - float(np.count_nonzero(nonzero)) / max(arr.size, 1)
    if measure_only:
        return entry
    mask = mask_user if loc.in_axis == 1 else np.ascontiguousarray(mask_user.T)  # in the file's layout
    entry.kept_zeros = int(np.count_nonzero(mask & ~nonzero))
    entry.problems.extend(_mask_problems(arr, nonzero, mask, loc.in_axis))
    if weight is not None:
        entry.problems.extend(_kept_value_problems(arr, mask, rec.stored(weight), rec.transposed, loc.in_axis))
    for op in loc.operands:
        if op.reduction_axis != loc.in_axis:
            entry.problems.append(
                f"{op.consumer} reduces over axis {op.reduction_axis} of {loc.source}, but the pruned inputs (d_in) "
                f"lie along axis {loc.in_axis}"
            )
    pattern = parse_pattern(rec.pattern)
    entry.problems.extend(pattern_problems(nonzero, loc.in_axis, entry.reduction_axes, pattern))
    if pattern.shape_error(*mask_user.shape) is None:
        mask_error = pattern.mask_error(rec.user_mask.cpu())
        if mask_error:
            entry.problems.append(f"the mask itself does not satisfy pattern {pattern}: {mask_error}")
    if entry.problems:
        entry.status = "FAIL"
    return entry


def _mask_problems(arr: np.ndarray, nonzero: np.ndarray, mask: np.ndarray, in_axis: int) -> list[str]:
    """Pruned positions (mask False) that are non-zero in the file (``mask`` in the file's layout)."""
    bad = nonzero & ~mask
    count = int(np.count_nonzero(bad))
    if not count:
        return []
    first = np.argwhere(bad)[0]
    r, c = (int(first[0]), int(first[1])) if in_axis == 1 else (int(first[1]), int(first[0]))
    value = arr[tuple(int(v) for v in first)]
    return [f"{count} pruned weight(s) are non-zero in the file, first at output {r}, input {c} (value {value:.6g})"]


def _kept_value_problems(arr: np.ndarray, mask: np.ndarray, weight: torch.Tensor, transposed: bool,
                         in_axis: int) -> list[str]:
    """Kept positions whose value differs from the PyTorch parameter."""
    w = weight.detach().cpu()
    W_user = w.T if transposed else w
    W = (W_user if in_axis == 1 else W_user.T).contiguous().numpy()  # the file's layout, one sequential copy
    differs = (arr != W) & mask
    count = int(np.count_nonzero(differs))
    if not count:
        return []
    diff = float(np.abs(arr[differs].astype(np.float64) - W[differs].astype(np.float64)).max())
    return [f"{count} kept weight(s) differ from the PyTorch parameter (max |diff| {diff:.3g})"]


def pattern_problems(nonzero: np.ndarray, in_axis: int, reduction_axes: Sequence[int],
                     pattern: SparsityPattern) -> list[str]:
    """Whether a file tensor holds ``pattern`` by itself (no mask needed): ``nonzero`` is its ``!= 0`` map,
    ``in_axis`` the axis holding d_in. Per-row patterns: every output row holds at most k = round(d_in·(1−s))
    non-zeros; N:M: every block of M along each reduction axis at most N; unstructured: at most the layer
    budget. "At most": a kept weight may be exactly zero."""
    d_in = nonzero.shape[in_axis]
    d_out = nonzero.shape[1 - in_axis]
    if pattern.shape_error(d_out, d_in):
        return [f"a {d_out}×{d_in} weight cannot hold pattern {pattern}: {pattern.shape_error(d_out, d_in)}"]
    if isinstance(pattern, NMSparsity):
        return _nm_problems(nonzero, list(reduction_axes) or [in_axis], pattern)
    if isinstance(pattern, RowSparsity):
        k = pattern.kept_per_row(d_in)
        counts = np.count_nonzero(nonzero, axis=in_axis)
        bad = np.nonzero(counts > k)[0]
        if len(bad):
            r = int(bad[0])
            return [f"{len(bad)} row(s) hold more than the {k} of {d_in} weights pattern {pattern} keeps, first: "
                    f"output {r} holds {int(counts[r])}"]
        return []
    if isinstance(pattern, UnstructuredSparsity):
        need, kept = pattern.kept_total(d_out, d_in), int(np.count_nonzero(nonzero))
        if kept > need:
            return [f"{kept} non-zero weights, pattern {pattern} keeps {need} of {d_out}×{d_in}"]
    return []


def _nm_problems(nonzero: np.ndarray, axes: Sequence[int], pattern: NMSparsity) -> list[str]:
    """Blocks of M along each reduction axis must hold at most N non-zeros (what sparse tensor cores read)."""
    out = []
    for axis in axes:
        along = np.moveaxis(nonzero, axis, -1)  # (other, K)
        K = along.shape[-1]
        if K % pattern.m:
            out.append(f"reduction axis {axis} has length {K}, not a multiple of M = {pattern.m}")
            continue
        counts = np.count_nonzero(along.reshape(along.shape[0], K // pattern.m, pattern.m), axis=2)
        bad = np.argwhere(counts > pattern.n)
        if len(bad):
            o, b = (int(v) for v in bad[0])
            out.append(
                f"{len(bad)} block(s) of {pattern.m} along reduction axis {axis} hold more than {pattern.n} non-zeros, "
                f"first: block {b} of slice {o} holds {int(counts[o, b])}"
            )
    return out


def sparsity_metadata(audit: SparsityAudit) -> dict[str, str]:
    """``metadata_props`` for the file: swappass version, pattern(s), and per-initializer sparsity as JSON."""
    per_init = {}
    for e in audit.entries:
        if e.initializer is None:
            continue
        extra = {} if e.expert is None else {"expert": e.expert, "initializer": e.initializer}
        per_init[e.initializer if e.expert is None else f"{e.initializer}[{e.expert}]"] = {
            **extra,
            "parameter": e.parameter,
            "pattern": e.pattern,
            "sparsity": round(e.sparsity, 6) if e.sparsity is not None else None,
            "shape": list(e.shape) if e.shape else None,
            "in_axis": e.in_axis,
            "reduction_axis": e.reduction_axes[0] if len(e.reduction_axes) == 1 else e.reduction_axes,
            "storage": e.storage,
        }
    patterns = sorted({e.pattern for e in audit.entries})
    return {
        METADATA_VERSION: __version__,
        METADATA_PATTERN: ",".join(patterns),
        METADATA_SPARSITY: json.dumps(per_init, sort_keys=True),
    }
