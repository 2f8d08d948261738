"""Where each pruned parameter lives in an exported ONNX graph: its source tensor and the axis holding ``d_in``.

The exporter does not keep parameter names or layouts: it folds ``Transpose(W)`` into a new initializer
(``val_76``), stores a Linear weight as ``d_in × d_out`` for ``MatMul``, keeps GPT-2's ``Conv1D`` weight as is
for ``Gemm``, and may leave transposes as nodes. So the search works from the consumers: every 2-D constant
operand of a ``MatMul`` / ``Gemm`` is traced back through ``Transpose`` / ``Identity`` / ``Cast`` nodes to its
*source* (an initializer, a sparse initializer, or a constant subgraph such as the compact form of
:mod:`swappass.onnx.compact`), which gives both the tensor and the axis the consumer reduces over. A pruned
parameter is matched to a source by name (exact, ``NAME.T``, or a dotted suffix such as ``model.NAME``), by the
``swappass.sparsity`` metadata, or by value (its kept weights equal the PyTorch parameter's).

Orientation convention: the user-view mask is ``d_out × d_in`` (True = keep); ``in_axis`` is the axis of the
source tensor that holds ``d_in``. For a correct graph it is the reduction axis of every consumer, which is also
where N:M blocks must lie for sparse tensor cores.

Mixture-of-experts weights: a fused 3-D parameter ``(E, d_out, d_in)`` is exported (batched matmuls) as a 3-D
initializer that a ``Gather`` / ``GatherND`` along its first axis feeds to a ``MatMul``. Such an operand has
``expert_axis`` 0; a record of one expert (:attr:`swappass.core.masks.PrunedWeight.expert`) is the slice
``source[e]`` of it, and ``in_axis`` / ``reduction_axis`` are axes of that 2-D slice.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from ..core.masks import PrunedWeight, weight_key

__all__ = ["WeightOperand", "GraphIndex", "Location", "locate_pruned_weights", "user_view", "record_view"]

_PASS_THROUGH = ("Identity", "Cast")


@dataclass
class WeightOperand:
    """A constant 2-D operand of a MatMul/Gemm (or expert slices of a 3-D constant gathered for a MatMul), traced
    back to its source tensor."""

    source: str  # name of the initializer / computed value holding the tensor
    storage: str  # "initializer" | "sparse_initializer" | "computed"
    reduction_axis: int  # axis of the *source* tensor (of one expert's slice) that the consumer reduces over
    consumer: str  # e.g. "MatMul node_linear_3"
    expert_axis: int | None = None  # 0: a 3-D source whose experts a Gather picks along its first axis


class GraphIndex:
    """Producers, constants and 2-D weight operands of an ONNX graph; tensors are read lazily."""

    def __init__(self, model: onnx.ModelProto, base_dir: str | Path | None = None) -> None:
        self.model = model
        self.graph = model.graph
        self.base_dir = str(base_dir) if base_dir is not None else None
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.sparse_initializers = {t.values.name: t for t in self.graph.sparse_initializer}
        self.nodes = list(self.graph.node)
        self.producer = {out: i for i, node in enumerate(self.nodes) for out in node.output}  # value -> node index
        self.constants = self._constant_values()
        self._arrays: dict[str, np.ndarray] = {}
        self._operands: list[WeightOperand] | None = None

    def _constant_values(self) -> set[str]:
        const = set(self.initializers) | set(self.sparse_initializers)
        for node in self.nodes:  # ONNX graphs are topologically sorted
            graph_types = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            has_subgraph = any(a.type in graph_types for a in node.attribute)
            if not has_subgraph and all(i == "" or i in const for i in node.input):
                const.update(o for o in node.output if o)
        return const

    def storage(self, name: str) -> str:
        if name in self.initializers:
            return "initializer"
        if name in self.sparse_initializers:
            return "sparse_initializer"
        return "computed"

    def shape(self, name: str) -> tuple[int, ...] | None:
        if name in self.initializers:
            return tuple(self.initializers[name].dims)
        if name in self.sparse_initializers:
            return tuple(self.sparse_initializers[name].dims)
        return None  # computed: known only after evaluation

    def array(self, name: str, cache: bool = True) -> np.ndarray:
        """The value of a constant tensor (initializer, sparse initializer or constant subgraph output)."""
        if name in self._arrays:
            return self._arrays[name]
        if name in self.initializers:
            arr = numpy_helper.to_array(self.initializers[name], self.base_dir or "")
        elif name in self.sparse_initializers:
            arr = _dense_from_sparse(self.sparse_initializers[name], self.base_dir)
        elif name in self.constants:
            arr = self._evaluate(name)
        else:
            raise KeyError(f"{name} is not a constant of the graph")
        if cache:
            self._arrays[name] = arr
        return arr

    def forget(self, name: str) -> None:
        self._arrays.pop(name, None)

    def _evaluate(self, name: str) -> np.ndarray:
        """Run the constant subgraph producing ``name`` with ONNX's reference evaluator (independent of ORT)."""
        from onnx.reference import ReferenceEvaluator

        needed, stack, leaves = set(), [name], set()
        while stack:
            value = stack.pop()
            if value in self.initializers or value in self.sparse_initializers:
                leaves.add(value)
                continue
            i = self.producer[value]
            if i not in needed:
                needed.add(i)
                stack.extend(v for v in self.nodes[i].input if v)
        nodes = [self.nodes[i] for i in sorted(needed)]
        inits = [numpy_helper.from_array(self.array(v), v) for v in sorted(leaves)]
        out = onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)
        sub = onnx.helper.make_graph(nodes, "constant_subgraph", [], [out], initializer=inits)
        sub_model = onnx.helper.make_model(sub, opset_imports=list(self.model.opset_import),
                                           ir_version=self.model.ir_version)
        return ReferenceEvaluator(sub_model).run(None, {})[0]

    def weight_operands(self) -> list[WeightOperand]:
        """Every constant operand of a MatMul/Gemm, traced through Transpose/Identity/Cast to its source."""
        if self._operands is None:
            self._operands = []
            for node in self.nodes:
                if node.op_type not in ("MatMul", "Gemm"):
                    continue
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                for idx, value in enumerate(node.input[:2]):
                    if value not in self.constants:
                        if node.op_type == "MatMul" and (hit := self._trace_gathered(value, idx)) is not None:
                            label = f"{node.op_type} {node.name or node.output[0]}"
                            self._operands.append(WeightOperand(hit[0], self.storage(hit[0]), hit[1], label, 0))
                        continue
                    if node.op_type == "MatMul":
                        axis = 1 if idx == 0 else 0  # A (…, K) reduces over its last axis, B (K, N) over its first
                    else:
                        transposed = attrs.get("transA" if idx == 0 else "transB", 0)
                        axis = (1 - transposed) if idx == 0 else transposed
                    traced = self._trace_to_source(value, axis)
                    if traced is not None:
                        source, src_axis = traced
                        label = f"{node.op_type} {node.name or node.output[0]}"
                        self._operands.append(WeightOperand(source, self.storage(source), src_axis, label))
        return self._operands

    def _trace_gathered(self, value: str, idx: int) -> tuple[str, int] | None:
        """(source, reduction axis of one expert's slice) when a MatMul operand is ``Gather(W, ids)`` along the
        first axis of a 3-D constant ``W`` (batched expert matmuls), else None. A batched operand A ``(S, M, K)``
        reduces over its last axis (slice axis 1), B ``(S, K, N)`` over its second to last (slice axis 0). A
        ``Transpose`` of the gathered slices' last two axes on the way swaps that axis."""
        swapped = False
        while value in self.producer:
            node = self.nodes[self.producer[value]]
            kind = _transpose_perm(node, None) if node.op_type == "Transpose" else None
            if kind in ("identity", "swap"):
                swapped ^= kind == "swap"
            elif node.op_type not in _PASS_THROUGH:
                break
            value = node.input[0]
        if value not in self.producer:
            return None
        node = self.nodes[self.producer[value]]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        along_first = (node.op_type == "Gather" and attrs.get("axis", 0) == 0) or (
            node.op_type == "GatherND" and attrs.get("batch_dims", 0) == 0)
        if not along_first or node.input[0] not in self.constants:
            return None
        source = node.input[0]
        while source in self.producer and self.nodes[self.producer[source]].op_type in _PASS_THROUGH:
            source = self.nodes[self.producer[source]].input[0]
        shape = self.shape(source)
        if shape is not None and len(shape) != 3:
            return None
        axis = 1 if idx == 0 else 0
        return source, 1 - axis if swapped else axis

    def _trace_to_source(self, value: str, axis: int) -> tuple[str, int] | None:
        while value not in self.initializers and value not in self.sparse_initializers:
            if value not in self.producer:
                return None
            node = self.nodes[self.producer[value]]
            if node.op_type == "Transpose":
                kind = _transpose_perm(node, 2)
                if kind == "other":
                    return None  # not a plain 2-D transpose: not a weight layout change we understand
                axis = 1 - axis if kind == "swap" else axis
            elif node.op_type not in _PASS_THROUGH:
                break  # a computed constant (e.g. the compact form): it is the source
            value = node.input[0]
        shape = self.shape(value)
        if shape is not None and len(shape) != 2:
            return None
        return value, axis


