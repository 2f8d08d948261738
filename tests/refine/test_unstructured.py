import itertools

import pytest
import torch

import swappass as sp
from swappass.core.patterns import UnstructuredSparsity
from swappass.refine.reference import swap_deltas
from swappass.refine.unstructured import best_cross_move, greedy_cross_moves, row_move_terms


def make_layer(d_out, d_in, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g, dtype=dtype)
    W = W * (0.3 + 2 * torch.rand(d_out, 1, generator=g, dtype=dtype))  # rows of different scale
    X = torch.randn(d_in, 3 * d_in, generator=g, dtype=dtype) * (0.2 + torch.rand(d_in, 1, generator=g, dtype=dtype))
    X[1::3] += 0.5 * X[::3][: X[1::3].shape[0]]
    return W, X @ X.T


def row_losses(W, G, keep):
    E = W * ~keep
    return ((E @ G) * E).sum(dim=1)


def all_cross_deltas(W, G, keep):
    """Brute force: ΔL of every cross-row move (prune u in row i, restore p in row j ≠ i) by recomputation."""
    base = row_losses(W, G, keep).sum()
    out = {}
    for i, j in itertools.permutations(range(W.shape[0]), 2):
        for u in keep[i].nonzero().flatten().tolist():
            for p in (~keep[j]).nonzero().flatten().tolist():
                k2 = keep.clone()
                k2[i, u], k2[j, p] = False, True
                out[(i, u, j, p)] = float(row_losses(W, G, k2).sum() - base)
    return out


# ---------------------------------------------------------------- the pattern






def test_layer_wide_warm_start_ranking_and_ties():
    scores = torch.tensor([[5.0, 1.0, 1.0], [1.0, 7.0, 0.5]])
    mask = sp.mask_from_scores(scores, "unstructured:0.5")  # keep 3 of 6
    # ascending: 0.5 (flat 5), then the tie 1.0 at flat 1, 2, 3: the lower two go, flat 3 stays
    assert mask.tolist() == [[True, False, False], [True, True, False]]
    W, G = make_layer(7, 12, 0)
    m = sp.warm_start(W, G, "unstructured:0.6", "wanda")
    s = sp.warm_start_scores(W, G, "wanda")
    assert int(m.sum()) == round(7 * 12 * 0.4)
    assert float(s[m].min()) >= float(s[~m].max())
    assert len(set(m.sum(dim=1).tolist())) > 1  # rows really differ


# ---------------------------------------------------------------- cross-row moves
@pytest.mark.parametrize("seed", range(4))
def test_best_cross_move_is_brute_force_best(seed):
    W, G = make_layer(4, 6, seed)
    keep = sp.warm_start(W, G, "unstructured:0.5", "magnitude")
    c = (W * ~keep) @ G
    A, u, B, p = row_move_terms(W, c, keep, G.diagonal())
    delta, i, j = best_cross_move(A, B)
    brute = all_cross_deltas(W, G, keep)
    assert delta == pytest.approx(min(brute.values()), rel=1e-9, abs=1e-9)
    assert i != j
    assert brute[(i, int(u[i]), j, int(p[j]))] == pytest.approx(delta, rel=1e-9, abs=1e-9)


def test_cross_move_top2_when_the_best_donor_is_the_best_receiver():
    A = torch.tensor([-5.0, 1.0, 2.0], dtype=torch.float64)
    B = torch.tensor([-4.0, 3.0, 0.5], dtype=torch.float64)
    # row 0 is best at both; the best over i ≠ j is min(A0 + B2, A1 + B0) = min(-4.5, -3.0)
    assert best_cross_move(A, B) == (-4.5, 0, 2)
    B = torch.tensor([-4.0, 3.0, 4.5], dtype=torch.float64)
    assert best_cross_move(A, B) == (-3.0, 1, 0)


def test_greedy_cross_moves_are_row_disjoint_and_each_best_among_unused_rows():
    g = torch.Generator().manual_seed(3)
    A, B = torch.randn(9, generator=g, dtype=torch.float64), torch.randn(9, generator=g, dtype=torch.float64)
    moves = greedy_cross_moves(A, B, threshold=0.0)
    used = set()
    for delta, i, j in moves:
        free = [r for r in range(9) if r not in used]
        best = min(float(A[a] + B[b]) for a in free for b in free if a != b)
        assert i != j and i not in used and j not in used
        assert delta == pytest.approx(best) and delta < 0
        used |= {i, j}
    free = [r for r in range(9) if r not in used]
    assert all(float(A[a] + B[b]) >= 0 for a in free for b in free if a != b)


