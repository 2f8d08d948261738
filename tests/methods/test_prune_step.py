"""The per-site pruning step: weights sharing a Gram matrix, refined in one call, split again."""
import pytest
import torch

import swappass as sp
from swappass.core.patterns import parse_pattern


def layers(seed=0, d_in=16):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(d_in, 64, generator=g, dtype=torch.float64)
    X *= 0.3 + torch.rand(d_in, 1, generator=g, dtype=torch.float64)  # uneven channel norms
    Ws = [torch.randn(d_out, d_in, generator=g, dtype=torch.float64) for d_out in (12, 4, 7)]
    return Ws, X @ X.T


@pytest.mark.parametrize("pattern", ["0.6", "2:4"])
@pytest.mark.parametrize("warm", ["wanda", "ria", "magnitude"])
def test_grouped_refinement_equals_refining_each_weight(pattern, warm):
    Ws, G = layers()
    results = sp.prune_weights(Ws, G, pattern, warm_start=warm, max_iters=20, backend="torch")
    for W, res in zip(Ws, results):
        start = sp.warm_start(W, G, pattern, warm)  # each weight has its own warm start (RIA is per layer)
        alone = sp.refine_mask(W, G, start, pattern, 20, backend="torch")
        assert torch.equal(res.mask, alone.mask)
        assert res.loss_warm == pytest.approx(alone.total_before, rel=1e-12)
        assert res.loss_final == pytest.approx(alone.total_after, rel=1e-12)
        assert res.swaps == int(alone.swaps.sum()) and res.weight is None
        parse_pattern(pattern).check_mask(res.mask)


def test_unstructured_budget_is_per_weight():
    Ws, G = layers(1)
    results = sp.prune_weights(Ws, G, "unstructured:0.5", max_iters=10)
    for W, res in zip(Ws, results):
        assert int(res.mask.sum()) == round(W.numel() * 0.5)
        assert res.loss_final <= res.loss_warm


@pytest.mark.parametrize("pattern", ["0.5", "2:4"])
def test_alternating_refits_and_swaps_never_end_above_the_first_refit(pattern):
    """Round 2 refines for the refitted values, so its refit's error is at most the first round's refitted one."""
    Ws, G = layers(0, d_in=32)
    once = sp.prune_weights(Ws, G, pattern, refit="lstsq", max_iters=50)
    twice = sp.prune_weights(Ws, G, pattern, refit="lstsq", max_iters=50, refit_rounds=3)
    for a, b, W in zip(once, twice, Ws):
        parse_pattern(pattern).check_mask(b.mask)
        assert b.loss_refit <= a.loss_refit * (1 + 1e-6)
        assert torch.equal(b.weight == 0, ~b.mask) or bool((b.weight[~b.mask] == 0).all())
        assert b.loss_final == pytest.approx(float(sp.layer_loss(W, G, b.mask).sum()), rel=1e-9)
    assert sum(b.loss_refit for b in twice) < sum(a.loss_refit for a in once)  # it changes something here


def test_refit_rounds_need_swaps_and_the_lstsq_refit():
    Ws, G = layers(1)
    with pytest.raises(sp.InputError, match="refit_rounds=2 .*refine='swaps', refit='lstsq'"):
        sp.prune_weights(Ws, G, "0.5", refit=False, refit_rounds=2)
    with pytest.raises(sp.InputError, match="per-row or N:M"):
        sp.prune_weights(Ws, G, "unstructured:0.5", refit="lstsq", refit_rounds=2)
