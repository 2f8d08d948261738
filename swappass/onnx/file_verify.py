"""Verification of an ONNX file that already exists (``swappass verify FILE.onnx``), without re-exporting.

Three independent checks, each naming the tensor that fails:

* **the file by itself**, from its ``swappass.sparsity`` metadata: every described tensor exists with the
  recorded shape and storage, holds the recorded sparsity, its pruned inputs (``in_axis``) lie along the
  reduction axis of every MatMul/Gemm consuming it, and it holds its pattern (:func:`~swappass.onnx.audit.
  pattern_problems`: per-row kept counts, N:M blocks along the reduction axis, the layer budget);
* **against the masks** (``swappass_masks.safetensors``, when given): the full audit of
  :func:`~swappass.onnx.audit.audit_sparsity` — zeros exactly where each mask prunes, kept values equal to the
  checkpoint's when its weights are given, the mask itself feasible for its pattern;
* **the runtime**: onnxruntime creates a session from the file, and a ``genai_config.json`` beside it names this
  file and inputs / outputs the graph has.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import onnx
import torch

from ..core.errors import InputError
from ..core.masks import PrunedWeight
from ..core.patterns import parse_pattern
from .audit import SparsityAudit, WeightAudit, audit_sparsity, pattern_problems
from .genai_config import read_genai_config
from .locate import GraphIndex
from .metadata import METADATA_PATTERN, METADATA_SPARSITY, METADATA_VERSION, read_sparsity_metadata

__all__ = ["FileVerification", "verify_file"]


@dataclass
class FileVerification:
    """What :func:`verify_file` found; ``passed`` when every check that ran passed."""

    path: Path
    version: str | None
    pattern: str | None
    tensors: SparsityAudit
    masks: SparsityAudit | None = None
    runtime_error: str | None = None
    runtime_checked: bool = False
    config_problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (self.tensors.passed and (self.masks is None or self.masks.passed) and self.runtime_error is None
                and not self.config_problems)

    def failures(self) -> list[str]:
        """One line per failing tensor (or runtime / config problem)."""
        out = [f"{e.initializer} ({e.parameter}): " + "; ".join(e.problems) for e in self.tensors.failures]
        if self.masks is not None:
            out += [f"{e.initializer or 'not located'} ({e.parameter}) against its mask: " + "; ".join(e.problems)
                    for e in self.masks.failures]
        if self.runtime_error is not None:
            out.append(f"onnxruntime cannot load the file: {self.runtime_error}")
        out += [f"genai_config.json: {p}" for p in self.config_problems]
        return out

    def __str__(self) -> str:
        status = "PASSED" if self.passed else "FAILED"
        lines = [f"swappass verify: {self.path} — {status}",
                 f"  written by swappass {self.version or '?'}, pattern {self.pattern or '?'}"]
        ok = sum(e.status == "ok" for e in self.tensors.entries)
        lines.append(f"  the file by itself: {ok}/{len(self.tensors.entries)} sparse tensors hold their pattern, "
                     "recorded sparsity and layout")
        if self.masks is not None:
            lines.append(f"  against the masks: {self.masks.summary()}")
        if self.runtime_checked:
            lines.append("  onnxruntime: " + ("loads the file" if self.runtime_error is None else "FAILED to load it"))
        lines.extend(f"  note: {n}" for n in self.notes)
        lines.extend(f"  FAIL {f}" for f in self.failures())
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "passed": self.passed, "version": self.version, "pattern": self.pattern,
                "tensors": self.tensors.to_dict(), "masks": self.masks.to_dict() if self.masks else None,
                "runtime_error": self.runtime_error, "config_problems": self.config_problems,
                "failures": self.failures(), "notes": self.notes}


def verify_file(path: str | Path, records: Iterable[PrunedWeight] | Mapping[str, PrunedWeight] | None = None,
                weights: Mapping[str, torch.Tensor] | None = None, runtime: bool = True) -> FileVerification:
    """Verify an existing ONNX file (see the module docstring). ``records``: the masks (None: the file's own
    metadata only); ``weights``: parameter name → the checkpoint's tensor, for the kept values; ``runtime``:
    also create an onnxruntime session. :class:`InputError` when the file cannot be read or there is nothing
    to check (no swappass metadata and no masks)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise InputError(f"cannot read {path} as an ONNX model: {str(exc)[:300]}") from exc
    meta = read_sparsity_metadata(model)
    described = meta.get(METADATA_SPARSITY) or {}
    if not described and records is None:
        raise InputError(f"{path} holds no swappass sparsity metadata and no masks were given: nothing to check the "
                         "file against; pass the masks (--masks DIR with swappass_masks.safetensors)")
    index = GraphIndex(model, path.parent)
    result = FileVerification(path, meta.get(METADATA_VERSION), meta.get(METADATA_PATTERN),
                              SparsityAudit([_check_described(index, name, info) for name, info in described.items()]))
    if not described:
        result.notes.append("the file has no swappass sparsity metadata: checked against the masks only")
    if records is not None:
        records = list(records.values()) if isinstance(records, Mapping) else list(records)
        result.masks = audit_sparsity(model, records, weights)
        missing = sorted({v.get("parameter") for v in described.values()} - {r.name for r in records})
        if missing:
            result.config_problems.append(f"the metadata describes {len(missing)} parameter(s) the masks do not have, "
                                          f"first {missing[0]} (masks of another model?)")
    del index
    if runtime:
        result.runtime_checked = True
        result.runtime_error = _runtime_error(path)
    result.config_problems.extend(_config_problems(path, model))
    return result


