import re

import pytest
import torch

from swappass.core.masks import PrunedWeight, load_masks, save_masks
from swappass.methods.warmstart import mask_from_scores


def test_masks_roundtrip(tmp_path):
    torch.manual_seed(0)
    a = PrunedWeight("model.layers.0.q.weight", mask_from_scores(torch.randn(5, 12), "2:4"), "2:4")
    b = PrunedWeight("h.0.attn.c_attn.weight", mask_from_scores(torch.randn(9, 7), "0.6").T.contiguous(), "row:0.6", True)
    path = save_masks([a, b], tmp_path / "m.safetensors")
    back = load_masks(path)
    assert set(back) == {a.name, b.name}
    for r in (a, b):
        got = back[r.name]
        assert torch.equal(got.mask, r.mask) and got.pattern == r.pattern and got.transposed == r.transposed
        got.check()
    assert back[b.name].user_mask.shape == (9, 7)
    assert back[a.name].sparsity == pytest.approx(0.5)


def test_pruned_weight_check_names_parameter():
    bad = PrunedWeight("enc.fc1.weight", torch.ones(2, 8, dtype=torch.bool), "2:4")
    with pytest.raises(ValueError, match="enc.fc1.weight"):
        bad.check()


# ------------------------------------------------------------------------------------------------ pruned weights
@pytest.mark.parametrize("pattern, broken, message", [
    ("row:0.5", lambda m: m.__setitem__((1, int((~m[1]).nonzero()[0])), True), "row 1 keeps 5 weights"),
    ("2:4", lambda m: m.__setitem__((2, int((~m[2, :4]).nonzero()[0])), True), "row 2, block 0 (inputs 0..3) keeps 3"),
    ("unstructured:0.5", lambda m: m.__setitem__((0, int((~m[0]).nonzero()[0])), True), "keeps 25 weights"),
])
def test_check_pruned_weight_finds_a_broken_pattern(pattern, broken, message):
    from swappass.core.errors import PatternViolationError
    from swappass.core.masks import check_pruned_weight

    torch.manual_seed(0)
    W = torch.randn(6, 8)
    mask = mask_from_scores(W.abs(), pattern)
    check_pruned_weight(W * mask, mask, pattern, "fc.weight")  # feasible: passes
    broken(mask)
    with pytest.raises(PatternViolationError, match=f"fc.weight: the mask breaks pattern .*{re.escape(message)}"):
        check_pruned_weight(None, mask, pattern, "fc.weight")


def test_check_pruned_weight_finds_leaks_and_non_finite_values_in_the_stored_orientation():
    from swappass.core.errors import PatternViolationError
    from swappass.core.masks import check_pruned_weight

    torch.manual_seed(0)
    W = torch.randn(6, 8)  # the user view (d_out × d_in); Conv1D stores it transposed
    mask = mask_from_scores(W.abs(), "2:4")
    stored, stored_mask = (W * mask).T.contiguous(), mask.T.contiguous()
    check_pruned_weight(stored, stored_mask, "2:4", "h.0.c_attn.weight", transposed=True)
    with pytest.raises(PatternViolationError, match="breaks pattern"):  # the pattern applies to mask.T
        check_pruned_weight(stored, stored_mask, "2:4", "h.0.c_attn.weight", transposed=False)
    leaky = stored.clone()
    j, i = (int(v) for v in (~stored_mask).nonzero()[0])
    leaky[j, i] = 0.5
    with pytest.raises(PatternViolationError, match=rf"1 weights are non-zero where the mask prunes .*row {i}"):
        check_pruned_weight(leaky, stored_mask, "2:4", "h.0.c_attn.weight", transposed=True)
    nan = stored.clone()
    nan[tuple(stored_mask.nonzero()[0].tolist())] = float("nan")
    with pytest.raises(PatternViolationError, match="non-finite"):
        PrunedWeight("h.0.c_attn.weight", stored_mask, "2:4", True).check_weight(nan)
