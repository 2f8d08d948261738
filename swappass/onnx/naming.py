"""Names in an exported graph: parameter names back on the weights, axis names on the symbolic dimensions.

The exporter names initializers after the adapter's attributes (``model.<name>``) or invents names for folded
transposes (``val_76``), and calls dynamic dimensions ``s33``. These rewrite the names in place so that the file
says what it holds: ``<name>`` / ``<name>.T`` for a pruned weight stored as the parameter / its transpose, and
``batch`` / ``sequence`` for the dynamic axes.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import onnx
import torch

from ..core.masks import PrunedWeight
from .locate import GraphIndex, locate_pruned_weights

__all__ = ["rename_values", "all_value_names", "strip_prefix", "rename_dims", "restore_weight_names"]


def rename_values(model: onnx.ModelProto, mapping: Mapping[str, str]) -> None:
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


def all_value_names(model: onnx.ModelProto) -> set[str]:
    g = model.graph
    names = {t.name for t in g.initializer} | {vi.name for vi in g.input} | {vi.name for vi in g.output}
    for node in g.node:
        names.update(node.input)
        names.update(node.output)
    return names


def strip_prefix(model: onnx.ModelProto, prefix: str) -> None:
    """Initializers named ``<prefix><name>`` (the user's model inside the export adapter) become ``<name>``."""
    taken = all_value_names(model)
    mapping = {}
    for t in model.graph.initializer:
        if t.name.startswith(prefix):
            new = t.name[len(prefix):]
            if new not in taken:
                mapping[t.name] = new
                taken.add(new)
    rename_values(model, mapping)


def rename_dims(model: onnx.ModelProto, axes: Mapping[str, Mapping[int, str]]) -> None:
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


def restore_weight_names(model: onnx.ModelProto, records: Sequence[PrunedWeight],
                          weights: Mapping[str, torch.Tensor]) -> None:
    """Name each pruned weight's initializer after its parameter: ``NAME`` when stored like the parameter,
    ``NAME.T`` when the exporter stored its transpose (e.g. a folded ``Transpose`` feeding ``MatMul``). The
    experts of a fused parameter share its 3-D initializer, which gets the parameter's name."""
    locations = locate_pruned_weights(GraphIndex(model), records, weights)
    taken, mapping = all_value_names(model), {}
    for rec in records:
        loc = locations.get(rec.key)
        if loc is None or loc.storage != "initializer" or loc.source in mapping:
            continue
        new = rec.name if (loc.in_axis == 1) != rec.transposed or rec.expert is not None else rec.name + ".T"
        if new != loc.source and new not in taken:
            mapping[loc.source] = new
            taken.add(new)
    rename_values(model, mapping)
