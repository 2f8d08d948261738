"""sparsify / prune_weights with every method: warm starts × refine (swaps, dsnot, none) × refit (none, lstsq,
sparsegpt) × patterns (0.6, 2:4, unstructured:0.6), on synthetic layers and on tiny LLaMA / GPT-2 models."""
import itertools
import math

import pytest
import torch
from tiny_hf import build, calib

import swappass as sp
import swappass.methods.prune_step as prune_step
from swappass.core.patterns import parse_pattern
from swappass.methods.prune_step import check_prune_options

WARM = ("magnitude", "wanda", "ria", "sparsegpt")
REFINE = ("swaps", "dsnot", "none")
REFIT = (False, "lstsq", "sparsegpt")
PATTERNS = ("0.6", "2:4", "unstructured:0.6")
ITERS = 4


def is_valid(warm, refine, refit, pattern):
    """The rule the API promises, written out independently of the code under test."""
    if refine == "dsnot" and pattern.startswith("unstructured"):
        return False
    if refit == "sparsegpt":
        return warm == "sparsegpt" and refine == "none" and pattern != "0.6"
    return True


ALL = list(itertools.product(WARM, REFINE, REFIT, PATTERNS))
VALID = [c for c in ALL if is_valid(*c)]
INVALID = [c for c in ALL if not is_valid(*c)]


# ------------------------------------------------------------------------------------------------ option checks
def test_option_rule_matches_check_prune_options():
    assert len(VALID) == 4 * (3 * 2 + 2 * 2 + 3 * 2) + 2
    for warm, refine, refit, pattern in VALID:
        check_prune_options(pattern, warm, refine, refit)
    for warm, refine, refit, pattern in INVALID:
        with pytest.raises(ValueError, match="use "):  # every message says what to change
            check_prune_options(pattern, warm, refine, refit)


@pytest.mark.parametrize("kwargs, message", [
    (dict(pattern="unstructured:0.6", refine="dsnot"), r"refine='dsnot'.*unstructured:0.6.*refine='swaps'.*'0.6'"),
    (dict(pattern="2:4", refit="sparsegpt"), r"warm_start='sparsegpt' with refine='none'"),
    (dict(pattern="2:4", warm_start="sparsegpt", refit="sparsegpt"), r"needs refine='none'.*refit='lstsq'"),
    (dict(pattern="0.6", warm_start="sparsegpt", refine="none", refit="sparsegpt"),
     r"per 128-column block.*pattern='unstructured:0.6'"),
    (dict(refine="obs"), r"unknown refine 'obs'.*'swaps'.*'dsnot'.*'none'"),
    (dict(refit="ols"), r"unknown refit 'ols'.*'lstsq'.*'sparsegpt'"),
    (dict(warm_start="owl"), r"unknown warm start 'owl'.*'sparsegpt'"),
])
def test_invalid_combinations_raise_before_any_work(kwargs, message):
    model = build("llama")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match=message):
        sp.sparsify(model, calib(1), progress=False, **kwargs)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_prepare_convert_dsnot_needs_the_statistics_from_prepare():
    model = build("llama")
    prepared = sp.prepare(model, calib(1)[0], pattern="0.6")
    for ids in calib(2):
        prepared(ids)
    with pytest.raises(ValueError, match=r"refine='dsnot' needs DSnoT's per-channel statistics.*prepare\(\)"):
        sp.convert(prepared, refine="dsnot", progress=False)
    with pytest.raises(ValueError, match="unstructured"):
        sp.prepare(build("llama"), calib(1)[0], pattern="unstructured:0.6", refine="dsnot")

    model = build("llama")
    prepared = sp.prepare(model, calib(1)[0], pattern="0.6", refine="dsnot")
    for ids in calib(2):
        prepared(ids)
    report = sp.convert(prepared, max_iters=ITERS, progress=False)  # refine from prepare
    assert {r.refine for r in report.pruned} == {"dsnot", "none"}
    assert report["model.layers.0.self_attn.q_proj"].refine == "dsnot"


