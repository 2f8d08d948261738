import pytest
import torch

import swappass as sp


def make_data(d_out, d_in, tokens, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g, dtype=dtype)
    X = torch.randn(d_in, tokens, generator=g, dtype=dtype) * (0.2 + torch.rand(d_in, 1, generator=g, dtype=dtype))
    X[1::2] += 0.7 * X[::2][: X[1::2].shape[0]]  # correlated inputs: a refit has something to gain
    return W, X


def lstsq_refit(W, X, mask, lam):
    """Direct solve per row: min ||w X − w'_K X_K||² + λ ||w'_K − w_K||² as one stacked least-squares problem."""
    out = torch.zeros_like(W)
    for i in range(W.shape[0]):
        K = mask[i].nonzero().flatten()
        if K.numel() == 0:
            continue
        A = torch.cat([X[K].T, lam**0.5 * torch.eye(K.numel(), dtype=W.dtype)])
        b = torch.cat([W[i] @ X, lam**0.5 * W[i, K]])
        out[i, K] = torch.linalg.lstsq(A, b[:, None], driver="gelsd").solution[:, 0]
    return out


@pytest.mark.parametrize("pattern", ["0.6", "2:4", "unstructured:0.5"])
@pytest.mark.parametrize("damping", [0.0, 0.01, 0.3])
def test_refit_equals_direct_least_squares(pattern, damping):
    W, X = make_data(6, 16, 64, 1)
    G = X @ X.T
    mask = sp.warm_start(W, G, pattern, "wanda")
    res = sp.refit_weights(W, G, mask, damping=damping)
    lam = damping * float(G.diagonal().mean())
    torch.testing.assert_close(res.weight, lstsq_refit(W, X, mask, lam), rtol=1e-9, atol=1e-10)
    assert res.info["lambda"] == pytest.approx(lam)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_refit_error_never_above_mask_only_and_pruned_stay_zero(seed, dtype):
    W, X = make_data(20, 32, 80, seed, dtype=dtype)
    G = X @ X.T
    for pattern in ("0.6", "unstructured:0.7"):
        mask = sp.warm_start(W, G, pattern, "magnitude")
        res = sp.refit_weights(W, G, mask)
        assert res.weight.dtype == dtype
        assert torch.all(res.loss_after <= res.loss_before)
        assert res.total_after < 0.9 * res.total_before  # correlated inputs: the refit really helps
        pruned = res.weight[~mask]
        assert torch.all(pruned == 0) and not torch.any(torch.signbit(pruned))  # exactly +0.0
        torch.testing.assert_close(res.loss_before, sp.layer_loss(W, G, mask))
        exact = sp.reconstruction_loss(W.double(), G.double(), res.weight.double())
        torch.testing.assert_close(res.loss_after.double(), exact, rtol=1e-4 if dtype == torch.float32 else 1e-9, atol=1e-6)


def test_refit_is_the_optimum_on_the_support():
    W, X = make_data(3, 10, 40, 4)
    G = X @ X.T
    mask = sp.warm_start(W, G, "0.5", "wanda")
    best = sp.refit_weights(W, G, mask, damping=0.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):  # any other weights on the same support do worse
        other = best.weight + 1e-3 * torch.randn(W.shape, generator=g, dtype=W.dtype) * mask
        assert torch.all(sp.reconstruction_loss(W, G, other) >= best.loss_after)


def test_batching_and_uneven_rows_give_the_same_answer():
    W, X = make_data(9, 12, 50, 2)
    G = X @ X.T
    mask = sp.warm_start(W, G, "unstructured:0.5", "wanda")
    mask[0] = False  # an empty row
    mask[1] = True  # a full row: nothing to refit
    mask[2, :] = False
    mask[2, :2] = True
    mask[3, 5:] = True
    full = sp.refit_weights(W, G, mask)
    one = sp.refit_weights(W, G, mask, batch_rows=1)
    torch.testing.assert_close(full.weight, one.weight, rtol=1e-12, atol=1e-12)
    assert torch.all(full.weight[0] == 0)
    torch.testing.assert_close(full.weight[1], W[1])  # no pruned weight, no error to compensate
    torch.testing.assert_close(full.weight, lstsq_refit(W, X, mask, 0.01 * float(G.diagonal().mean())))


def test_singular_kept_block_without_damping_uses_the_pseudo_inverse():
    W, X = make_data(2, 6, 30, 5)
    X[2] = 0.0  # a dead input: G_KK is singular when it is kept
    X[3] = X[4]  # two identical inputs
    G = X @ X.T
    mask = torch.tensor([[True, False, True, True, True, False], [False, True, True, False, True, True]])
    res = sp.refit_weights(W, G, mask, damping=0.0)
    assert res.info["pinv_rows"] >= 1
    assert torch.all(torch.isfinite(res.weight))
    assert torch.all(res.loss_after <= res.loss_before + 1e-9)
    lsq = lstsq_refit(W, X, mask, 0.0)  # the error is unique even where the weights are not
    torch.testing.assert_close(res.loss_after, sp.reconstruction_loss(W, G, lsq), rtol=1e-8, atol=1e-9)


def test_bad_inputs_are_named():
    W, X = make_data(3, 8, 20, 0)
    G = X @ X.T
    with pytest.raises(ValueError, match="blk.1.o: mask shape"):
        sp.refit_weights(W, G, torch.ones(3, 7, dtype=torch.bool), name="blk.1.o")
    with pytest.raises(ValueError, match="damping must be a non-negative number"):
        sp.refit_weights(W, G, torch.ones(3, 8, dtype=torch.bool), damping=-1)
    with pytest.raises(ValueError, match="new weights have shape"):
        sp.reconstruction_loss(W, G, W[:, :4])