# ---------------------------------------------------------------- the refinement
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_every_move_is_exact_and_the_result_is_locally_optimal(seed, method):
    W, G = make_layer(5, 8, seed)
    pattern = "unstructured:0.6"
    mask0 = sp.warm_start(W, G, pattern, method)
    res = sp.refine_unstructured(W, G, mask0, pattern, max_iters=1000, record_moves=True)
    assert res.info["converged"]
    keep = mask0.clone()
    loss = float(row_losses(W, G, keep).sum())
    kinds = set()
    for move in res.info["moves"]:
        kinds.add(move[0])
        if move[0] == "swap":
            _, i, u, p, delta = move
            assert keep[i, u] and not keep[i, p]
            keep[i, u], keep[i, p] = False, True
        else:
            _, i, u, j, p, delta = move
            assert i != j and keep[i, u] and not keep[j, p]
            keep[i, u], keep[j, p] = False, True
        new = float(row_losses(W, G, keep).sum())
        assert delta < 0
        assert new - loss == pytest.approx(delta, rel=1e-9, abs=1e-9)
        loss = new
    assert torch.equal(keep, res.mask)
    assert UnstructuredSparsity(0.6).is_feasible(res.mask)
    torch.testing.assert_close(res.loss_after, row_losses(W, G, res.mask))
    # local optimality: no improving intra-row swap, no improving cross-row move
    for i in range(W.shape[0]):
        D = swap_deltas(W[i], G, res.mask[i], "0.5")  # the pattern only matters for N:M here
        assert float(D.min()) >= -1e-9 * float(res.loss_after[i]) - 1e-12
    assert min(all_cross_deltas(W, G, res.mask).values()) >= -1e-9 * float(res.loss_after.mean())


def test_cross_row_moves_beat_per_row_refinement_and_never_increase_the_error():
    W, G = make_layer(12, 24, 5)
    row = sp.refine_mask(W, G, sp.warm_start(W, G, "0.5", "wanda"), "0.5", max_iters=200)
    mask0 = sp.warm_start(W, G, "unstructured:0.5", "wanda")
    res = sp.refine_mask(W, G, mask0, "unstructured:0.5", max_iters=200)
    assert res.info["converged"] and res.info["cross_moves"] > 0
    assert res.total_after <= res.total_before
    assert res.total_after < row.total_after  # same total count (12 · 12), more freedom
    assert int(res.mask.sum()) == int(row.mask.sum())


def test_monotone_in_iterations_and_deterministic():
    W, G = make_layer(10, 20, 8, dtype=torch.float32)
    mask0 = sp.warm_start(W, G, "unstructured:0.6", "magnitude")
    exact = lambda m: float(sp.layer_loss(W.double(), G.double(), m).sum())  # noqa: E731
    previous = exact(mask0)
    for iters in (1, 2, 3, 5, 50):
        res = sp.refine_mask(W, G, mask0, "unstructured:0.6", max_iters=iters)
        now = exact(res.mask)
        assert now <= previous * (1 + 1e-6)
        previous = now
        again = sp.refine_mask(W, G, mask0, "unstructured:0.6", max_iters=iters)
        assert torch.equal(res.mask, again.mask) and torch.equal(res.swaps, again.swaps)


def test_capped_cross_steps():
    W, G = make_layer(6, 10, 2)
    mask0 = sp.warm_start(W, G, "unstructured:0.5", "magnitude")
    res = sp.refine_unstructured(W, G, mask0, "unstructured:0.5", max_iters=1, max_cross_steps=1)
    assert res.info["cross_steps"] <= 1
    assert UnstructuredSparsity(0.5).is_feasible(res.mask)


def test_rows_may_empty_or_fill_completely():
    # Row 0 has tiny weights, row 1 huge ones: the optimum prunes all of row 0 and keeps all of row 1.
    W = torch.tensor([[0.01, -0.02, 0.01, 0.03], [5.0, -4.0, 6.0, 3.0]], dtype=torch.float64)
    G = torch.eye(4, dtype=torch.float64) + 0.1
    mask0 = torch.tensor([[True, True, False, False], [True, True, False, False]])
    res = sp.refine_mask(W, G, mask0, "unstructured:0.5")
    assert res.mask.tolist() == [[False] * 4, [True] * 4]
    assert res.info["converged"]


def test_bad_inputs_are_named():
    W, G = make_layer(4, 6, 0)
    with pytest.raises(ValueError, match="blk.3.v: mask does not satisfy pattern unstructured:0.5"):
        sp.refine_mask(W, G, torch.ones(4, 6, dtype=torch.bool), "unstructured:0.5", name="blk.3.v")
    with pytest.raises(sp.InputError, match="needs an unstructured pattern"):
        sp.refine_unstructured(W, G, sp.warm_start(W, G, "0.5"), "0.5")


def test_a_fast_backend_without_unstructured_support_falls_back_to_torch(monkeypatch):
    from swappass.kernels import registry

    def make(pattern, G):
        if isinstance(pattern, UnstructuredSparsity):
            raise NotImplementedError("fixed per-row counts only")
        raise AssertionError("not used here")

    registry.register_backend("fake", lambda device: True, make)
    monkeypatch.setattr(registry, "available_backends", lambda device: ["fake"])
    try:
        _check_fake_backend_fallback()
    finally:
        registry.unregister_backend("fake")


def _check_fake_backend_fallback():
    W, G = make_layer(5, 8, 1)
    mask0 = sp.warm_start(W, G, "unstructured:0.5", "wanda")
    res = sp.refine_mask(W, G, mask0, "unstructured:0.5")  # backend="auto"
    assert res.info["backend"] == "torch"
    assert torch.equal(res.mask, sp.refine_mask(W, G, mask0, "unstructured:0.5", backend="torch").mask)
    with pytest.raises(NotImplementedError, match="fixed per-row counts"):
        sp.refine_mask(W, G, mask0, "unstructured:0.5", backend="fake")