# ------------------------------------------------------------------------------------------------ prune_weights
def group(seed=0, d_in=16, seqs=6, seqlen=10, dead=None):
    """Weights of one Gram group, their inputs' G and ChannelStats (inputs: ``seqs`` sequences)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(seqs, seqlen, d_in, generator=g, dtype=torch.float64) + 0.2
    X *= 0.3 + torch.rand(d_in, generator=g, dtype=torch.float64)  # uneven channel norms
    if dead is not None:
        X[..., dead] = 0
    Ws = [torch.randn(d_out, d_in, generator=g, dtype=torch.float64) for d_out in (8, 4)]
    stats = sp.ChannelStats(d_in)
    stats.update(X)
    x2 = X.reshape(-1, d_in)
    return Ws, x2.T @ x2, {"sequences": seqs, "channel_stats": stats}


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("refine", ["swaps", "none"])
def test_lstsq_refit_is_refit_weights_on_the_final_mask(pattern, refine):
    Ws, G, stats = group()
    plain = sp.prune_weights(Ws, G, pattern, refine=refine, max_iters=ITERS, statistics=stats)
    fitted = sp.prune_weights(Ws, G, pattern, refine=refine, refit=True, max_iters=ITERS, statistics=stats)
    for W, a, b in zip(Ws, plain, fitted):
        assert torch.equal(a.mask, b.mask) and a.loss_final == b.loss_final and a.weight is None
        fit = sp.refit_weights(W, G, b.mask, damping=0.01)
        assert torch.equal(b.weight, fit.weight) and b.loss_refit == fit.total_after
        assert b.refit == "lstsq" and math.isnan(a.loss_refit)
        assert bool((b.weight[~b.mask] == 0).all())
        assert b.loss_refit <= b.loss_final


@pytest.mark.parametrize("pattern", ["2:4", "unstructured:0.6"])
def test_sparsegpt_baseline_writes_sparsegpt_weights_from_one_call(pattern, monkeypatch):
    Ws, G, stats = group(1, dead=3)  # a dead input: n_samples matters (H = 2G/n)
    calls = []
    real = prune_step.sparsegpt_prune
    monkeypatch.setattr(prune_step, "sparsegpt_prune", lambda *a, **k: calls.append(1) or real(*a, **k))
    results = sp.prune_weights(Ws, G, pattern, warm_start="sparsegpt", refine="none", refit="sparsegpt",
                               statistics=stats)
    assert len(calls) == len(Ws)  # one SparseGPT run per weight, reused for mask and weights
    for W, res in zip(Ws, results):
        ref = real(W, G, pattern, n_samples=stats["sequences"])
        assert torch.equal(res.mask, ref.mask) and torch.equal(res.weight, ref.weight)
        assert res.loss_refit == float(ref.loss.double().sum())
        assert res.loss_final == pytest.approx(float(ref.loss_mask_only.double().sum()), rel=1e-12)
        parse_pattern(pattern).check_mask(res.mask)


def test_sparsegpt_warm_start_uses_the_sequence_count():
    Ws, G, stats = group(2, dead=5)
    G = G * 1e-4  # small activations: the dead input's H_jj = 1 weighs in the damping, so H = 2G/n matters
    res = sp.prune_weights(Ws, G, "0.6", warm_start="sparsegpt", max_iters=0, statistics=stats)
    for W, r in zip(Ws, res):
        assert torch.equal(r.mask, sp.sparsegpt_warm_start(W, G, "0.6", n_samples=stats["sequences"]))
    assert not torch.equal(res[0].mask, sp.sparsegpt_warm_start(Ws[0], G, "0.6"))  # the count made a difference


@pytest.mark.parametrize("pattern", ["0.6", "2:4"])
@pytest.mark.parametrize("warm", ["wanda", "ria", "sparsegpt"])
def test_dsnot_is_dsnot_refine_from_the_warm_start(pattern, warm):
    Ws, G, stats = group(3)
    names = ["blk.self_attn.q_proj", "blk.mlp.up_proj"]
    results = sp.prune_weights(Ws, G, pattern, warm_start=warm, refine="dsnot", statistics=stats, names=names)
    W, res = Ws[0], results[0]
    if warm == "sparsegpt":
        sg = sp.sparsegpt_prune(W, G, pattern, n_samples=stats["sequences"])
        start, scores = sp.project_mask(sg.mask, sg.scores, pattern), sg.scores
    else:
        start, scores = sp.warm_start(W, G, pattern, warm), sp.warm_start_scores(W, G, warm)
    init = scores if pattern == "2:4" and warm != "wanda" else None
    ref = sp.dsnot_refine(W, G, start, stats["channel_stats"], pattern, init_scores=init)
    assert torch.equal(res.mask, ref.mask) and res.refine == "dsnot" and res.swaps == int(ref.swaps.sum())
    assert res.loss_warm == ref.total_before and res.loss_final == ref.total_after
    skipped = results[1]  # an mlp site: DSnoT's skip_layer="mlp" keeps the warm start
    assert skipped.refine == "none" and "skip_layer='mlp'" in skipped.note and skipped.swaps == 0
    assert skipped.loss_final == skipped.loss_warm
    all_sites = sp.prune_weights(Ws, G, pattern, warm_start=warm, refine="dsnot", statistics=stats, names=names,
                                 dsnot_skip_layer="no_skip")
    assert all_sites[1].refine == "dsnot"


def test_dsnot_without_channel_stats_is_a_clear_error():
    Ws, G, _ = group()
    with pytest.raises(ValueError, match=r"blk.self_attn.q_proj: refine='dsnot' needs .*ChannelStats"):
        sp.prune_weights(Ws[:1], G, "0.6", refine="dsnot", names=["blk.self_attn.q_proj"])


# ------------------------------------------------------------------------------------------------ tiny models
def check_run(model, report, before, warm, refine, refit, pattern):
    params = dict(model.named_parameters())
    records = report.pruned_weights()
    assert len(records) == len(report.pruned) > 0
    for rec in records:
        rec.check()  # the pattern holds
        p = params[rec.name].detach()
        assert bool((p[~rec.mask] == 0).all()), rec.name  # pruned entries are exactly zero
        if not refit:
            assert torch.equal(p, before[rec.name] * rec.mask), rec.name
        else:  # new weights on the kept entries
            assert not torch.equal(p, before[rec.name] * rec.mask), rec.name
            assert bool((p[rec.mask] != 0).all()), rec.name  # the mask is exactly the non-zeros
    assert report.settings["refine"] == refine and report.settings["refit"] == (refit or "none")
    for row in report.pruned:
        assert row.warm_start == warm
        assert row.loss_final <= row.loss_warm * (1 + 1e-6) or refine == "dsnot", row.name
        if refit:
            assert row.refit == refit and math.isfinite(row.loss_refit), row.name
            assert row.loss_refit <= row.loss_final * (1 + 1e-6), row.name  # refit never worse than the mask alone
        else:
            assert row.refit == "none" and math.isnan(row.loss_refit)
        if refine == "none":
            assert row.refine == "none" and row.swaps == 0 and row.loss_final == row.loss_warm
        elif refine == "dsnot":
            mlp = row.name.split(".")[-2] == "mlp"
            assert row.refine == ("none" if mlp else "dsnot"), row.name
            assert ("skip_layer='mlp'" in row.reason) == mlp
            if mlp:
                assert row.loss_final == row.loss_warm and row.swaps == 0
        else:
            assert row.refine == "swaps"
    if pattern.startswith("unstructured") and refine == "swaps":
        assert sum(r.cross_moves for r in report.pruned) > 0  # rows trade kept weights
        assert "cross" in str(report)
    if refit:
        assert "refit loss" in str(report)
    back = sp.SparsifyReport.from_dict(report.to_dict())
    assert [r.loss_refit for r in back.pruned] == pytest.approx([r.loss_refit for r in report.pruned], nan_ok=True)


# every valid combination once, on LLaMA (nn.Linear) and GPT-2 (Conv1D, weights stored d_in × d_out) in turn
GRID = [("llama" if i % 2 == 0 else "gpt2", *c) for i, c in enumerate(VALID)]


@pytest.mark.parametrize("arch, warm, refine, refit, pattern", GRID, ids=["-".join(map(str, c)) for c in GRID])
def test_every_valid_combination_on_tiny_models(arch, warm, refine, refit, pattern):
    model = build(arch)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model, report = sp.sparsify(model, calib(), pattern=pattern, warm_start=warm, refine=refine, refit=refit,
                                max_iters=ITERS, progress=False)
    check_run(model, report, before, warm, refine, refit, pattern)


def level0_qkv(model, items):
    """Float64 G and ChannelStats of the dense inputs of layer 0's q/k/v (LLaMA), from a forward hook."""
    attn = model.model.layers[0].self_attn
    d = attn.q_proj.in_features
    G = torch.zeros(d, d, dtype=torch.float64)
    stats = sp.ChannelStats(d)

    def hook(_, args):
        x = args[0].detach().double()
        G.add_(x.reshape(-1, d).T @ x.reshape(-1, d))
        stats.update(x)

    handle = attn.q_proj.register_forward_pre_hook(hook)
    with torch.no_grad():
        for ids in items:
            model(input_ids=ids)
    handle.remove()
    return [attn.q_proj.weight.detach().clone(), attn.k_proj.weight.detach().clone(),
            attn.v_proj.weight.detach().clone()], G, {"sequences": len(items), "channel_stats": stats}


