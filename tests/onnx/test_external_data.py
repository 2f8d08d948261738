"""Keeping an exporter's external data file: unchanged initializers point back at it, changed ones stay inline,
and nothing moves when nothing matches."""
import numpy as np
import onnx
from onnx import helper, numpy_helper

from swappass.onnx.external_data import adopt_external_data, load_keeping_external_data


def _model_with_external_data(directory):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((8, 4)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "A"], ["h"]), helper.make_node("MatMul", ["h", "B"], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(a, "A"), numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph)
    onnx.save_model(model, str(directory / "built.onnx"), save_as_external_data=True, location="built.onnx.data",
                    size_threshold=0)
    return a, b


def test_unchanged_initializers_point_back_at_the_moved_file(tmp_path):
    a, b = _model_with_external_data(tmp_path)
    proto, data = load_keeping_external_data(tmp_path / "built.onnx")
    assert data is not None and set(data.spans) == {"A", "B"}
    assert np.array_equal(numpy_helper.to_array(proto.graph.initializer[0]), a)  # loaded with its data
    names = [t.name for t in proto.graph.initializer]
    proto.graph.initializer[0].name = "weight.T"  # renamed: found by position
    changed = b.copy()
    changed[0, 0] = 7.0
    proto.graph.initializer[1].CopyFrom(numpy_helper.from_array(changed, "B"))  # changed: stays inline
    for node in proto.graph.node:
        node.input[1] = "weight.T" if node.input[1] == "A" else node.input[1]
    out = tmp_path / "out"
    out.mkdir()
    assert adopt_external_data(proto, data, out / "model.onnx.data", names) == 1
    assert not (tmp_path / "built.onnx.data").exists() and (out / "model.onnx.data").is_file()
    first, second = proto.graph.initializer
    assert first.data_location == onnx.TensorProto.EXTERNAL and not first.HasField("raw_data")
    assert {e.key: e.value for e in first.external_data}["location"] == "model.onnx.data"
    assert second.data_location == onnx.TensorProto.DEFAULT
    onnx.save_model(proto, str(out / "model.onnx"))
    back = onnx.load(str(out / "model.onnx"))
    arrays = {t.name: numpy_helper.to_array(t) for t in back.graph.initializer}
    assert np.array_equal(arrays["weight.T"], a) and np.array_equal(arrays["B"], changed)


def test_nothing_matches_nothing_moves(tmp_path):
    _model_with_external_data(tmp_path)
    proto, data = load_keeping_external_data(tmp_path / "built.onnx")
    names = [t.name for t in proto.graph.initializer]
    for t in proto.graph.initializer:
        arr = numpy_helper.to_array(t) + 1.0
        t.CopyFrom(numpy_helper.from_array(arr, t.name))
    assert adopt_external_data(proto, data, tmp_path / "elsewhere.data", names) == 0
    assert (tmp_path / "built.onnx.data").is_file() and not (tmp_path / "elsewhere.data").exists()
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in proto.graph.initializer)


def test_a_model_without_external_data_has_no_spans(tmp_path):
    model = helper.make_model(helper.make_graph([], "g", [], [], [numpy_helper.from_array(np.ones(3, np.float32),
                                                                                             "c")]))
    onnx.save_model(model, str(tmp_path / "inline.onnx"))
    proto, data = load_keeping_external_data(tmp_path / "inline.onnx")
    assert data is None and len(proto.graph.initializer) == 1