def _check_described(index: GraphIndex, name: str, info: Mapping) -> WeightAudit:
    """One tensor of the metadata, checked by itself."""
    entry = WeightAudit(info.get("parameter") or "?", info.get("pattern") or "?", "ok", initializer=name,
                        storage=info.get("storage"), in_axis=info.get("in_axis"))
    problems = entry.problems
    operands = [op for op in index.weight_operands() if op.source == name]
    if name not in index.constants:
        problems.append("not in the graph (no initializer or constant of this name)")
    elif not operands:
        problems.append("no MatMul/Gemm consumes it")
    if problems:
        entry.status = "FAIL"
        return entry
    try:
        arr = index.array(name, cache=False)
    except Exception as exc:
        entry.status = "FAIL"
        problems.append(f"cannot compute it from its constant subgraph ({type(exc).__name__}: {exc})")
        return entry
    entry.shape, entry.reduction_axes = tuple(arr.shape), sorted({op.reduction_axis for op in operands})
    nonzero = arr != 0
    entry.sparsity = 1.0 - float(np.count_nonzero(nonzero)) / max(arr.size, 1)
    if info.get("shape") is not None and list(arr.shape) != list(info["shape"]):
        problems.append(f"shape {list(arr.shape)}, the metadata records {info['shape']}")
    if info.get("sparsity") is not None and abs(entry.sparsity - float(info["sparsity"])) > 1e-6:
        problems.append(f"holds {100 * entry.sparsity:.4f}% zeros, the metadata records {100 * info['sparsity']:.4f}%")
    storage = index.storage(name)
    expected = {"compact": "computed"}.get(info.get("storage"), info.get("storage"))
    if expected and expected != storage:
        problems.append(f"stored as {storage}, the metadata records {info.get('storage')}")
    in_axis = info.get("in_axis")
    if in_axis not in (0, 1) or arr.ndim != 2:
        problems.append(f"the metadata's in_axis {in_axis!r} is not an axis of this 2-D weight")
    else:
        for op in operands:
            if op.reduction_axis != in_axis:
                problems.append(f"{op.consumer} reduces over axis {op.reduction_axis}, but the pruned inputs lie "
                                f"along axis {in_axis}")
        try:
            problems.extend(pattern_problems(nonzero, in_axis, entry.reduction_axes, parse_pattern(entry.pattern)))
        except InputError as exc:
            problems.append(f"the metadata's pattern {entry.pattern!r} is not a pattern: {exc}")
    if problems:
        entry.status = "FAIL"
    return entry


def _runtime_error(path: Path) -> str | None:
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        return " ".join(str(exc).split())[:500]
    return None


def _config_problems(path: Path, model: onnx.ModelProto) -> list[str]:
    """A ``genai_config.json`` beside the file that names it must name inputs and outputs the graph has."""
    config = read_genai_config(path.parent)
    decoder = (config or {}).get("model", {}).get("decoder", {})
    if not decoder or decoder.get("filename") != path.name:
        return []
    names = {vi.name for vi in model.graph.input} | {vi.name for vi in model.graph.output}
    problems = []
    for role, name in {**decoder.get("inputs", {}), **decoder.get("outputs", {})}.items():
        probe = name % 0 if "%d" in name else name
        if probe not in names:
            problems.append(f"its {role} {name!r} is not an input or output of {path.name}")
    return problems
