import math
from types import SimpleNamespace

import pytest
import torch

import swappass as sp
from swappass.core.patterns import NMSparsity, parse_pattern

# ---------------------------------------------------------------- ChannelStats






# ---------------------------------------------------------------- a plain per-row DSnoT, for comparison
def dsnot_loop(W, mask, mu, var, scaler, pattern, init=None, cycles=50, thr=0.1, power=1.0, sign_check=None):
    """DESIGN.md §6 DSnoT, one row at a time with Python lists (the same count-keeping rules as dsnot_refine)."""
    pattern = parse_pattern(pattern)
    nm = isinstance(pattern, NMSparsity)
    sign_check = nm if sign_check is None else sign_check
    sign = lambda v: (v > 0) - (v < 0)  # noqa: E731
    out = mask.clone()
    d = W.shape[1]
    for i in range(W.shape[0]):
        w, keep = W[i].tolist(), mask[i].tolist()
        D = [w[j] * float(mu[j]) for j in range(d)]
        eps = sum(D[j] for j in range(d) if not keep[j])
        sign0 = sign(eps)
        gm = [0.0 if keep[j] else (D[j] / float(var[j]) ** power if power else D[j]) for j in range(d)]
        grow_list = sorted(range(d), key=lambda j: (gm[j], j))
        wanda = [abs(w[j]) * math.sqrt(float(scaler[j])) for j in range(d)]
        if nm:
            scores = wanda if init is None else init[i].tolist()
            cand = [scores[j] if keep[j] else math.inf for j in range(d)]
        else:
            kept = sorted((j for j in range(d) if keep[j]), key=lambda j: (wanda[j], j))
            neg = [t for t, j in enumerate(kept) if D[j] < 0]
            pos = [t for t, j in enumerate(kept) if D[j] > 0]
            positions = neg + [0] * (len(kept) - len(neg) - len(pos)) + pos[::-1]
            prune_list = [kept[t] for t in positions]
            plo, phi = 0, len(kept) - 1
        lo, hi = 0, d - 1
        for _ in range(cycles):
            g_ptr = hi if eps > 0 else lo
            if eps > 0:
                hi -= 1
            else:
                lo += 1
            in_range = 0 <= g_ptr < d
            grow = grow_list[min(max(g_ptr, 0), d - 1)]
            if nm:
                b = grow - grow % pattern.m
                block = cand[b : b + pattern.m]
                best = min(block)
                prune = b + block.index(best)
                cand[prune] = math.inf
                exhausted = best == math.inf
            else:
                p_ptr = phi if eps < 0 else plo
                if eps < 0:
                    phi -= 1
                else:
                    plo += 1
                in_range &= 0 <= p_ptr < len(kept)
                prune = prune_list[min(max(p_ptr, 0), len(kept) - 1)]
                exhausted = False
            if not in_range:
                break
            if not keep[prune] or keep[grow] or exhausted:
                continue  # the row skips this cycle
            after = eps + D[prune] - D[grow]
            if not abs(eps) > thr or (sign_check and sign(after) != sign0):
                break
            keep[prune], keep[grow] = False, True
            eps = after
        out[i] = torch.tensor(keep)
    return out


def layer(d_out, d_in, seed, seq=16, n_seq=6):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    X = torch.randn(n_seq, seq, d_in, generator=g, dtype=torch.float64) * (0.2 + torch.rand(d_in, generator=g, dtype=torch.float64))
    X += 0.05 * torch.randn(d_in, generator=g, dtype=torch.float64)  # channel means: DSnoT's signal
    stats = sp.ChannelStats(d_in)
    stats.update(X)
    gram = sp.GramAccumulator(d_in, dtype=torch.float64)
    gram.update(X)
    return W, gram.G, stats


