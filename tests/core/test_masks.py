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
