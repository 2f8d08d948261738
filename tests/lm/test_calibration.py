"""Calibration sets: samples from the model itself (seeded, shaped, following its distribution), hub datasets."""
from __future__ import annotations

import sys

import pytest
import torch
from cli_helpers import corpus

from swappass.lm import calibration, matmul_precision, sampling


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_self_calibration_is_seeded_and_shaped(tiny, precision):
    from swappass.lm.models import load_model

    model_dir, _ = tiny
    model, tok = load_model(str(model_dir))
    kw = dict(nsamples=3, seqlen=10, batch_size=2, matmul_precision=precision, progress=False)
    a = calibration.sample_sequences(model, tok, seed=5, **kw)
    b = calibration.sample_sequences(model, tok, seed=5, **kw)
    c = calibration.sample_sequences(model, tok, seed=6, **kw)
    assert [w.shape for w in a] == [(1, 10)] * 3
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    ids = torch.cat(a)
    assert ids.min() >= 0 and ids.max() < model.config.vocab_size
    assert tok.eos_token_id not in ids[:, 0].tolist()  # first tokens avoid special tokens
    assert "forward" not in vars(model.model.layers[0].mlp.up_proj)  # the matmul precision is undone

    # the KV-cache loop samples what full-prefix forward passes give (same generator, same draws, same matmuls)
    gen = torch.Generator().manual_seed(5)
    special = set(tok.all_special_ids)
    candidates = torch.tensor([i for i in range(model.config.vocab_size) if i not in special])
    replay = candidates[torch.randint(len(candidates), (3,), generator=gen)].reshape(-1, 1)[:2]
    dtype = matmul_precision.resolve_matmul_precision(model, precision)
    with torch.no_grad(), matmul_precision.linears_in(model, dtype):
        for _ in range(9):
            replay = torch.cat([replay, sampling.sample_next(model(input_ids=replay).logits[:, -1], gen)], dim=1)
    assert torch.equal(replay, ids[:2])


def test_linears_in_multiplies_in_the_dtype_and_restores_the_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4, bias=False))
    x = torch.randn(5, 8)
    dense = model(x)
    weights = [p.clone() for p in model.parameters()]
    with matmul_precision.linears_in(model, torch.bfloat16):
        y = model(x)
    first = torch.nn.functional.linear(x.bfloat16(), model[0].weight.bfloat16(), model[0].bias.bfloat16()).float()
    expect = torch.nn.functional.linear(first.relu().bfloat16(), model[2].weight.bfloat16()).float()
    assert y.dtype == torch.float32 and torch.equal(y, expect)
    assert not torch.equal(y, dense)  # the matmuls did run in bfloat16
    assert torch.equal(model(x), dense) and all("forward" not in vars(m) for m in model)
    assert all(torch.equal(p, w) and p.dtype == torch.float32 for p, w in zip(model.parameters(), weights))
    with pytest.raises(RuntimeError, match="boom"), matmul_precision.linears_in(model, torch.bfloat16):
        raise RuntimeError("boom")
    assert torch.equal(model(x), dense)  # restored after an exception too
    with matmul_precision.linears_in(model, None):
        assert torch.equal(model(x), dense)


@pytest.mark.skipif(not matmul_precision.native_bfloat16_cpu(), reason="no native bfloat16 matmuls on this CPU")
def test_packed_bfloat16_weights_give_the_products_of_f_linear():
    torch.manual_seed(0)
    linear = torch.nn.Linear(24, 40)
    weight = linear.weight.detach().bfloat16()
    packed = matmul_precision.packed_bfloat16_weight(weight, 16)
    assert packed is not None and packed.is_mkldnn  # the blocked layout is what runs here
    for rows in (16, 1, 3):  # other row counts than the layout's: the same products
        with matmul_precision.linears_in(linear, torch.bfloat16, rows=16):
            x = torch.randn(rows, 2, 48)[..., ::2]  # 3-D and not contiguous
            expect = torch.nn.functional.linear(x.bfloat16(), weight, linear.bias.detach().bfloat16()).float()
            assert torch.equal(linear(x), expect)
    assert matmul_precision.packed_bfloat16_weight(weight.float(), 16) is None  # float32: F.linear's path


def test_linears_in_without_native_bfloat16_multiplies_with_f_linear(monkeypatch):
    monkeypatch.setattr(matmul_precision, "native_bfloat16_cpu", lambda: False)
    torch.manual_seed(1)
    linear, x = torch.nn.Linear(8, 4), torch.randn(3, 8)
    assert matmul_precision.packed_bfloat16_weight(linear.weight.detach().bfloat16(), 3) is None
    with matmul_precision.linears_in(linear, torch.bfloat16, rows=3):
        y = linear(x)
    expect = torch.nn.functional.linear(x.bfloat16(), linear.weight.bfloat16(), linear.bias.bfloat16()).float()
    assert torch.equal(y, expect)