@pytest.mark.parametrize("pattern", ["0.6", "0.5", "2:4", "4:8"])
@pytest.mark.parametrize("d_in, seed", [(8, 0), (16, 1), (48, 2), (96, 3)])
@pytest.mark.parametrize("sign_check, power", [(None, 1.0), (True, 1.0), (False, 0.0), (None, 2.0)])
def test_matches_a_plain_per_row_implementation(pattern, d_in, seed, sign_check, power):
    W, G, stats = layer(10, d_in, seed)
    mask = sp.warm_start(W, G, pattern, "wanda")
    res = sp.dsnot_refine(W, G, mask, stats, pattern, sign_check=sign_check, pow_of_var_regrowing=power)
    ref = dsnot_loop(W, mask, stats.mean_seq_sum, stats.var, stats.scaler_row, pattern, sign_check=sign_check, power=power)
    assert torch.equal(res.mask, ref)
    assert parse_pattern(pattern).is_feasible(res.mask)
    torch.testing.assert_close(res.loss_after, sp.layer_loss(W, G, res.mask))
    again = sp.dsnot_refine(W, G, mask, stats, pattern, sign_check=sign_check, pow_of_var_regrowing=power)
    assert torch.equal(res.mask, again.mask) and torch.equal(res.swaps, again.swaps)


