import itertools

import pytest
import torch

import swappass as sp
from swappass.core.patterns import parse_pattern
from swappass.kernels.torch_search import nm_diag_blocks, search_nm_torch, search_rows_torch
from swappass.refine.reference import best_swap_reference, refine_mask_reference, swap_deltas


def make_layer(d_out, d_in, seed, dtype=torch.float64, tokens=None):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g, dtype=dtype)
    X = torch.randn(d_in, tokens or 2 * d_in, generator=g, dtype=dtype)
    X = X * (0.2 + torch.rand(d_in, 1, generator=g, dtype=dtype))  # uneven channel norms
    X[1::3] += 0.5 * X[::3][: X[1::3].shape[0]]  # correlated channels
    return W, X @ X.T


def brute_loss(w, G, keep):
    e = w * ~keep
    return float(e @ G @ e)


# ---------------------------------------------------------------- Eq. 3 and the best pair
@pytest.mark.parametrize("pattern", ["0.5", "0.75", "2:4", "1:4"])
@pytest.mark.parametrize("seed", range(3))
def test_delta_equals_brute_force_for_every_pair(pattern, seed):
    W, G = make_layer(3, 8, seed)
    mask = sp.warm_start(W, G, pattern, "magnitude")
    pat = parse_pattern(pattern)
    for i in range(W.shape[0]):
        w, keep = W[i], mask[i]
        D = swap_deltas(w, G, keep, pat)
        base = brute_loss(w, G, keep)
        for u, p in itertools.product(range(8), range(8)):
            feasible = bool(keep[u]) and not bool(keep[p])
            if pattern.endswith(":4"):
                feasible &= u // 4 == p // 4
            if not feasible:
                assert D[u, p] == float("inf")
                continue
            k2 = keep.clone()
            k2[u], k2[p] = False, True
            assert float(D[u, p]) == pytest.approx(brute_loss(w, G, k2) - base, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("pattern", ["0.6", "2:4", "4:8"])
def test_first_swap_is_brute_force_best(pattern):
    W, G = make_layer(5, 16, 7)
    mask = sp.warm_start(W, G, pattern, "wanda")
    res = sp.refine_mask(W, G, mask, pattern, max_iters=1)
    for i in range(W.shape[0]):
        delta, u, p = best_swap_reference(W[i], G, mask[i], pattern)
        expected = mask[i].clone()
        if delta < 0:
            expected[u], expected[p] = False, True
        assert torch.equal(res.mask[i], expected)


def test_paper_counterexample_is_solved_jointly():
    # Scalar X (G = 11ᵀ): pruned {+10, −1}, kept {+9, −9}; the error is (sum of pruned weights)².
    w = torch.tensor([[10.0, -1.0, 9.0, -9.0]], dtype=torch.float64)
    G = torch.ones(4, 4, dtype=torch.float64)
    keep = torch.tensor([[False, False, True, True]])
    res = sp.refine_mask(w, G, keep, "0.5", max_iters=1)
    assert res.loss_before.item() == 81.0
    assert res.mask[0].tolist() == [False, True, True, False]  # joint best: prune −9, restore −1
    assert res.loss_after.item() == 1.0
    # Each side chosen on its own (best single restore: +10, best single prune: −9) reaches 100.
    separate = torch.tensor([[True, False, True, False]])
    assert sp.layer_loss(w, G, separate).item() == 100.0
    # Run to convergence: the next swap (prune +9, restore +10) reaches the optimum 0.
    assert sp.refine_mask(w, G, keep, "0.5").loss_after.item() == 0.0


# ---------------------------------------------------------------- agreement with the reference
@pytest.mark.parametrize("pattern", ["0.6", "0.5", "2:4", "4:8"])
@pytest.mark.parametrize("method", ["magnitude", "wanda", "ria"])
def test_refine_matches_reference_float64(pattern, method):
    W, G = make_layer(12, 32, 3)
    mask = sp.warm_start(W, G, pattern, method)
    res = sp.refine_mask(W, G, mask, pattern, max_iters=50, backend="torch")
    ref = refine_mask_reference(W, G, mask, pattern, max_iters=50)
    assert torch.equal(res.mask, ref.mask)
    assert torch.equal(res.swaps, ref.swaps)
    assert res.iters == ref.iters
    torch.testing.assert_close(res.loss_after, ref.loss_after)


@pytest.mark.parametrize("pattern", ["0.6", "2:4"])
def test_refine_float32_matches_float64_reference(pattern):
    W, G = make_layer(16, 48, 11)
    mask = sp.warm_start(W, G, pattern, "wanda")
    res = sp.refine_mask(W.float(), G.float(), mask, pattern, max_iters=30)
    ref = refine_mask_reference(W, G, mask, pattern, max_iters=30)
    assert res.loss_after.dtype == torch.float32
    assert torch.equal(res.mask, ref.mask)


@pytest.mark.parametrize("pattern", ["0.6", "2:4"])
def test_refine_is_independent_of_batching_and_chunking(pattern):
    W, G = make_layer(10, 24, 5)
    mask = sp.warm_start(W, G, pattern, "ria")
    full = sp.refine_mask(W, G, mask, pattern)
    one = sp.refine_mask(W, G, mask, pattern, batch_rows=1)
    assert torch.equal(full.mask, one.mask) and torch.equal(full.swaps, one.swaps)
    # tiny score chunks (a few u at a time) give the same choice as one big chunk
    pat = parse_pattern(pattern)
    w, keep = W, mask
    c = (w * ~keep) @ G
    gd = G.diagonal()
    if pattern == "0.6":
        big = search_rows_torch(w, c, keep, G, gd)
        small = search_rows_torch(w, c, keep, G, gd, budget_elems=24 * 3)
    else:
        blocks = nm_diag_blocks(G, pat.m)
        big = search_nm_torch(w, c, keep, blocks, gd, pat.m)
        small = search_nm_torch(w, c, keep, blocks, gd, pat.m, budget_elems=1)
    for x, y in zip(big, small):
        assert torch.equal(x, y)


def test_search_ties_go_to_lowest_u_then_p():
    # All weights equal and G = I: every feasible pair has the same ΔL = 0.
    w = torch.ones(1, 8, dtype=torch.float64)
    G = torch.eye(8, dtype=torch.float64)
    keep = torch.tensor([[False, True, False, True, True, False, True, False]])
    c = (w * ~keep) @ G
    choice = search_rows_torch(w, c, keep, G, G.diagonal(), budget_elems=16)
    assert (int(choice.u), int(choice.p)) == (1, 0)
    nm = search_nm_torch(w, c, keep, nm_diag_blocks(G, 4), G.diagonal(), 4)
    assert (int(nm.u), int(nm.p)) == (1, 0)
    assert best_swap_reference(w[0], G, keep[0], "0.5")[1:] == (1, 0)


# ---------------------------------------------------------------- invariants
@pytest.mark.parametrize("pattern", ["0.6", "2:4", "1:4"])
def test_monotone_decrease_and_pattern_invariants(pattern):
    W, G = make_layer(20, 40, 2, dtype=torch.float32)
    pat = parse_pattern(pattern)
    mask = sp.warm_start(W, G, pattern, "magnitude")
    exact = lambda m: sp.layer_loss(W.double(), G.double(), m)  # noqa: E731
    previous = exact(mask)
    for _ in range(6):
        res = sp.refine_mask(W, G, mask, pattern, max_iters=2)
        assert pat.is_feasible(res.mask)
        now = exact(res.mask)
        assert torch.all(now <= previous + 1e-9 * previous.abs())
        assert torch.all(res.loss_after <= res.loss_before)
        previous, mask = now, res.mask


@pytest.mark.parametrize("pattern", ["0.5", "0.75", "2:4", "2:8"])
def test_converged_rows_have_no_improving_swap(pattern):
    W, G = make_layer(8, 16, 4)
    mask = sp.warm_start(W, G, pattern, "magnitude")
    res = sp.refine_mask(W, G, mask, pattern, max_iters=1000)
    assert res.iters < 1000
    for i in range(W.shape[0]):
        base = brute_loss(W[i], G, res.mask[i])
        keep = res.mask[i]
        for u, p in itertools.product(range(16), range(16)):
            if not (keep[u] and not keep[p]):
                continue
            if ":" in pattern and u // int(pattern.split(":")[1]) != p // int(pattern.split(":")[1]):
                continue
            k2 = keep.clone()
            k2[u], k2[p] = False, True
            assert brute_loss(W[i], G, k2) >= base * (1 - 1e-9)


def test_max_iters_zero_returns_warm_start_and_result_fields():
    W, G = make_layer(4, 8, 1)
    mask = sp.warm_start(W, G, "0.5", "wanda")
    res = sp.refine_mask(W, G, mask, "0.5", max_iters=0)
    assert torch.equal(res.mask, mask) and res.iters == 0 and int(res.swaps.sum()) == 0
    torch.testing.assert_close(res.loss_before, sp.layer_loss(W, G, mask))
    full = sp.refine_mask(W, G, mask, "0.5")
    assert 0 < full.relative_reduction < 1
    assert full.relative_reduction == pytest.approx((full.total_before - full.total_after) / full.total_before)


def test_layer_loss_definition():
    W, G = make_layer(3, 8, 0)
    mask = sp.warm_start(W, G, "0.5", "magnitude")
    E = W * ~mask
    torch.testing.assert_close(sp.layer_loss(W, G, mask), torch.einsum("ri,ij,rj->r", E, G, E))


# ---------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors():
    W, G = make_layer(4, 8, 0)
    mask = sp.warm_start(W, G, "0.5", "wanda")
    with pytest.raises(ValueError, match="2-D tensor"):
        sp.refine_mask(W[0], G, mask, "0.5")
    with pytest.raises(ValueError, match="square"):
        sp.refine_mask(W, G[:, :7], mask, "0.5")
    with pytest.raises(ValueError, match="G is 7×7 but W has d_in = 8"):
        sp.refine_mask(W, G[:7, :7], mask, "0.5")
    with pytest.raises(ValueError, match="mask shape"):
        sp.refine_mask(W, G, mask[:3], "0.5")
    with pytest.raises(ValueError, match="bool"):
        sp.refine_mask(W, G, mask.float(), "0.5")
    bad = mask.clone()
    bad[2] = True
    with pytest.raises(ValueError, match="row 2 keeps 8 weights"):
        sp.refine_mask(W, G, bad, "0.5")
    row_ok = torch.tensor([[True] * 4 + [False] * 4] * 4)  # feasible for 50% per row, not for 2:4
    with pytest.raises(ValueError, match=r"row 0, block 0 \(inputs 0..3\) keeps 4"):
        sp.refine_mask(W, G, row_ok, "2:4")
    Wn = W.clone()
    Wn[1, 3] = float("nan")
    with pytest.raises(ValueError, match=r"W \(shape 4×8\) has a non-finite value at \(1, 3\)"):
        sp.refine_mask(Wn, G, mask, "0.5")
    Gn = G.clone()
    Gn[0, 5] = float("inf")
    with pytest.raises(ValueError, match="G .* non-finite"):
        sp.refine_mask(W, Gn, mask, "0.5")
    with pytest.raises(ValueError, match="not divisible by M = 4"):
        sp.refine_mask(W[:, :6], G[:6, :6], mask[:, :6], "2:4")
    with pytest.raises(ValueError, match="max_iters"):
        sp.refine_mask(W, G, mask, "0.5", max_iters=-1)
    with pytest.raises(ValueError, match="unknown or unavailable refinement backend"):
        sp.refine_mask(W, G, mask, "0.5", backend="fpga")


def _target_error(W, V, G, mask):
    E = W - V * mask
    return torch.einsum("ri,ij,rj->r", E, G, E)


@pytest.mark.parametrize("pattern", ["0.5", "2:4"])
def test_a_target_refines_other_values_against_the_original_weights(pattern):
    """With refitted values V on the kept entries, the swaps minimise ‖(W − M⊙V) X‖² and end 1-swap optimal."""
    W, G = make_layer(12, 16, 4)
    mask = sp.warm_start(W, G, pattern, "wanda")
    V = torch.where(mask, W + 0.3 * torch.randn(W.shape, dtype=W.dtype, generator=torch.Generator().manual_seed(5)),
                    W)
    results = {b: sp.refine_mask(V, G, mask, pattern, target=W, backend=b) for b in ("torch", "cpu")}
    res = results["torch"]
    assert torch.equal(res.mask, results["cpu"].mask) and torch.equal(res.swaps, results["cpu"].swaps)
    torch.testing.assert_close(res.loss_before, _target_error(W, V, G, mask))
    torch.testing.assert_close(res.loss_after, _target_error(W, V, G, res.mask))
    assert bool((res.loss_after <= res.loss_before * (1 + 1e-12)).all()) and int(res.swaps.sum()) > 0
    parse_pattern(pattern).check_mask(res.mask)
    m = parse_pattern(pattern).m if ":" in pattern else None
    for r in range(W.shape[0]):  # no single swap improves any row any more
        keep = res.mask[r]
        base = float(_target_error(W[r:r + 1], V[r:r + 1], G, keep[None])[0])
        for u in keep.nonzero().flatten().tolist():
            for p in (~keep).nonzero().flatten().tolist():
                if m and u // m != p // m:
                    continue
                trial = keep.clone()
                trial[u], trial[p] = False, True
                assert float(_target_error(W[r:r + 1], V[r:r + 1], G, trial[None])[0]) >= base * (1 - 1e-9)


def test_without_a_target_the_result_is_the_mask_only_one():
    W, G = make_layer(8, 16, 6)
    mask = sp.warm_start(W, G, "0.5", "wanda")
    plain, same = sp.refine_mask(W, G, mask, "0.5"), sp.refine_mask(W, G, mask, "0.5", target=W.clone())
    assert torch.equal(plain.mask, same.mask) and torch.equal(plain.loss_after, same.loss_after)