def test_resolve_matmul_precision(monkeypatch):
    fp32, bf16 = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2).bfloat16()
    monkeypatch.setattr(matmul_precision, "native_bfloat16_cpu", lambda: True)
    assert matmul_precision.resolve_matmul_precision(fp32, "auto") == torch.bfloat16
    assert matmul_precision.resolve_matmul_precision(bf16, "auto") is None  # already the model's own
    assert matmul_precision.resolve_matmul_precision(fp32, "float32") is None
    assert matmul_precision.resolve_matmul_precision(bf16, "float32") == torch.float32
    assert matmul_precision.resolve_matmul_precision(torch.nn.ReLU(), "auto") is None  # no parameters
    monkeypatch.setattr(matmul_precision, "native_bfloat16_cpu", lambda: False)
    assert matmul_precision.resolve_matmul_precision(fp32, "auto") is None  # emulated bfloat16 would be slower
    assert matmul_precision.resolve_matmul_precision(fp32, "bfloat16") == torch.bfloat16  # asked for: done
    with pytest.raises(calibration.CalibrationError, match="float16.*auto"):
        matmul_precision.resolve_matmul_precision(fp32, "float16")


def test_sample_next_draws_from_the_softmax():
    gen = torch.Generator().manual_seed(0)
    logits = torch.tensor([[0.0, 1.0, 2.0, -float("inf")], [5.0, -float("inf"), 5.0, 5.0]])
    draws = torch.cat([sampling.sample_next(logits, gen) for _ in range(20000)], dim=1)
    assert draws.shape == (2, 20000) and draws.dtype == torch.long
    assert not (draws[0] == 3).any() and not (draws[1] == 1).any()  # probability 0: never
    freq = torch.stack([(draws[0] == k).double().mean() for k in range(3)])
    torch.testing.assert_close(freq, torch.softmax(logits[0, :3].double(), 0), atol=0.015, rtol=0)
    torch.testing.assert_close((draws[1] == 0).double().mean(), torch.tensor(1 / 3, dtype=torch.float64), atol=0.015,
                               rtol=0)
    one_hot = torch.full((3, 50), -1e9)
    one_hot[torch.arange(3), torch.tensor([0, 17, 49])] = 0.0  # the first and the last token included
    assert sampling.sample_next(one_hot, gen).flatten().tolist() == [0, 17, 49]
    given = one_hot.double()  # already float64 on the CPU: the in-place steps must work on a copy
    sampling.sample_next(given, gen)
    assert torch.equal(given, one_hot.double())


def test_self_calibration_follows_the_model_distribution():
    from types import SimpleNamespace

    class Successor(torch.nn.Module):
        """Next token = last token + 1 (mod V) with probability 1; counts the tokens it is fed."""

        config = SimpleNamespace(vocab_size=50)

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.fed = 0

        def forward(self, input_ids, past_key_values=None, use_cache=True):
            self.fed += input_ids.numel()
            logits = torch.full((*input_ids.shape, 50), -1e9)
            nxt = (input_ids[:, -1] + 1) % 50
            logits[torch.arange(input_ids.shape[0]), -1, nxt] = 0.0
            return SimpleNamespace(logits=logits, past_key_values=(past_key_values or 0) + 1)

    model = Successor()
    seqs = calibration.sample_sequences(model, None, nsamples=3, seqlen=7, seed=0, progress=False)
    for s in seqs:
        assert torch.equal(s[0], (s[0, 0] + torch.arange(7)) % 50)
    assert model.fed == 3 * 6  # with the KV cache, one new token per sequence and step


def test_hub_dataset_calibration(monkeypatch, tiny):
    from swappass.lm.models import load_model

    _, tok = load_model(str(tiny[0]))
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(calibration.CalibrationError, match="needs the `datasets` package"):
        calibration.calibration_set("hf:wikitext:wikitext-2-raw-v1:train", tok, nsamples=2, seqlen=16)

    calls = []

    class FakeDatasets:
        @staticmethod
        def load_dataset(name, config, split, streaming):
            calls.append((name, config, split, streaming))
            return iter([{"text": ""}] + [{"text": line} for line in corpus(2000).splitlines()])

    monkeypatch.setitem(sys.modules, "datasets", FakeDatasets)
    monkeypatch.setattr("swappass.lm.models.hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(calibration.CalibrationError, match="hub is unreachable"):
        calibration.calibration_set("hf:wikitext:wikitext-2-raw-v1", tok, nsamples=2, seqlen=16)
    monkeypatch.setattr("swappass.lm.models.hub_reachable", lambda timeout=3.0: True)
    windows = calibration.calibration_set("hf:wikitext:wikitext-2-raw-v1", tok, nsamples=2, seqlen=16, seed=1)
    assert calls == [("wikitext", "wikitext-2-raw-v1", "train", True)]
    assert [w.shape for w in windows] == [(1, 16)] * 2
    with pytest.raises(calibration.CalibrationError, match="malformed"):
        calibration.calibration_set("hf:", tok, nsamples=2, seqlen=16)
