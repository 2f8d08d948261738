"""Compact storage of sparse initializers: a bit mask plus the non-zero values, rebuilt by plain ONNX ops.

An initializer ``W`` (any shape, floating point) becomes two initializers and a small constant subgraph whose
output keeps the name ``W``, so its consumers are unchanged::

    W.nz_bits   uint8[ceil(numel/8)]   packbits(W.ravel() != 0), most significant bit first
    W.nz_values T[nnz + 1]             the non-zero values in row-major order, then one 0
    bits  = BitShift(BitShift(Unsqueeze(W.nz_bits, -1), [0..7], LEFT), 7, RIGHT)   uint8 wrap-around: MSB first
    keep  = Slice(Reshape(bits, [-1]), 0, numel)
    pos   = CumSum(keep) - keep                      index of each kept value in W.nz_values
    W     = Reshape(Where(keep, Gather(W.nz_values, pos), 0), shape)

Every op runs on constants, so onnxruntime folds the subgraph into a dense initializer when it creates the
session (graph optimisation level basic or higher, its default): inference cost is unchanged. This form was
chosen by measurement (``tools/bench_onnx_compact.py``, docs/BENCHMARKS.md): ONNX ``sparse_initializer`` needs
int64 indices (int32 fails the ONNX checker), which makes it *larger* than dense below 67% sparsity, and a
``NonZero`` + ``ScatterND`` rebuild is not constant-folded by onnxruntime (it ran at every inference). The
rebuild is lossless except that -0.0 becomes +0.0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["CompactedTensor", "compact_bytes", "compact_initializers", "rebuild_nodes", "SHARED_CONSTANTS",
           "MIN_SAVED_BYTES"]

MIN_SAVED_BYTES = 256  # compact a tensor only when its serialized form shrinks by at least this much
_PREFIX = "swappass_compact"
SHARED_CONSTANTS = {
    f"{_PREFIX}.shifts": np.arange(8, dtype=np.uint8),
    f"{_PREFIX}.seven": np.array([7], dtype=np.uint8),
    f"{_PREFIX}.last_axis": np.array([-1], dtype=np.int64),
    f"{_PREFIX}.zero": np.array([0], dtype=np.int64),
    f"{_PREFIX}.axis0": np.array(0, dtype=np.int64),
}


@dataclass
class CompactedTensor:
    """One replaced initializer: its serialized bytes before and after (rebuild nodes included)."""

    name: str
    dense_bytes: int
    compact_bytes: int
    sparsity: float


def compact_bytes(array: np.ndarray) -> int:
    """Bytes of the compact form of ``array`` (bit mask + non-zero values + one padding value)."""
    return (array.size + 7) // 8 + (int(np.count_nonzero(array)) + 1) * array.dtype.itemsize


def compact_initializers(model: onnx.ModelProto, min_sparsity: float = 0.3) -> list[CompactedTensor]:
    """Replace, in place, every floating-point initializer with at least ``min_sparsity`` zeros by the rebuild
    subgraph above, where that makes the serialized model smaller by at least :data:`MIN_SAVED_BYTES` (the
    nodes and their value names counted). Returns what was replaced."""
    graph = model.graph
    done: list[CompactedTensor] = []
    new_nodes: list[onnx.NodeProto] = []
    keep_inits: list[TensorProto] = []
    for init in graph.initializer:
        array = numpy_helper.to_array(init) if _is_float(init) else None
        if array is None or array.size == 0:
            keep_inits.append(init)
            continue
        sparsity = 1.0 - np.count_nonzero(array) / array.size
        if sparsity < min_sparsity or array.nbytes - compact_bytes(array) < MIN_SAVED_BYTES:
            keep_inits.append(init)
            continue
        nodes, tensors = rebuild_nodes(init.name, array)
        dense = init.ByteSize()
        compact = sum(n.ByteSize() for n in nodes) + sum(t.ByteSize() for t in tensors)
        if dense - compact < MIN_SAVED_BYTES:
            keep_inits.append(init)
            continue
        new_nodes.extend(nodes)
        keep_inits.extend(tensors)
        done.append(CompactedTensor(init.name, dense, compact, float(sparsity)))
    if not done:
        return done
    shared = [numpy_helper.from_array(v, k) for k, v in SHARED_CONSTANTS.items() if k not in {i.name for i in keep_inits}]
    del graph.initializer[:]
    graph.initializer.extend(keep_inits + shared)
    nodes = new_nodes + list(graph.node)  # constants first keeps the graph topologically sorted
    del graph.node[:]
    graph.node.extend(nodes)
    return done


def _is_float(init: TensorProto) -> bool:
    return init.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)


def rebuild_nodes(name: str, array: np.ndarray) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    """The rebuild nodes and initializers of ``array`` stored as ``name`` (the shared constants not included)."""
    flat = array.reshape(-1)
    keep = flat != 0
    values = np.concatenate([flat[keep], np.zeros(1, dtype=flat.dtype)])
    t = f"{name}.nz"  # prefix of every value this rebuild introduces
    tensors = [
        numpy_helper.from_array(np.packbits(keep), f"{name}.nz_bits"),
        numpy_helper.from_array(values, f"{name}.nz_values"),
        numpy_helper.from_array(np.array([flat.size], dtype=np.int64), f"{t}.numel"),
        numpy_helper.from_array(np.array(array.shape, dtype=np.int64), f"{t}.shape"),
        numpy_helper.from_array(np.zeros((), dtype=flat.dtype), f"{t}.fill"),
    ]
    s = _PREFIX
    nodes = [
        helper.make_node("Unsqueeze", [f"{name}.nz_bits", f"{s}.last_axis"], [f"{t}.bytes"], name=f"{t}.unsqueeze"),
        helper.make_node("BitShift", [f"{t}.bytes", f"{s}.shifts"], [f"{t}.shifted"], direction="LEFT",
                         name=f"{t}.shl"),
        helper.make_node("BitShift", [f"{t}.shifted", f"{s}.seven"], [f"{t}.bits"], direction="RIGHT", name=f"{t}.shr"),
        helper.make_node("Reshape", [f"{t}.bits", f"{s}.last_axis"], [f"{t}.bits_flat"], name=f"{t}.flatten"),
        helper.make_node("Slice", [f"{t}.bits_flat", f"{s}.zero", f"{t}.numel"], [f"{t}.keep_u8"], name=f"{t}.slice"),
        helper.make_node("Cast", [f"{t}.keep_u8"], [f"{t}.keep_i64"], to=TensorProto.INT64, name=f"{t}.to_int"),
        helper.make_node("CumSum", [f"{t}.keep_i64", f"{s}.axis0"], [f"{t}.count"], name=f"{t}.cumsum"),
        helper.make_node("Sub", [f"{t}.count", f"{t}.keep_i64"], [f"{t}.pos"], name=f"{t}.position"),
        helper.make_node("Gather", [f"{name}.nz_values", f"{t}.pos"], [f"{t}.gathered"], axis=0, name=f"{t}.gather"),
        helper.make_node("Cast", [f"{t}.keep_u8"], [f"{t}.keep"], to=TensorProto.BOOL, name=f"{t}.to_bool"),
        helper.make_node("Where", [f"{t}.keep", f"{t}.gathered", f"{t}.fill"], [f"{t}.flat"], name=f"{t}.where"),
        helper.make_node("Reshape", [f"{t}.flat", f"{t}.shape"], [name], name=f"{t}.reshape"),
    ]
    return nodes, tensors
