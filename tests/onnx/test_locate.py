"""Tracing MatMul operands back to the weights they come from (swappass.onnx.locate.GraphIndex)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from swappass.onnx.locate import GraphIndex


def _gathered_matmul(perm):
    """W (E, K, N) gathered by the routed ``ids`` (an input), optionally transposed with ``perm``, as the B operand of a batched MatMul."""
    W = numpy_helper.from_array(np.zeros((4, 8, 6), np.float32), "W")
    nodes = [helper.make_node("GatherND", ["W", "ids"], ["g"])]
    b = "g"
    if perm is not False:
        kwargs = {} if perm is None else {"perm": perm}
        nodes.append(helper.make_node("Transpose", ["g"], ["t"], **kwargs))
        b = "t"
    nodes.append(helper.make_node("MatMul", ["x", b], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, None]),
                               helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[W])
    return helper.make_model(graph)


@pytest.mark.parametrize("perm, axis", [
    (False, 0),        # B (S, K, N) reduces over K: axis 0 of one expert's (K, N) slice
    ([0, 1, 2], 0),    # an identity Transpose (kept by the fold clean-up) changes nothing
    ([0, 2, 1], 1),    # the slices transposed: the reduction runs over the slice's other axis
])
def test_gathered_expert_operand_is_traced_through_transposes_of_its_last_two_axes(perm, axis):
    ops = GraphIndex(_gathered_matmul(perm)).weight_operands()
    assert [(op.source, op.reduction_axis) for op in ops] == [("W", axis)]


@pytest.mark.parametrize("perm", [[1, 0, 2], None])  # mixes the expert axis in; no perm reverses all three axes
def test_other_transposes_of_gathered_experts_are_not_traced(perm):
    assert GraphIndex(_gathered_matmul(perm)).weight_operands() == []