def _transpose_perm(node: onnx.NodeProto, rank: int | None) -> str:
    """A ``Transpose``'s effect on the last two axes of its ``rank``-D input (None: unknown): ``"swap"`` (perm
    [0, …, n-1, n-2]; no perm on a 2-D input), ``"identity"`` (perm [0, …, n-1]: a no-op the graph clean-up keeps) or
    ``"other"``."""
    perm = [list(a.ints) for a in node.attribute if a.name == "perm"]
    if not perm:
        return "swap" if rank == 2 else "other"  # no perm reverses the axes
    n = len(perm[0])
    if perm[0] == list(range(n)):
        return "identity"
    return "swap" if n >= 2 and perm[0] == list(range(n - 2)) + [n - 1, n - 2] else "other"


def _dense_from_sparse(sparse: onnx.SparseTensorProto, base_dir: str | None) -> np.ndarray:
    values = numpy_helper.to_array(sparse.values, base_dir or "")
    indices = numpy_helper.to_array(sparse.indices, base_dir or "")
    dense = np.zeros(tuple(sparse.dims), dtype=values.dtype)
    if indices.ndim == 1:
        dense.reshape(-1)[indices] = values
    else:
        dense[tuple(indices.T)] = values
    return dense


@dataclass
class Location:
    """Where a pruned parameter lives in the graph: its source tensor and which source axis holds d_in."""

    source: str
    storage: str
    in_axis: int
    operands: list[WeightOperand]
    how: str  # "name" | "metadata" | "value"
    error: str | None = None  # the source could not be computed (e.g. a corrupted constant subgraph)


