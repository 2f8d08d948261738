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
