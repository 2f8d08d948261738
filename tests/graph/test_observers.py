"""Gram matrices of the pass against X Xᵀ computed by hand from forward hooks, one-shot and sequential."""
import pytest
import torch
from tiny_hf import build, calib
from torch import nn
from transformers.pytorch_utils import Conv1D

import swappass as sp
from swappass.graph import GramObserver


class RecordingObserver(GramObserver):
    """A GramObserver (float64) that keeps a copy of G when the pass releases it."""

    def __init__(self, store, name, d_in):
        super().__init__(name, d_in, dtype=torch.float64)
        self.store = store

    def release(self):
        self.store[self.name] = self.accumulator.G.clone()
        super().release()


def run_pass(arch, items, sequential):
    store = {}
    model, report = sp.sparsify(
        build(arch), items, pattern="0.5", max_iters=3, sequential=sequential,
        observer=lambda name, d_in: RecordingObserver(store, name, d_in), progress=False,
    )
    return model, report, store


def hook_grams(model, items):
    """``{module name: Σ x xᵀ}`` (float64) of every Linear / Conv1D input over ``items``."""
    grams, handles = {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Linear, Conv1D)):
            def hook(m, args, name=name):
                x = args[0].detach().double().reshape(-1, args[0].shape[-1])
                grams[name] = grams.get(name, 0) + x.T @ x
            handles.append(mod.register_forward_pre_hook(hook))
    with torch.no_grad():
        for ids in items:
            model(input_ids=ids)
    for h in handles:
        h.remove()
    return grams


def assert_group_grams_equal(report, store, reference):
    assert store, "no Gram matrix was recorded"
    for row in report.pruned:
        G = store[row.group]
        ref = reference[row.name]
        assert G.shape == ref.shape
        torch.testing.assert_close(G, ref, rtol=1e-9, atol=1e-9 * float(ref.abs().max()), msg=row.name)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_one_shot_gram_equals_hooks_on_the_dense_model(arch):
    items = calib(3)
    dense = hook_grams(build(arch), items)
    _, report, store = run_pass(arch, items, sequential=False)
    assert_group_grams_equal(report, store, dense)
    # q/k/v (LLaMA) share one G: one recorded matrix serves three sites
    if arch == "llama":
        assert report["model.layers.0.self_attn.k_proj"].group == report["model.layers.0.self_attn.q_proj"].group


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_sequential_gram_reflects_the_pruned_upstream_sites(arch):
    items = calib(3)
    dense = hook_grams(build(arch), items)
    model, report, store = run_pass(arch, items, sequential=True)
    # Every site's input depends only on sites of lower levels, and those were pruned before it was
    # calibrated: so the hooks on the finished (fully pruned) model see exactly what the pass saw.
    pruned = hook_grams(model, items)
    assert_group_grams_equal(report, store, pruned)
    for row in report.pruned:
        same = torch.allclose(store[row.group], dense[row.name], rtol=1e-6, atol=0)
        assert same == (row.level == 0), (row.name, row.level)  # downstream of a pruned site, G changed


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bert"])
def test_block_order_calibrates_each_block_dense_on_the_pruned_blocks_before_it(arch):
    """Wanda's order: a site's G is that of a model whose earlier blocks are pruned and whose own block is dense."""
    items = calib(3)
    model, report, store = run_pass(arch, items, sequential="block")
    levels = 2 + (arch == "bert")  # 2 transformer blocks; BERT's pooler is a block of its own
    assert report.settings["calibration_order"] == "block" and report.settings["levels"] == levels
    pruned = dict(model.named_parameters())
    for block in range(levels):
        reference = build(arch)  # dense, the same initial weights
        with torch.no_grad():
            params = dict(reference.named_parameters())
            for row in report.pruned:
                if row.level < block:
                    params[row.param].copy_(pruned[row.param])
        grams = hook_grams(reference, items)
        rows = [r for r in report.pruned if r.level == block]
        assert rows
        for row in rows:
            ref = grams[row.name]
            torch.testing.assert_close(store[row.group], ref, rtol=1e-9, atol=1e-9 * float(ref.abs().max()),
                                       msg=row.name)


def test_block_order_differs_from_level_order_inside_a_block_only():
    items = calib(3)
    _, level_report, level_store = run_pass("llama", items, sequential="level")
    _, block_report, block_store = run_pass("llama", items, sequential="block")
    for row in block_report.pruned:
        same = torch.allclose(block_store[row.group], level_store[level_report[row.name].group], rtol=1e-9, atol=0)
        first_in_block = row.name.endswith(("q_proj", "k_proj", "v_proj"))
        first = first_in_block and row.level == 0
        assert same == first or (first_in_block and not first), row.name  # block 0's q/k/v see the same inputs


def test_unknown_calibration_order_is_named():
    with pytest.raises(sp.InputError, match="unknown calibration order 'blocks'.*'level'.*'block'.*'none'"):
        sp.sparsify(build("llama"), calib(1), sequential="blocks", progress=False)
