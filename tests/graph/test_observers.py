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
