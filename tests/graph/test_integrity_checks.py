"""The pass refuses what it must not write: a result that breaks its pattern, a resume from other weights; and it
says when calibration inputs cannot inform a mask (all zero, collinear)."""
from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from tiny_hf import build, calib
from torch import nn

import swappass as sp
from swappass.core.errors import CalibrationWarning, PatternViolationError


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_a_result_that_breaks_its_pattern_is_refused_before_it_is_written(monkeypatch):
    import swappass.graph.conversion as conversion

    real = conversion.prune_weights

    def one_weight_too_many(*a, **k):
        results = real(*a, **k)
        mask = results[0].mask.clone()
        mask[0, int((~mask[0]).nonzero()[0])] = True  # row 0 keeps one weight more than 2:4 allows
        return [dataclasses.replace(results[0], mask=mask)] + results[1:]

    monkeypatch.setattr(conversion, "prune_weights", one_weight_too_many)
    model = build("llama")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(PatternViolationError, match=r"model\.layers\.0\.self_attn\.q_proj\.weight: the mask breaks "
                                                    r"pattern 2:4: row 0, block \d+ .* keeps 3 weights"):
        sp.sparsify(model, calib(2), pattern="2:4", max_iters=1, progress=False)
    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n].detach()) for n in before)  # nothing was written


def test_resume_from_other_dense_weights_is_refused():
    states = []
    sp.sparsify(build("llama"), calib(2), pattern="2:4", max_iters=1, progress=False, checkpoint=states.append)
    assert states[0].model_sha256 and len({s.model_sha256 for s in states}) == 1
    with pytest.raises(sp.InputError, match="made from a model with other weights"):
        sp.sparsify(build("llama", seed=1), calib(2), pattern="2:4", max_iters=1, progress=False, resume=states[:2])
    partly_pruned = build("llama")  # the interrupted call's own model, already pruned in place
    sp.sparsify(partly_pruned, calib(2), pattern="2:4", max_iters=1, progress=False)
    with pytest.raises(sp.InputError, match="not one pruned already"):
        sp.sparsify(partly_pruned, calib(2), pattern="2:4", max_iters=1, progress=False, resume=states[:2])
    sp.sparsify(build("llama"), calib(2), pattern="2:4", max_iters=1, progress=False, resume=states[:2])  # same: ok


@pytest.mark.parametrize("inputs, message", [
    (torch.zeros(3, 5, 8), "all calibration inputs are zero"),
    (torch.randn(1, 1, 8).repeat(3, 5, 1), "the calibration inputs are collinear"),
])
def test_degenerate_calibration_inputs_are_warned_about_and_noted(inputs, message):
    torch.manual_seed(0)
    with pytest.warns(CalibrationWarning, match=f"fc1: {message}") as caught:
        _, report = sp.sparsify(TwoLayers(), [inputs], pattern="0.5", max_iters=2, progress=False)
    assert report["fc1"].status == "pruned" and report["fc1"].reason.startswith(f"warning: {message}")
    # fc2 sees the same fc1 output on every token (its bias, or one vector): collinear as well
    assert [w for w in caught if "fc2: the calibration inputs are collinear" in str(w.message)]
    assert report["fc2"].reason.startswith("warning: the calibration inputs are collinear")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)  # real inputs: no warning
        sp.sparsify(TwoLayers(), [torch.randn(3, 5, 8)], pattern="0.5", max_iters=2, progress=False)