def _name_score(source: str, param: str) -> int | None:
    """How well an initializer name matches a parameter name (lower is better), or None."""
    if source == param:
        return 0
    if source == param + ".T":
        return 1
    for candidate in (param, param + ".T"):
        if source.endswith("." + candidate):
            return 2
    return None


def user_view(array: np.ndarray, in_axis: int) -> np.ndarray:
    """The source tensor as d_out × d_in."""
    return array if in_axis == 1 else array.T


def record_view(array: np.ndarray, rec: PrunedWeight) -> np.ndarray:
    """The part of a source tensor that holds ``rec``: the tensor, or ``array[expert]`` for one expert."""
    return array[rec.expert] if rec.expert is not None and array.ndim == 3 else array


def _kept_values_equal(array: np.ndarray, in_axis: int, W_user: np.ndarray, mask_user: np.ndarray) -> bool:
    view = user_view(array, in_axis)
    if view.shape != W_user.shape:
        return False
    row = mask_user[0]
    if not np.array_equal(view[0, row], W_user[0, row]):  # cheap first-row filter
        return False
    return bool(np.array_equal(view[mask_user], W_user[mask_user]))


def _orientation(shape: tuple[int, ...], d_out: int, d_in: int) -> list[int]:
    """Possible ``in_axis`` values for a source of this shape."""
    options = []
    if shape == (d_out, d_in):
        options.append(1)
    if shape == (d_in, d_out):
        options.append(0)
    return options


def locate_pruned_weights(
    index: GraphIndex,
    records: Iterable[PrunedWeight],
    weights: Mapping[str, torch.Tensor] | None = None,
    metadata: Mapping[str, Mapping] | None = None,
) -> dict[str, Location | None]:
    """Match each pruned parameter to the source tensor of the MatMul/Gemm consuming it (None: not found).

    ``weights``: parameter name -> PyTorch tensor (stored orientation); enables matching by value and settles
    the orientation of square weights. ``metadata``: the ``swappass.sparsity`` map of a file written by
    :func:`swappass.export_onnx` (initializer -> {"parameter", "in_axis", ...}).
    Results are keyed by :attr:`~swappass.core.masks.PrunedWeight.key` (``NAME[e]`` for one expert of a fused
    parameter, whose location is a 3-D source with ``expert_axis`` operands).
    """
    operands: dict[bool, dict[str, list[WeightOperand]]] = {False: {}, True: {}}
    for op in index.weight_operands():
        operands[op.expert_axis is not None].setdefault(op.source, []).append(op)
    meta_by_key = {weight_key(v["parameter"], v.get("expert")): (v.get("initializer", k), v)
                   for k, v in (metadata or {}).items() if "parameter" in v}
    finders = {flag: _ValueFinder(index, by_source, flag) for flag, by_source in operands.items()}
    found: dict[str, Location | None] = {}
    for rec in records:
        by_source = operands[rec.expert is not None]
        mask_user = rec.user_mask.cpu().numpy()
        W_user = None
        if weights is not None and rec.name in weights:
            w = rec.stored(weights[rec.name].detach().cpu())
            W_user = (w.T if rec.transposed else w).numpy()
        loc = _locate_by_name(index, by_source, rec, mask_user, W_user, meta_by_key.get(rec.key))
        if loc is None and W_user is not None:
            hit = finders[rec.expert is not None].find(W_user, mask_user, rec.expert)
            if hit is not None:
                loc = Location(hit[0], index.storage(hit[0]), hit[1], by_source[hit[0]], "value")
        found[rec.key] = loc
    return found


