import pytest
import torch

import swappass as sp
from swappass.core.patterns import NMSparsity, parse_pattern


def make_layer(d_out, d_in, seed, dtype=torch.float64, dead=()):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g, dtype=dtype)
    X = torch.randn(d_in, 4 * d_in, generator=g, dtype=dtype) * (0.1 + torch.rand(d_in, 1, generator=g, dtype=dtype))
    X[1::3] += 0.6 * X[::3][: X[1::3].shape[0]]
    for j in dead:
        X[j] = 0.0
    return W, X @ X.T


def sparsegpt_unblocked(W, G, pattern, select_every=None, percdamp=0.01):
    """Plain OBS, column by column, with the explicit inverse of the not-yet-fixed block H[i:, i:] at every step.

    Unstructured: the mask of columns [b, b + select_every) is chosen when column b is reached (one threshold
    over those columns, the same counts as swappass's), from the current weights and the scores
    w² / inv(H[j:, j:])[0, 0]. N:M: per M-group when its first column is reached.
    """
    pattern = parse_pattern(pattern)
    d_out, d_in = W.shape
    W, H = W.clone(), G.clone()
    dead = H.diagonal() == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += percdamp * H.diagonal().mean() * torch.eye(d_in, dtype=H.dtype)
    inv_first = torch.stack([torch.linalg.inv(H[j:, j:])[0, 0] for j in range(d_in)])
    prune = torch.zeros(d_out, d_in, dtype=torch.bool)
    total = None if isinstance(pattern, NMSparsity) else pattern.kept_total(d_out, d_in)
    every = select_every or d_in
    for i in range(d_in):
        if total is not None and i % every == 0:
            i2 = min(i + every, d_in)
            kept = round((total * i2) / d_in + 1e-9) - round((total * i) / d_in + 1e-9)  # half-up on exact .5
            s = (W[:, i:i2] ** 2 / inv_first[i:i2]).reshape(-1)
            lowest = torch.sort(s, stable=True).indices[: s.numel() - kept]
            block = torch.zeros(s.numel(), dtype=torch.bool)
            block[lowest] = True
            prune[:, i:i2] = block.reshape(d_out, i2 - i)
        if total is None and i % pattern.m == 0:
            s = W[:, i : i + pattern.m] ** 2 / inv_first[i : i + pattern.m]
            low = torch.sort(s, dim=1, stable=True).indices[:, : pattern.m - pattern.n]
            prune[:, i : i + pattern.m].scatter_(1, low, True)
        Hi = torch.linalg.inv(H[i:, i:])
        q = torch.where(prune[:, i], 0.0, W[:, i])
        W[:, i:] -= (W[:, i] - q)[:, None] * (Hi[0] / Hi[0, 0])[None, :]
        W[:, i] = q
    return ~prune, W


