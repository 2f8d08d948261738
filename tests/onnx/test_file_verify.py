"""Verifying an existing file: the pattern itself (per-row kept counts, N:M blocks along the reduction axis),
the metadata, the masks; on one-MatMul graphs written like an export (names, metadata), so each case costs
milliseconds."""
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import swappass as sp
from swappass.core.errors import InputError
from swappass.core.masks import PrunedWeight
from swappass.onnx.audit import audit_sparsity, pattern_problems, sparsity_metadata
from swappass.onnx.file_verify import verify_file
from swappass.onnx.metadata import set_metadata


def exported_like(tmp_path, pattern, d_out=8, d_in=16, seed=0):
    """fc.weight (d_out × d_in) pruned to ``pattern``, stored transposed for MatMul as an export does; written
    with swappass metadata. Returns (path, record, the stored array)."""
    torch.manual_seed(seed)
    W = torch.randn(d_out, d_in)
    mask = sp.warm_start(W, None, pattern, "magnitude")
    W = W * mask
    rec = PrunedWeight("fc.weight", mask, str(sp.parse_pattern(pattern)))
    arr = W.numpy().T.copy()  # d_in × d_out: in_axis 0 = the MatMul reduction axis
    model = _graph(arr)
    set_metadata(model, sparsity_metadata(audit_sparsity(model, [rec], {"fc.weight": W}, measure_only=True)))
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return path, rec, arr


def _graph(arr):
    d_in, d_out = arr.shape
    g = helper.make_graph([helper.make_node("MatMul", ["x", "fc.weight.T"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", d_in])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", d_out])],
                          initializer=[numpy_helper.from_array(arr, "fc.weight.T")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def rewrite(path, arr, keep_metadata=True):
    old = onnx.load(str(path))
    model = _graph(arr)
    if keep_metadata:
        model.metadata_props.extend(old.metadata_props)
    onnx.save(model, str(path))


@pytest.mark.parametrize("pattern", ["2:4", "0.5"])
def test_an_export_passes_all_three_checks(tmp_path, pattern):
    path, rec, _ = exported_like(tmp_path, pattern)
    result = verify_file(path, [rec])
    assert result.passed, result.failures()
    assert result.tensors.entries[0].initializer == "fc.weight.T" and result.masks.passed and result.runtime_checked
    assert "PASSED" in str(result)


def test_a_weight_moved_inside_its_row_breaks_2of4_blocks_but_not_the_row_count(tmp_path):
    """Swap a kept and a pruned position of one output row across two 4-blocks: the row still keeps 8 of 16,
    so a per-row check on the file passes, while the 2:4 blocks (and the masks) catch it."""
    path, rec, arr = exported_like(tmp_path, "2:4")
    col = arr[:, 0]  # output 0 along d_in
    kept0 = int(np.nonzero(col[0:4])[0][0])
    pruned1 = 4 + int(np.nonzero(col[4:8] == 0)[0][0])
    col[pruned1], col[kept0] = col[kept0], 0.0
    rewrite(path, arr)
    alone = verify_file(path)  # the file by itself
    assert not alone.passed and [e.initializer for e in alone.tensors.failures] == ["fc.weight.T"]
    assert "block(s) of 4 along reduction axis 0 hold more than 2 non-zeros" in " ".join(alone.failures())
    as_rows = pattern_problems(arr != 0, 0, [0], sp.parse_pattern("0.5"))
    assert as_rows == []  # the same tensor read as 50% per row: every row still holds 8 of 16
    masked = verify_file(path, [rec])
    assert "pruned weight(s) are non-zero in the file, first at output 0" in " ".join(masked.failures())


def test_a_row_with_too_many_weights_fails_the_row_pattern(tmp_path):
    path, rec, arr = exported_like(tmp_path, "0.5")
    pruned = int(np.nonzero(arr[:, 3] == 0)[0][0])
    arr[pruned, 3] = 0.125  # output 3 keeps 9 of 16
    rewrite(path, arr)
    result = verify_file(path)
    text = " ".join(result.failures())
    assert "1 row(s) hold more than the 8 of 16 weights pattern row:0.5 keeps, first: output 3 holds 9" in text
    assert "the metadata records 50.0000%" in text  # the recorded sparsity no longer holds either


def test_metadata_that_contradicts_the_file_is_named(tmp_path):
    path, rec, arr = exported_like(tmp_path, "2:4")
    m = onnx.load(str(path))
    for p in m.metadata_props:
        if p.key == "swappass.sparsity":
            p.value = p.value.replace('"in_axis": 0', '"in_axis": 1')
    onnx.save(m, str(path))
    result = verify_file(path)
    assert "reduces over axis 0, but the pruned inputs lie along axis 1" in " ".join(result.failures())


def test_masks_of_another_pruning_fail_and_a_tampered_mask_is_named(tmp_path):
    path, rec, _ = exported_like(tmp_path, "2:4")
    other = PrunedWeight(rec.name, rec.mask.flip(-1), rec.pattern)
    assert not verify_file(path, [other]).masks.passed
    broken = rec.mask.clone()
    broken[0, :4] = True  # 4 of 4 kept in the first block: not a 2:4 mask
    text = " ".join(verify_file(path, [PrunedWeight(rec.name, broken, rec.pattern)]).failures())
    assert "the mask itself does not satisfy pattern 2:4: row 0, block 0" in text


def test_nothing_to_check_and_unreadable_files_are_bad_input(tmp_path):
    path, rec, arr = exported_like(tmp_path, "2:4")
    rewrite(path, arr, keep_metadata=False)
    with pytest.raises(InputError, match="no swappass sparsity metadata and no masks"):
        verify_file(path)
    assert verify_file(path, [rec]).passed  # the masks alone still locate and check it
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(InputError, match="cannot read .*junk.onnx as an ONNX model"):
        verify_file(tmp_path / "junk.onnx")
    with pytest.raises(InputError, match="does not exist"):
        verify_file(tmp_path / "missing.onnx")
