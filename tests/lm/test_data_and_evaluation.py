"""Calibration / perplexity windows and the perplexity metric."""
import math
import random
from types import SimpleNamespace

import pytest
import torch
from tiny_hf import VOCAB, build

from swappass.lm import data, evaluate


class CharTokenizer:
    """One token per character (its code point): makes window positions easy to check."""

    def __call__(self, text, return_tensors=None, verbose=True):
        return SimpleNamespace(input_ids=torch.tensor([[ord(c) for c in text]]))


def decode(ids):
    return "".join(chr(int(i)) for i in ids.reshape(-1))


def test_data_dir_finds_the_shared_files_and_honours_the_env(monkeypatch, tmp_path):
    monkeypatch.delenv("SWAPPASS_DATA", raising=False)
    test = data.wikitext2_path("test")
    assert test.name == "wiki.test.raw" and data.wikitext2_path("valid").name == "valid.txt"
    assert data.read_text(test).startswith(" = Robert Boulter = \n Robert Boulter is")
    monkeypatch.setenv("SWAPPASS_DATA", str(tmp_path))
    assert data.data_dir() == tmp_path
    with pytest.raises(data.DataNotFoundError, match="does not exist"):
        data.wikitext2_path("test")
    monkeypatch.setenv("SWAPPASS_DATA", str(tmp_path / "nope"))
    with pytest.raises(data.DataNotFoundError, match="not a directory"):
        data.data_dir()
    with pytest.raises(ValueError, match="split"):
        data.wikitext2_path("train")


def test_perplexity_windows_protocol(tmp_path):
    path = tmp_path / "test.raw"
    path.write_bytes(b" = A = \r\n alpha beta .\r\n gamma\r\n")
    joined = " = A = \n\n\n alpha beta .\n\n\n gamma\n"  # rows keep their LF and are joined with "\n\n"
    windows = data.perplexity_windows(CharTokenizer(), path, seqlen=5)
    assert len(windows) == len(joined) // 5
    assert all(w.shape == (1, 5) for w in windows)
    assert "".join(decode(w) for w in windows) == joined[: 5 * len(windows)]  # non-overlapping, remainder dropped
    assert len(data.perplexity_windows(CharTokenizer(), path, seqlen=5, max_windows=2)) == 2
    with pytest.raises(ValueError, match="fewer than one window"):
        data.perplexity_windows(CharTokenizer(), path, seqlen=1000)


def test_calibration_windows_are_seeded_like_wanda():
    text = "".join(chr(65 + i % 26) + chr(97 + (i // 26) % 26) for i in range(400))
    windows = data.calibration_windows(CharTokenizer(), text=text, nsamples=5, seqlen=16, seed=3)
    random.seed(3)  # Wanda: random.seed(seed); i = random.randint(0, n - seqlen - 1) per sample
    starts = [random.randint(0, len(text) - 16 - 1) for _ in range(5)]
    assert [decode(w) for w in windows] == [text[i : i + 16] for i in starts]
    again = data.calibration_windows(CharTokenizer(), text=text, nsamples=5, seqlen=16, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(windows, again))
    with pytest.raises(ValueError, match="too few"):
        data.calibration_windows(CharTokenizer(), text="short", nsamples=1, seqlen=16)


def test_perplexity_matches_the_models_own_loss():
    model = build("llama")
    g = torch.Generator().manual_seed(0)
    windows = [torch.randint(0, VOCAB, (1, 10), generator=g) for _ in range(3)]
    with torch.no_grad():
        losses = [float(model(input_ids=w, labels=w, use_cache=False).loss) for w in windows]
    expected = math.exp(sum(losses) / len(losses))
    assert evaluate.perplexity(model, windows, progress=False) == pytest.approx(expected, rel=1e-5)
    assert evaluate.perplexity(model, windows, batch_size=2, progress=False) == pytest.approx(expected, rel=1e-5)
    nll = evaluate.window_nlls(model, windows, progress=False)
    assert nll.shape == (3,) and torch.allclose(nll, torch.tensor(losses, dtype=torch.float64), rtol=1e-5)
    with pytest.raises(ValueError, match="at least one window"):
        evaluate.perplexity(model, [], progress=False)


def test_compare_models_metrics_against_a_direct_computation(tiny):
    from swappass.lm import evaluate
    from swappass.lm.models import load_model

    model_dir, _ = tiny
    a, _ = load_model(str(model_dir))
    b, _ = load_model(str(model_dir))
    with torch.no_grad():
        b.model.layers[0].mlp.down_proj.weight.mul_(0.5)
    ids = [torch.randint(0, a.config.vocab_size, (1, 20), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    res = evaluate.compare_models(b, a, ids, progress=False)
    with torch.no_grad():
        la = torch.log_softmax(a(torch.cat(ids)).logits[:, :-1].double(), -1)
        lb = torch.log_softmax(b(torch.cat(ids)).logits[:, :-1].double(), -1)
    kl = (la.exp() * (la - lb)).sum(-1).mean().detach()
    assert res.kl == pytest.approx(float(kl), rel=1e-4)
    assert res.top1 == pytest.approx(float((la.argmax(-1) == lb.argmax(-1)).double().mean()))
    assert res.perplexity == pytest.approx(evaluate.perplexity(b, ids, progress=False), rel=1e-6)