@pytest.mark.parametrize("pattern", ["0.6", "unstructured:0.5", "2:4", "1:4", "4:8"])
def test_matches_unblocked_obs_when_one_block_covers_the_layer(pattern):
    W, G = make_layer(7, 16, 1, dead=(5,))
    res = sp.sparsegpt_prune(W, G, pattern, blocksize=16)
    mask, weight = sparsegpt_unblocked(W, G, pattern)
    assert torch.equal(res.mask, mask)
    torch.testing.assert_close(res.weight, weight, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("pattern, blocksize", [("0.6", 4), ("unstructured:0.7", 8), ("2:4", 4), ("2:4", 8), ("4:8", 8)])
def test_lazy_block_updates_match_eager_updates(pattern, blocksize):
    W, G = make_layer(6, 24, 2)
    res = sp.sparsegpt_prune(W, G, pattern, blocksize=blocksize)
    every = None if ":" in pattern and not pattern.startswith("unstructured") else blocksize
    mask, weight = sparsegpt_unblocked(W, G, pattern, select_every=every)
    assert torch.equal(res.mask, mask)
    torch.testing.assert_close(res.weight, weight, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("pattern", ["0.6", "unstructured:0.6", "2:4"])
def test_update_beats_magnitude_pruning_and_its_own_mask(seed, pattern):
    W, G = make_layer(24, 64, seed, dtype=torch.float32)
    res = sp.sparsegpt_prune(W, G, pattern)
    magnitude = sp.layer_loss(W, G, sp.warm_start(W, G, pattern, "magnitude")).sum()
    assert res.loss.sum() < magnitude
    assert res.loss.sum() < res.loss_mask_only.sum()
    assert torch.all(res.weight[~res.mask] == 0)
    torch.testing.assert_close(res.loss, sp.reconstruction_loss(W, G, res.weight), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pattern", ["0.6", "0.5", "unstructured:0.6", "2:4", "1:4"])
def test_counts_follow_the_swappass_pattern(pattern):
    W, G = make_layer(10, 40, 3)
    pat = parse_pattern(pattern)
    res = sp.sparsegpt_prune(W, G, pattern, blocksize=16)
    assert int(res.mask.sum()) == pat.kept_total(10, 40)
    if isinstance(pat, NMSparsity):
        assert pat.is_feasible(res.mask)
    else:  # the total is spread over the blocks of 16 columns in proportion to their widths
        total = pat.kept_total(10, 40)
        for i1 in (0, 16, 32):
            i2 = min(i1 + 16, 40)
            assert abs(int(res.mask[:, i1:i2].sum()) - total * (i2 - i1) / 40) <= 1


def test_dead_inputs_and_scale_invariance():
    W, G = make_layer(5, 12, 4, dead=(0, 7))
    res = sp.sparsegpt_prune(W, G, "0.5", blocksize=4)
    assert res.info["dead_inputs"] == 2
    assert torch.all(res.weight[:, [0, 7]] == 0) and torch.all(torch.isfinite(res.weight))
    # H = 2G/N as in the reference: the same as passing 2G/N yourself
    ref = sp.sparsegpt_prune(W, G, "0.5", blocksize=4, n_samples=37)
    own = sp.sparsegpt_prune(W, 2 * G / 37, "0.5", blocksize=4)
    assert torch.equal(ref.mask, own.mask)
    torch.testing.assert_close(ref.weight, own.weight, rtol=1e-12, atol=1e-12)
    # without dead inputs the scale of H does not matter (the damping is relative)
    W, G = make_layer(5, 12, 4)
    a, b = sp.sparsegpt_prune(W, G, "0.5", blocksize=4), sp.sparsegpt_prune(W, G, "0.5", blocksize=4, n_samples=37)
    assert torch.equal(a.mask, b.mask)
    torch.testing.assert_close(a.weight, b.weight, rtol=1e-9, atol=1e-10)


def test_projection_is_feasible_and_minimal():
    W, G = make_layer(12, 32, 5)
    for pattern in ("0.6", "0.5"):
        res = sp.sparsegpt_prune(W, G, pattern, blocksize=8)
        pat = parse_pattern(pattern)
        k = pat.kept_per_row(32)
        proj = sp.project_mask(res.mask, res.scores, pattern)
        assert pat.is_feasible(proj)
        changed = (proj != res.mask).sum(dim=1)
        assert torch.equal(changed, (res.mask.sum(dim=1) - k).abs())  # only the surplus / deficit moves
        for i in range(12):
            dropped = res.mask[i] & ~proj[i]
            added = proj[i] & ~res.mask[i]
            if dropped.any():  # the lowest-scored kept entries go
                assert res.scores[i][dropped].max() <= res.scores[i][proj[i]].min()
            if added.any():  # the highest-scored pruned entries come back
                assert res.scores[i][added].min() >= res.scores[i][~proj[i]].max()
        assert torch.equal(sp.sparsegpt_warm_start(W, G, pattern, blocksize=8), proj)
        assert torch.equal(sp.warm_start(W, G, pattern, "sparsegpt"), sp.sparsegpt_warm_start(W, G, pattern))
    nm = sp.sparsegpt_prune(W, G, "2:4")
    assert torch.equal(sp.project_mask(nm.mask, nm.scores, "2:4"), nm.mask)  # already feasible


def test_projection_hand_example():
    mask = torch.tensor([[True, True, True, False], [False, False, True, False]])
    scores = torch.tensor([[3.0, 1.0, 2.0, 9.0], [4.0, 5.0, 0.1, 4.0]])
    # keep 2 per row: row 0 drops its lowest kept (index 1) although index 3 scores higher; row 1 adds its best
    # pruned (index 1), keeping index 2 although it scores lowest.
    assert sp.project_mask(mask, scores, "0.5").tolist() == [[True, False, True, False], [False, True, True, False]]


def test_bad_inputs_are_named():
    W, G = make_layer(4, 12, 0)
    with pytest.raises(ValueError, match="blk.0.up: blocksize 6 must be a multiple of M = 4"):
        sp.sparsegpt_prune(W, G, "2:4", blocksize=6, name="blk.0.up")
    with pytest.raises(ValueError, match="not divisible by M = 8"):
        sp.sparsegpt_prune(W, G, "4:8")
    with pytest.raises(ValueError, match="not positive definite"):
        sp.sparsegpt_prune(W, -G, "0.5", percdamp=0.0)
    with pytest.raises(ValueError, match="'sparsegpt' has no fixed score function"):
        sp.warm_start_scores(W, G, "sparsegpt")
