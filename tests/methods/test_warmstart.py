"""Warm starts: feasible masks, the scores' definitions, ties, errors."""
import pytest
import torch

import swappass as sp
from swappass.core.patterns import parse_pattern


def _layer(d_out=6, d_in=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g)
    X = torch.randn(d_in, 50, generator=g) * torch.rand(d_in, 1, generator=g)
    return W, X @ X.T


@pytest.mark.parametrize("method", ["magnitude", "wanda", "ria"])
@pytest.mark.parametrize("pattern", ["0.6", "2:4", "4:8", "row:0.25"])
def test_warm_start_feasible(method, pattern):
    W, G = _layer()
    mask = sp.warm_start(W, G, pattern, method)
    assert mask.dtype == torch.bool and mask.shape == W.shape
    assert parse_pattern(pattern).is_feasible(mask)


def test_warm_start_scores_match_definitions():
    W, G = _layer()
    norm = G.diagonal().sqrt()
    torch.testing.assert_close(sp.warm_start_scores(W, G, "magnitude"), W.abs())
    torch.testing.assert_close(sp.warm_start_scores(W, G, "wanda"), W.abs() * norm)
    A = W.abs()
    ria = (A / A.sum(0, keepdim=True) + A / A.sum(1, keepdim=True)) * norm.sqrt()
    torch.testing.assert_close(sp.warm_start_scores(W, G, "ria"), ria)


def test_warm_start_keeps_highest_scores():
    W, G = _layer(d_out=4, d_in=12)
    mask = sp.warm_start(W, G, "0.5", "wanda")
    score = sp.warm_start_scores(W, G, "wanda")
    for i in range(W.shape[0]):
        assert score[i][mask[i]].min() >= score[i][~mask[i]].max()


def test_warm_start_ties_deterministic_lowest_index_pruned_first():
    W = torch.ones(2, 8)
    mask = sp.warm_start(W, None, "0.5", "magnitude")
    assert mask[0].tolist() == [False] * 4 + [True] * 4
    nm = sp.warm_start(W, None, "2:4", "magnitude")
    assert nm[0].tolist() == [False, False, True, True] * 2
    assert torch.equal(mask, sp.warm_start(W, None, "0.5", "magnitude"))


def test_warm_start_errors():
    W, G = _layer()
    with pytest.raises(ValueError, match="unknown warm start"):
        sp.warm_start(W, G, "0.5", "random")
    with pytest.raises(ValueError, match=r"Gram matrix G \(d_in × d_in = 16×16\) is required"):
        sp.warm_start(W, None, "0.5", "wanda")
    with pytest.raises(ValueError, match="G is 15×15 but W has d_in = 16"):
        sp.warm_start(W, G[:15, :15], "0.5", "wanda")