def test_nm_prune_candidates_follow_the_given_initial_scores():
    W, G, stats = layer(6, 16, 4)
    init = torch.rand(6, 16, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    mask = sp.mask_from_scores(init, "2:4")
    res = sp.dsnot_refine(W, G, mask, stats, "2:4", init_scores=init)
    ref = dsnot_loop(W, mask, stats.mean_seq_sum, stats.var, stats.scaler_row, "2:4", init=init)
    assert torch.equal(res.mask, ref) and sp.NMSparsity(2, 4).is_feasible(res.mask)


# ---------------------------------------------------------------- hand-checkable cases
def hand_stats(mu, scaler, var=None):
    mu = torch.tensor(mu, dtype=torch.float64)
    var = torch.ones_like(mu) if var is None else torch.tensor(var, dtype=torch.float64)
    return SimpleNamespace(mean_seq_sum=mu, var=var, scaler_row=torch.tensor(scaler, dtype=torch.float64))


W1 = torch.ones(1, 6, dtype=torch.float64)  # D = μ and Wanda = sqrt(scaler_row): both chosen by hand
G1 = torch.eye(6, dtype=torch.float64)
KEEP_345 = torch.tensor([[False, False, False, True, True, True]])


@pytest.mark.parametrize("sign_check", [True, False])
def test_one_swap_then_the_threshold_stops_the_row(sign_check):
    # pruned D = (−0.3, 0.2, −0.5): ε = −0.6. Grow list (D/var, kept = 0): 2, 0, 3, 4, 5, 1.
    # Kept by Wanda 3, 4, 5 with D (0.05, −0.5, 0.1): prune list = [4 (D<0), 5, 3 (D>0, descending Wanda)].
    # Cycle 1: ε < 0 → grow low end (2), prune high end (3): ε' = −0.6 + 0.05 + 0.5 = −0.05, same sign → swap.
    # Cycle 2: |ε| = 0.05 ≤ 0.1 → the row stops.
    stats = hand_stats([-0.3, 0.2, -0.5, 0.05, -0.5, 0.1], [1, 2, 3, 4, 5, 6])
    res = sp.dsnot_refine(W1, G1, KEEP_345, stats, "0.5", sign_check=sign_check)
    assert res.mask.tolist() == [[False, False, True, False, True, True]]
    assert res.swaps.tolist() == [1] and res.iters == 2
    assert float(res.info["final_eps"][0]) == pytest.approx(-0.05)


def test_sign_check_blocks_a_sign_flip():
    # pruned D = (−0.3, 0.2, −0.25): ε = −0.35; grow 0 (low end), prune 3 (high end): ε' = +0.05.
    stats = hand_stats([-0.3, 0.2, -0.25, 0.1, -0.5, 0.05], [1, 2, 3, 4, 5, 6])
    off = sp.dsnot_refine(W1, G1, KEEP_345, stats, "0.5")  # per-row default: no sign check (as the reference)
    assert off.mask.tolist() == [[True, False, False, False, True, True]] and off.swaps.tolist() == [1]
    on = sp.dsnot_refine(W1, G1, KEEP_345, stats, "0.5", sign_check=True)
    assert torch.equal(on.mask, KEEP_345) and on.swaps.tolist() == [0] and on.iters == 1


def test_small_expected_change_means_no_swap():
    stats = hand_stats([0.03, -0.02, 0.05, 1.0, -2.0, 3.0], [1, 2, 3, 4, 5, 6])  # ε = 0.06 ≤ 0.1
    res = sp.dsnot_refine(W1, G1, KEEP_345, stats, "0.5")
    assert torch.equal(res.mask, KEEP_345) and res.iters == 1
    lower = sp.dsnot_refine(W1, G1, KEEP_345, stats, "0.5", update_threshold=0.01)
    assert lower.swaps.item() > 0


def test_nm_hand_trace():
    # 2:4, W = 1, Wanda = sqrt(scaler): block 0 keeps {2, 3}, block 1 keeps {4, 5}; ε = 0.4 + 0.1 − 0.1 + 0.3 = 0.7.
    # Grow list: 6, 2, 3, 4, 5, 1, 7, 0; ε stays > 0, so the high end is used: 0, 7, 1, 5, 4, 3, 2, 6.
    # 1: grow 0, prune 2 (lowest Wanda kept in block 0): ε 0.5.  2: grow 7, prune 5: ε 0.45.
    # 3: grow 1, prune 3: ε 0.65.  4: grow 5 (pruned in cycle 2), prune 4: ε 0.45.
    # 5-8: blocks exhausted (every kept entry has been a candidate) → skipped.  9: pointer off the list → stop.
    W = torch.ones(1, 8, dtype=torch.float64)
    G = torch.eye(8, dtype=torch.float64)
    stats = hand_stats([0.4, 0.1, 0.2, 0.3, 0.05, 0.25, -0.1, 0.3], [1, 2, 3, 4, 4, 3, 2, 1])
    mask = sp.warm_start(W, G, "2:4", "magnitude")
    mask = sp.mask_from_scores(W * stats.scaler_row.sqrt(), "2:4")
    assert mask.tolist() == [[False, False, True, True, True, True, False, False]]
    four = sp.dsnot_refine(W, G, mask, stats, "2:4", max_cycle_time=4)
    assert four.mask.tolist() == [[True, True, False, False, False, True, False, True]]
    assert four.swaps.tolist() == [4] and float(four.info["final_eps"][0]) == pytest.approx(0.45)
    full = sp.dsnot_refine(W, G, mask, stats, "2:4")
    assert torch.equal(full.mask, four.mask) and full.info["skipped"] == 4 and full.iters == 9


def test_zero_cycles_and_bad_inputs():
    W, G, stats = layer(4, 8, 0)
    mask = sp.warm_start(W, G, "0.5", "wanda")
    assert torch.equal(sp.dsnot_refine(W, G, mask, stats, "0.5", max_cycle_time=0).mask, mask)
    with pytest.raises(TypeError, match="per-row and N:M"):
        sp.dsnot_refine(W, G, sp.warm_start(W, G, "unstructured:0.5"), stats, "unstructured:0.5")
    with pytest.raises(TypeError, match="must provide 'var'"):
        sp.dsnot_refine(W, G, mask, SimpleNamespace(mean_seq_sum=stats.mean_seq_sum), "0.5")
    with pytest.raises(ValueError, match=r"blk.0.q: stats.mean_seq_sum has shape \(3,\)"):
        sp.dsnot_refine(W, G, mask, hand_stats([1.0, 2.0, 3.0], [1, 1, 1]), "0.5", name="blk.0.q")
    with pytest.raises(ValueError, match="mask does not satisfy"):
        sp.dsnot_refine(W, G, torch.ones(4, 8, dtype=torch.bool), stats, "0.5")


@pytest.mark.parametrize(
    "name, kwargs, skipped",
    [
        ("model.layers.3.mlp.down_proj", {}, True),
        ("mlp.gate_proj", {}, True),
        ("model.layers.3.self_attn.q_proj", {}, False),
        ("model.layers.3.self_attn.q_proj", {"skip_layer": "self_attn"}, True),
        ("model.layers.3.mlp.up_proj", {"skip_layer": "no_skip"}, False),
        ("model.layers.3.self_attn.o_proj", {"skip_sub_layer": "o_proj"}, True),
        ("transformer.h.0.mlp.c_fc", {}, True),
        ("model.decoder.layers.0.fc1", {}, False),
    ],
)
def test_skip_rule(name, kwargs, skipped):
    assert sp.dsnot_skips(name, **kwargs) is skipped
