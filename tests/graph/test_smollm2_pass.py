"""The real SmolLM2-135M through sparsify with real WikiText-2 text (CI-sized; see the constants).

Calibration: 8 windows × 128 tokens of WikiText-2 valid (seed 0). Evaluation: the first 4 windows × 256 tokens
of WikiText-2 raw test. Both patterns run on the whole model (210 Linear sites, 120 sequential levels), with
3 swap iterations, and also Wanda alone (``max_iters=0``).
The perplexities are printed, not compared: how they compare is a benchmark's business.
"""
import copy
import math

import pytest
import torch

import swappass as sp
from swappass.lm import data, evaluate
from swappass.lm.models import load_model

pytestmark = pytest.mark.slow

CALIB_SAMPLES, CALIB_SEQLEN = 8, 128
EVAL_WINDOWS, EVAL_SEQLEN = 4, 256
MAX_ITERS = 3


@pytest.fixture(scope="module")
def smollm2():
    torch.manual_seed(0)
    model, tokenizer = load_model("smollm2-135m")
    calib = data.calibration_windows(tokenizer, nsamples=CALIB_SAMPLES, seqlen=CALIB_SEQLEN, seed=0)
    windows = data.perplexity_windows(tokenizer, seqlen=EVAL_SEQLEN, max_windows=EVAL_WINDOWS)
    dense = evaluate.perplexity(model, windows, progress=False)
    assert math.isfinite(dense)
    return model, calib, windows, dense


def prune(model, calib, pattern, max_iters):
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model, report = sp.sparsify(model, calib, pattern=pattern, max_iters=max_iters, progress=False)
    params = dict(model.named_parameters())
    for rec in report.pruned_weights():
        rec.check()  # the pattern holds exactly
        assert torch.equal(params[rec.name].detach(), before[rec.name] * rec.mask)
    for row in report.pruned:
        assert row.loss_final <= row.loss_warm * (1 + 1e-6), row.name
        assert row.tokens == CALIB_SAMPLES * CALIB_SEQLEN
    assert len(report.pruned) == 30 * 7 and report.settings["levels"] == 120
    assert report["lm_head"].status == "ignored"
    return report


def compare(capsys, label, dense, wanda_ppl, swap_ppl, report):
    with capsys.disabled():
        print(
            f"\nSmolLM2-135M {label}: WikiText-2 ppl ({EVAL_WINDOWS} windows x {EVAL_SEQLEN} tokens; calibration "
            f"{CALIB_SAMPLES} x {CALIB_SEQLEN} tokens) dense {dense:.2f} | Wanda {wanda_ppl:.2f} | "
            f"Wanda + {MAX_ITERS} swap iterations {swap_ppl:.2f}; mean relative error reduction "
            f"{100 * report.mean_relative_reduction:.2f}% over {len(report.pruned)} sites, {report.seconds:.0f} s"
        )


def test_smollm2_2_4(smollm2, capsys):
    model, calib, windows, dense = smollm2
    wanda = copy.deepcopy(model)
    wanda_report = prune(wanda, calib, "2:4", 0)
    swapped = copy.deepcopy(model)
    report = prune(swapped, calib, "2:4", MAX_ITERS)
    assert all(r.swaps == 0 and r.loss_final == r.loss_warm for r in wanda_report.pruned)
    for a, b in zip(wanda_report.pruned, report.pruned):  # level 0 sees the same inputs in both runs
        if a.level == 0:
            assert a.loss_warm == pytest.approx(b.loss_warm, rel=1e-6)
    assert report.mean_relative_reduction > 0
    wanda_ppl = evaluate.perplexity(wanda, windows, progress=False)
    swap_ppl = evaluate.perplexity(swapped, windows, progress=False)
    assert math.isfinite(wanda_ppl) and math.isfinite(swap_ppl)
    compare(capsys, "2:4", dense, wanda_ppl, swap_ppl, report)


def test_smollm2_row_60(smollm2, capsys):
    """The swaps alone (the Wanda-only run and its cross-check at level 0 are the 2:4 test's)."""
    model, calib, windows, dense = smollm2
    report = prune(model, calib, "0.6", MAX_ITERS)  # the last test of the module: the fixture's model may change
    for row in report.pruned:
        assert row.sparsity == pytest.approx(1 - round(row.shape[1] * 0.4) / row.shape[1])
    assert report.mean_relative_reduction > 0
    swap_ppl = evaluate.perplexity(model, windows, progress=False)
    assert math.isfinite(swap_ppl)
    compare(capsys, "60% per row", dense, float("nan"), swap_ppl, report)
