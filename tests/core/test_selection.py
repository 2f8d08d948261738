"""Masks from scores: the N:M selection by in-block ranks is the stable sort's, ties and signed zeros included."""
from __future__ import annotations

import pytest
import torch

from swappass.core.selection import mask_from_scores


def sorted_nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The reference: a stable ascending sort per block; the m − n lowest are pruned."""
    blocks = scores.reshape(scores.shape[0], -1, m)
    order = torch.sort(blocks, dim=2, stable=True).indices
    mask = torch.ones_like(blocks, dtype=torch.bool)
    mask.scatter_(2, order[..., : m - n], False)
    return mask.reshape(scores.shape)


@pytest.mark.parametrize("n,m", [(1, 2), (1, 4), (2, 4), (3, 4), (2, 8), (4, 8), (3, 6), (5, 16)])
def test_nm_selection_is_the_stable_sort(n, m):
    g = torch.Generator().manual_seed(m * 10 + n)
    cases = [torch.randn(37, 4 * m, generator=g),
             torch.randint(0, 3, (37, 4 * m), generator=g).float(),  # many ties
             torch.tensor([[0.0, -0.0] * (2 * m)]),  # signed zeros are equal
             torch.where(torch.rand(9, 4 * m, generator=g) < 0.3, torch.tensor(float("inf")),
                         torch.randn(9, 4 * m, generator=g))]
    for scores in cases + [c.double() for c in cases]:
        got = mask_from_scores(scores, f"{n}:{m}")
        assert torch.equal(got, sorted_nm_mask(scores, n, m))
        assert torch.all(got.reshape(got.shape[0], -1, m).sum(-1) == n)


def test_non_finite_scores_follow_the_sort():
    scores = torch.tensor([[1.0, float("nan"), 0.5, 2.0, float("nan"), float("nan"), 0.0, -float("inf")]])
    assert torch.equal(mask_from_scores(scores, "2:4"), sorted_nm_mask(scores, 2, 4))  # NaN sorts last


@pytest.mark.parametrize("spec", ["0.6", "0.5", "0.1", "0.95"])
def test_row_selection_is_the_stable_sort(spec):
    g = torch.Generator().manual_seed(7)
    cases = [torch.randn(23, 100, generator=g), torch.randint(0, 4, (23, 100), generator=g).float(),
             torch.tensor([[0.0, -0.0] * 50]), torch.full((3, 100), 2.5)]
    for scores in cases + [c.double() for c in cases]:
        order = torch.sort(scores, dim=1, stable=True).indices
        n_pruned = 100 - round(100 * (1 - float(spec)))
        ref = torch.ones_like(scores, dtype=torch.bool)
        ref.scatter_(1, order[:, :n_pruned], False)
        assert torch.equal(mask_from_scores(scores, spec), ref)
    nan = torch.randn(4, 100, generator=g)
    nan[1, 3] = float("nan")
    order = torch.sort(nan, dim=1, stable=True).indices
    ref = torch.ones_like(nan, dtype=torch.bool)
    ref.scatter_(1, order[:, :60], False)
    assert torch.equal(mask_from_scores(nan, "0.6"), ref)
