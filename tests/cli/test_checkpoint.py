"""Level checkpoints on disk: a round trip with changed weights, and a foreign state refused."""
from __future__ import annotations

import pytest
import torch

import swappass as sp
from swappass.cli.checkpoint import LevelCheckpoints


def test_level_checkpoint_round_trip_with_changed_weights(tmp_path):
    from tiny_hf import build, calib

    states = []
    _, report = sp.sparsify(build("gpt2"), calib(2), pattern="2:4", max_iters=2, progress=False,
                            checkpoint=states.append)
    state = states[1]
    state.weights = {state.rows[0].param: torch.randn(4, 4)}  # as a refit would leave it
    ckpt = LevelCheckpoints(tmp_path / "ck")
    for s in states[:2]:
        ckpt.save_level(s)
    back = ckpt.load_levels()
    assert [s.level for s in back] == [0, 1]
    for s, t in zip(states[:2], back):
        assert [r.to_dict() for r in s.rows] == [r.to_dict() for r in t.rows]
        assert all(torch.equal(r.mask(), q.mask()) for r, q in zip(s.rows, t.rows))
        assert s.weights.keys() == t.weights.keys() and all(torch.equal(s.weights[k], t.weights[k]) for k in s.weights)
        assert t.settings == s.settings
    # a changed weight is restored as saved, not re-masked from the original
    model = build("gpt2")
    restored_name = state.rows[0].param
    states[1] = back[1]
    mask = states[1].rows[0].mask()
    refitted = torch.full(dict(model.named_parameters())[restored_name].shape, 0.25) * mask
    states[1].weights[restored_name] = refitted
    sp.sparsify(model, calib(2), pattern="2:4", max_iters=2, progress=False, resume=states[:2])
    assert torch.equal(dict(model.named_parameters())[restored_name].detach(), refitted)
    # a saved weight that is non-zero where its mask prunes is refused before anything is written
    states[1].weights[restored_name] = torch.full_like(refitted, 0.25)
    with pytest.raises(sp.InputError, match="resume state of level 1 is damaged.*non-zero where the mask prunes"):
        sp.sparsify(build("gpt2"), calib(2), pattern="2:4", max_iters=2, progress=False, resume=states[:2])


def test_resume_state_from_another_model_is_refused():
    from tiny_hf import build, calib

    states = []
    sp.sparsify(build("llama"), calib(2), pattern="2:4", max_iters=1, progress=False, checkpoint=states.append)
    with pytest.raises(ValueError, match="does not match level 0"):
        sp.sparsify(build("opt"), calib(2), pattern="2:4", max_iters=1, progress=False, resume=states[:2])
