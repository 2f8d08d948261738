"""The ``metadata_props`` swappass writes into an exported file (:func:`swappass.onnx.audit.sparsity_metadata`
makes them from an audit), and reading them back.

``swappass.version``, ``swappass.pattern`` and ``swappass.sparsity`` (JSON keyed by initializer: the PyTorch
``parameter``, ``pattern``, measured ``sparsity``, ``shape``, ``in_axis``, ``reduction_axis``, ``storage``; one
expert of a fused MoE parameter is keyed ``INITIALIZER[e]`` and adds ``expert`` and ``initializer``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import onnx

__all__ = ["read_sparsity_metadata", "set_metadata", "METADATA_VERSION", "METADATA_PATTERN",
           "METADATA_SPARSITY"]

METADATA_VERSION = "swappass.version"
METADATA_PATTERN = "swappass.pattern"
METADATA_SPARSITY = "swappass.sparsity"


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
