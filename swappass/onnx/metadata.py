"""The ``metadata_props`` swappass writes into an exported file, and reading them back.

``swappass.version``, ``swappass.pattern`` and ``swappass.sparsity`` (JSON keyed by initializer: the PyTorch
``parameter``, ``pattern``, measured ``sparsity``, ``shape``, ``in_axis``, ``reduction_axis``, ``storage``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import onnx

from ..core.version import __version__

if TYPE_CHECKING:  # the audit builds on this module; only its type is needed here
    from .audit import SparsityAudit

__all__ = ["sparsity_metadata", "read_sparsity_metadata", "set_metadata", "METADATA_VERSION", "METADATA_PATTERN",
           "METADATA_SPARSITY"]

METADATA_VERSION = "swappass.version"
METADATA_PATTERN = "swappass.pattern"
METADATA_SPARSITY = "swappass.sparsity"


def sparsity_metadata(audit: SparsityAudit) -> dict[str, str]:
    """``metadata_props`` for the file: swappass version, pattern(s), and per-initializer sparsity as JSON."""
    per_init = {}
    for e in audit.entries:
        if e.initializer is None:
            continue
        per_init[e.initializer] = {
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


def read_sparsity_metadata(model: onnx.ModelProto | str | Path) -> dict:
    """The swappass entries of a file's ``metadata_props`` (``swappass.sparsity`` parsed from JSON)."""
    if isinstance(model, (str, Path)):
        model = onnx.load(str(model), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props if p.key.startswith("swappass.")}
    if METADATA_SPARSITY in props:
        props[METADATA_SPARSITY] = json.loads(props[METADATA_SPARSITY])
    return props


def set_metadata(model: onnx.ModelProto, props: Mapping[str, str]) -> None:
    """Set (replace) ``metadata_props`` entries."""
    keep = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
