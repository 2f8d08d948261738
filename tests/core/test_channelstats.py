"""DSnoT's per-channel statistics against direct computations and the reference's running updates."""

import pytest
import torch

import swappass as sp


def test_channel_stats_match_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    d = 5
    batches = [
        torch.randn(2, 6, d, generator=g),  # two sequences of 6 tokens
        torch.randn(7, d, generator=g) + 1.0,  # 2-D: one sequence of 7 tokens
        torch.randn(1, 2, 4, d, generator=g) * 3,  # two sequences of 4 tokens
    ]
    stats = sp.ChannelStats(d)
    for x in batches:
        stats.update(x)
    seqs = [s.double() for x in batches for s in x.reshape(-1, x.shape[-2], d)]
    assert stats.sequences == 5 and stats.tokens == 12 + 7 + 8
    total = torch.cat(seqs)
    torch.testing.assert_close(stats.mean_seq_sum, total.sum(0) / 5)
    torch.testing.assert_close(stats.scaler_row, (total**2).sum(0) / 5)
    per_seq_var = [((s - s.mean(0)) ** 2).mean(0) * s.shape[0] for s in seqs]
    torch.testing.assert_close(stats.var, torch.stack(per_seq_var).sum(0) / 27)


def test_channel_stats_follow_the_reference_running_updates_one_sequence_at_a_time():
    # The reference updates, per forward pass of one sequence x (n tokens):
    #   var ← (var·N + var(x)·n) / (N + n);  sum ← sum·S/(S+1) + Σx/(S+1);  scaler ← scaler·S/(S+1) + Σx²/(S+1)
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randn(n, 3, generator=g, dtype=torch.float64) for n in (5, 9, 2, 5)]
    var = s_sum = scaler = torch.zeros(3, dtype=torch.float64)
    N = S = 0
    stats = sp.ChannelStats(3)
    for x in seqs:
        stats.update(x)
        v = x.var(dim=0, unbiased=False)
        var = v if N == 0 else (var * N + v * x.shape[0]) / (N + x.shape[0])
        N += x.shape[0]
        s_sum = s_sum * S / (S + 1) + x.sum(0) / (S + 1)
        scaler = scaler * S / (S + 1) + (x**2).sum(0) / (S + 1)
        S += 1
    torch.testing.assert_close(stats.var, var)
    torch.testing.assert_close(stats.mean_seq_sum, s_sum)
    torch.testing.assert_close(stats.scaler_row, scaler)


def test_channel_stats_errors():
    stats = sp.ChannelStats(4, name="blk.2.mlp.up")
    with pytest.raises(RuntimeError, match="blk.2.mlp.up: no calibration input"):
        stats.var
    with pytest.raises(ValueError, match=r"blk.2.mlp.up: .*d_in = 4.*\(2, 3\)"):
        stats.update(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="d_in = 4"):
        stats.update(torch.zeros(4))
    with pytest.raises(ValueError, match="floating point"):
        stats.update(torch.zeros(2, 4, dtype=torch.long))
    x = torch.zeros(1, 3, 4)
    x[0, 1, 2] = float("nan")
    with pytest.raises(sp.NonFiniteActivationError, match=r"channels \[2\]"):
        stats.update(x)
    assert stats.sequences == 0
