"""Which ONNX opsets an export can target, checked before any work starts.

The range is ``[MIN_OPSET, max_opset()]``: the torch.onnx (dynamo) exporter translates to opset 18 natively and
reaches lower opsets only through onnx's version converter, which cannot convert every operator (it stops at
``Cast`` below 13, and silently writes 18 for 7); above, the opset must be one that both the installed ``onnx``
defines and the installed onnxruntime loads (probed once with a one-node model, a few milliseconds).
"""
from __future__ import annotations

import functools

from ..core.errors import InputError

__all__ = ["MIN_OPSET", "max_opset", "check_opset"]

MIN_OPSET = 18


@functools.lru_cache(maxsize=1)
def max_opset() -> int:
    """The highest opset that the installed ``onnx`` defines and the installed onnxruntime loads."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    for opset in range(onnx.defs.onnx_opset_version(), MIN_OPSET - 1, -1):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:  # this onnxruntime does not know the opset yet
            continue
        return opset
    return MIN_OPSET


def check_opset(opset: object) -> int | None:
    """``opset`` as an int (None stays None: the exporter's default); :class:`InputError` naming the supported
    range for anything else."""
    if opset is None:
        return None
    high = max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= high:
        raise InputError(
            f"opset {opset!r} is not supported: use an opset from {MIN_OPSET} to {high} ({MIN_OPSET} is the lowest the "
            f"torch.onnx exporter writes without a lossy version conversion; {high} the highest that the installed onnx "
            "and onnxruntime both support), or leave it out for the exporter's default"
        )
    return opset