def _digest(array: np.ndarray) -> tuple:
    array = np.ascontiguousarray(array)  # SHA-256: hardware-accelerated on current CPUs (2.4x blake2b here)
    return array.shape, array.dtype.str, hashlib.sha256(memoryview(array).cast("B")).digest()


class _ValueFinder:
    """Finds a parameter's tensor among the weight sources by value: by exact content first (one pass over the
    initializers, hashed), else by its kept weights alone (a file whose pruned positions were altered)."""

    def __init__(self, index: GraphIndex, by_source: Mapping[str, list[WeightOperand]], experts: bool = False
                 ) -> None:
        self.index, self.sources, self.experts = index, list(by_source), experts
        self._digests: dict[tuple, str] | None = None

    def _digest_map(self) -> dict[tuple, str]:
        if self._digests is None:
            self._digests = {}
            for source in self.sources:
                if self.index.storage(source) == "initializer":
                    self._digests.setdefault(_digest(self.index.array(source, cache=False)), source)
        return self._digests

    def find(self, W_user: np.ndarray, mask_user: np.ndarray, expert: int | None = None) -> tuple[str, int] | None:
        """(source, in_axis) of the tensor holding ``W_user`` (d_out × d_in) or its transpose (for an expert: in
        the slice ``[expert]`` of a 3-D source), or None."""
        if self.experts:
            return self._find_expert(W_user, mask_user, expert)
        digests = self._digest_map()
        for axis, view in ((1, W_user), (0, W_user.T)):
            source = digests.get(_digest(view))
            if source is not None:
                return source, axis
        d_out, d_in = W_user.shape
        for source in self.sources:
            shape = self.index.shape(source)
            if shape is not None and sorted(shape) != sorted((d_out, d_in)):
                continue
            try:
                arr = self.index.array(source, cache=False)
            except Exception:  # cannot be computed: cannot hold this parameter's values either
                continue
            for axis in _orientation(tuple(arr.shape), d_out, d_in):
                if _kept_values_equal(arr, axis, W_user, mask_user):
                    return source, axis
        return None


    def _find_expert(self, W_user: np.ndarray, mask_user: np.ndarray, expert: int | None) -> tuple[str, int] | None:
        d_out, d_in = W_user.shape
        for source in self.sources:
            shape = self.index.shape(source)
            if expert is None or (shape is not None and (expert >= shape[0] or sorted(shape[1:]) != sorted(W_user.shape))):
                continue
            try:
                arr = self.index.array(source)
            except Exception:  # cannot be computed: cannot hold this parameter's values either
                continue
            if arr.ndim != 3 or expert >= arr.shape[0]:
                continue
            for axis in _orientation(tuple(arr.shape[1:]), d_out, d_in):
                if _kept_values_equal(arr[expert], axis, W_user, mask_user):
                    return source, axis
        return None


def _locate_by_name(index, by_source, rec, mask_user, W_user, meta) -> Location | None:
    """The source named after ``rec``'s parameter (or recorded for it in the metadata), with its orientation."""
    param = rec.name
    d_out, d_in = mask_user.shape

    def shape_of(source):
        shape = index.shape(source)
        shape = shape if shape is not None else tuple(index.array(source).shape)
        return shape[1:] if rec.expert is not None else shape

    def settle(source, how, hint_axis=None):
        try:
            options = _orientation(shape_of(source), d_out, d_in)
        except Exception as exc:  # a constant subgraph that does not evaluate: report it, do not crash
            error = f"cannot compute {source} from its constant subgraph ({type(exc).__name__}: {exc})"
            return Location(source, index.storage(source), -1, by_source[source], how, error)
        if not options:
            return None
        if len(options) > 1:  # square: decide by values, then metadata, then by where the mask's zeros are
            arr = record_view(index.array(source), rec)
            if W_user is not None:
                options = [a for a in options if _kept_values_equal(arr, a, W_user, mask_user)] or options
            if len(options) > 1 and hint_axis in options:
                options = [hint_axis]
            if len(options) > 1:
                fits = [a for a in options if not np.any(user_view(arr, a)[~mask_user])]
                options = fits if len(fits) == 1 else options
        return Location(source, index.storage(source), options[0], by_source[source], how)

    named = sorted((s for s in by_source if _name_score(s, param) is not None), key=lambda s: _name_score(s, param))
    if meta is not None and meta[0] in by_source:
        return settle(meta[0], "metadata", meta[1].get("in_axis"))
    for source in named:
        loc = settle(source, "name")
        if loc is not None:
            return loc
    return None