@pytest.mark.parametrize("warm, refine, refit, pattern", [
    ("wanda", "swaps", "lstsq", "0.6"),
    ("ria", "dsnot", "lstsq", "2:4"),
    ("sparsegpt", "none", "sparsegpt", "2:4"),
    ("sparsegpt", "swaps", "lstsq", "unstructured:0.6"),
])
def test_the_pass_writes_what_prune_weights_computes(warm, refine, refit, pattern):
    """Level 0 sees the dense inputs: the written q/k/v equal prune_weights on independently collected G."""
    items = calib()
    model = build("llama")
    Ws, G, stats = level0_qkv(model, items)
    expected = sp.prune_weights(Ws, G, pattern, warm_start=warm, refine=refine, refit=refit, max_iters=ITERS,
                                statistics=stats, names=["q_proj", "k_proj", "v_proj"])
    model, report = sp.sparsify(model, items, pattern=pattern, warm_start=warm, refine=refine, refit=refit,
                                max_iters=ITERS, gram_dtype=torch.float64, progress=False)
    attn = model.model.layers[0].self_attn
    for name, res in zip(("q_proj", "k_proj", "v_proj"), expected):
        weight = getattr(attn, name).weight.detach()
        assert torch.equal(weight != 0, res.mask)
        torch.testing.assert_close(weight, res.weight.float(), rtol=1e-5, atol=1e-7)
        row = report[f"model.layers.0.self_attn.{name}"]
        assert row.loss_refit == pytest.approx(res.loss_refit, rel=1e-6)
        assert row.loss_final == pytest.approx(res.loss_final, rel=1e-6)
