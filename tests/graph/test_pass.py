"""The graph pass end to end on tiny Hugging Face models and plain modules (CPU, seconds)."""
import copy
import json

import pytest
import torch
import torch.nn.functional as F
from tiny_hf import ARCHS, SEQ, build, calib, outputs
from torch import nn
from transformers.pytorch_utils import Conv1D

import swappass as sp
from swappass.core.masks import load_masks, save_masks
from swappass.core.patterns import parse_pattern
from swappass.graph import CaptureError, find_sites

ITERS = 8


def linear_module_names(model):
    return {n for n, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D))}


# ------------------------------------------------------------------------------------------------ tiny HF models
@pytest.mark.parametrize("pattern", ["0.6", "2:4"])
@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_hf_model_pruned_exactly(arch, pattern):
    model = build(arch)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model, report = sp.sparsify(model, calib(), pattern=pattern, max_iters=ITERS, progress=False)

    expected = linear_module_names(model) - {"lm_head"}
    assert {r.name for r in report.pruned} == expected
    assert not report.skipped
    params = dict(model.named_parameters())
    records = report.pruned_weights()
    assert {r.name for r in records} == {f"{n}.weight" for n in expected}
    for rec in records:
        rec.check()  # the pattern holds on the (user-orientation) mask
        assert rec.transposed == (arch == "gpt2")
        assert rec.mask.shape == params[rec.name].shape
        # the user's parameter holds exactly the kept original weights
        assert torch.equal(params[rec.name].detach(), before[rec.name] * rec.mask)
    pruned_params = {r.name for r in records}
    for name, p in params.items():  # everything else (embeddings, norms, biases, lm_head) is untouched
        if name not in pruned_params:
            assert torch.equal(p.detach(), before[name]), name
    for r in report.pruned:
        assert r.tokens > 0 and r.pattern == str(parse_pattern(pattern))
        assert r.loss_final <= r.loss_warm * (1 + 1e-6), r.name
        assert 0 <= r.relative_reduction <= 1
    assert report.mean_relative_reduction > 0
    assert torch.isfinite(outputs(model, calib(1, seed=7)[0])).all()
    if arch != "bert":
        assert report["lm_head"].status == "ignored"


def test_llama_levels_follow_the_block_structure():
    model, report = sp.sparsify(build("llama"), calib(2), pattern="2:4", max_iters=0, progress=False)
    level = {r.name.split("model.layers.")[1]: r.level for r in report.pruned}
    for layer in range(2):
        base = 4 * layer
        assert level[f"{layer}.self_attn.q_proj"] == level[f"{layer}.self_attn.k_proj"] == base
        assert level[f"{layer}.self_attn.v_proj"] == base
        assert level[f"{layer}.self_attn.o_proj"] == base + 1
        assert level[f"{layer}.mlp.gate_proj"] == level[f"{layer}.mlp.up_proj"] == base + 2
        assert level[f"{layer}.mlp.down_proj"] == base + 3
    assert report.settings["levels"] == 8
    assert report["model.layers.0.self_attn.q_proj"].group == report["model.layers.0.self_attn.v_proj"].group


def test_stage_plan_runs_every_node_once_and_never_the_head():
    model = build("llama")
    prepared = sp.prepare(model, calib(1)[0], pattern="0.5", sequential=True)
    graph = next(iter(prepared.graphs.values()))
    plan = graph.plan()
    assert len(plan.stages) == graph.num_levels == 8
    seen = []
    for stage in plan.stages:
        seen += [n.name for n in stage.module.graph.nodes if n.op not in ("placeholder", "output", "get_attr")]
    assert len(seen) == len(set(seen))  # no node is computed in two stages (cost linear in depth)
    head = [s for s in graph.sites if s.name == "lm_head"][0]
    assert head.ops[0].name not in seen  # the logits are never computed during calibration
    # the last stage only observes: nothing crosses its end
    assert plan.stages[-1].outputs == []


# ------------------------------------------------------------------------------------------------ selection
def test_targets_and_ignore_select_sites():
    model = build("llama")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _, report = sp.sparsify(model, calib(2), pattern="0.5", max_iters=2, targets=["re:.*mlp"],
                            ignore=["down_proj"], progress=False)
    assert {r.name for r in report.pruned} == {
        f"model.layers.{i}.mlp.{p}" for i in range(2) for p in ("gate_proj", "up_proj")
    }
    assert report["model.layers.0.mlp.down_proj"].reason == "matched ignore 'down_proj'"
    assert report["model.layers.1.self_attn.q_proj"].reason == "not matched by targets"
    assert torch.equal(model.model.layers[0].mlp.down_proj.weight, before["model.layers.0.mlp.down_proj.weight"])


def test_class_name_selector_and_targets_matching_nothing():
    _, report = sp.sparsify(build("gpt2"), calib(2), pattern="2:4", max_iters=1, targets=["Conv1D"],
                            ignore=["re:.*\\.mlp\\."], progress=False)
    assert {r.name for r in report.pruned} == {f"transformer.h.{i}.attn.{p}" for i in range(2)
                                               for p in ("c_attn", "c_proj")}
    with pytest.raises(ValueError, match="matched no prunable Linear site"):
        sp.sparsify(build("llama"), calib(1), targets=["no_such_layer"], progress=False)


def test_tied_output_weight_is_never_pruned():
    model = build("gpt2")
    assert model.lm_head.weight is model.transformer.wte.weight
    before = model.lm_head.weight.detach().clone()
    _, report = sp.sparsify(model, calib(2), pattern="0.5", max_iters=1, ignore=[], progress=False)
    assert report["lm_head"].status == "ignored" and "tied to the embedding" in report["lm_head"].reason
    assert torch.equal(model.transformer.wte.weight, before)


def test_untied_lm_head_can_be_pruned_when_asked():
    model = build("llama")  # LLaMA's lm_head is not tied by default
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    _, report = sp.sparsify(model, calib(2), pattern="0.5", max_iters=1, ignore=[], progress=False)
    assert report["lm_head"].status == "pruned"
    _, report = sp.sparsify(build("llama"), calib(2), pattern="0.5", max_iters=1, progress=False)
    assert report["lm_head"].status == "ignored"


# ------------------------------------------------------------------------------------------------ plain modules
class PlainNet(nn.Module):
    """nn.Linear, an F.linear with a bare parameter, and a Conv1D-style ``x @ W`` (W stored d_in × d_out)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(16, 24)
        self.w_f = nn.Parameter(torch.randn(32, 24) / 5)  # d_out × d_in, used through F.linear
        self.w_t = nn.Parameter(torch.randn(32, 8) / 5)   # d_in × d_out, used as x @ W
        self.norm = nn.LayerNorm(24)                      # a leaf module (call_module) for symbolic_trace
        self.odd = nn.Linear(8, 6)

    def forward(self, x):
        h = self.norm(torch.relu(self.inp(x)))
        h = torch.tanh(F.linear(h, self.w_f))
        return self.odd(h @ self.w_t)


@pytest.mark.parametrize("method", ["export", "symbolic_trace"])
def test_plain_module_sites_both_tracers(method):
    torch.manual_seed(0)
    net = PlainNet()
    captured = sp.capture(net, torch.randn(4, 16), method=method)
    assert captured.method == method
    sites = {s.name: s for s in find_sites(captured)}
    assert set(sites) == {"inp", "w_f", "w_t", "odd"}
    assert sites["w_t"].transposed and not sites["w_f"].transposed
    assert sites["w_t"].shape == (8, 32) and sites["w_f"].shape == (32, 24)
    assert sites["inp"].weight is net.inp.weight  # the user's own parameter, not a copy

    w_t = net.w_t.detach().clone()
    data = [torch.randn(4, 16) for _ in range(3)]
    _, report = sp.sparsify(net, data, pattern="2:4", max_iters=4, method=method, progress=False)
    assert {r.name for r in report.pruned} == {"inp", "w_f", "w_t", "odd"}
    for rec in report.pruned_weights():
        rec.check()
    mask = report["w_t"].mask()
    assert mask.shape == (32, 8)  # stored orientation
    assert torch.equal(net.w_t.detach(), w_t * mask)
    assert ((mask.T.reshape(8, 8, 4).sum(-1)) == 2).all()  # 2 of every 4 inputs of each output neuron


def test_layers_that_cannot_take_the_pattern_are_skipped_and_listed():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 8))
    w0 = net[0].weight.detach().clone()
    with pytest.warns(UserWarning, match="not divisible by M = 4"):
        _, report = sp.sparsify(net, [torch.randn(5, 10)], pattern="2:4", max_iters=2, progress=False)
    row = report["0"]
    assert row.status == "skipped" and "d_in = 10" in row.reason
    assert torch.equal(net[0].weight, w0)
    assert report["2"].status == "pruned"
    assert "skipped" in str(report) and "1 skipped" in str(report)


# ------------------------------------------------------------------------------------------------ bad inputs
def test_nan_activation_names_the_site():
    model = build("llama")
    with torch.no_grad():
        model.model.layers[0].post_attention_layernorm.weight[3] = float("nan")
    with pytest.raises(sp.NonFiniteActivationError, match=r"model\.layers\.0\.mlp\.gate_proj"):
        sp.sparsify(model, calib(2), pattern="0.5", max_iters=1, progress=False)


def test_nan_in_the_input_of_a_plain_module():
    net = nn.Sequential(nn.Linear(8, 8))
    x = torch.randn(3, 8)
    x[1, 2] = float("inf")
    expected = r"^0: calibration input batch 0 contains NaN or Inf .*\[calibration item 0, level 0\]"
    with pytest.raises(sp.NonFiniteActivationError, match=expected):
        sp.sparsify(net, [x], pattern="0.5", progress=False)


def test_empty_calibration_set_is_an_error():
    with pytest.raises(ValueError, match="calibration set is empty"):
        sp.sparsify(build("llama"), [], progress=False)
    with pytest.raises(ValueError, match="calibration set is empty"):
        sp.sparsify(build("llama"), iter(()), progress=False)


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = Branchy()

    def forward(self, x):
        return self.gate(x)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)

    def forward(self, x):
        if x.sum() > 0:  # branches on the data: neither tracer can capture it
            return self.a(x)
        return self.b(x)


def test_untraceable_model_gives_a_clear_error():
    with pytest.raises(CaptureError) as info:
        sp.sparsify(DataDependent(), [torch.randn(2, 8)], progress=False)
    text = str(info.value)
    assert "could not capture DataDependent" in text
    assert "module 'gate' (Branchy)" in text          # the failing construct ...
    assert "if x.sum() > 0" in text                    # ... and its source line
    assert "export" in text and "symbolic_trace" in text
    assert "what to try" in text and "torch.cond" in text


def test_bad_arguments_fail_before_calibration():
    with pytest.raises(ValueError, match="unknown warm start"):
        sp.sparsify(build("llama"), calib(1), warm_start="best", progress=False)
    with pytest.raises(ValueError, match="max_iters"):
        sp.sparsify(build("llama"), calib(1), max_iters=-1, progress=False)
    with pytest.raises(ValueError, match="cannot parse sparsity pattern"):
        sp.sparsify(build("llama"), calib(1), pattern="sixty", progress=False)
    with pytest.raises(TypeError, match="model input must be"):
        sp.sparsify(build("llama"), ["not a tensor"], progress=False)


# ---------------------------------------------------------------------------------------- shapes, batching, PT2E
def test_calibration_items_of_different_lengths_get_their_own_capture():
    items = calib(2, seq=SEQ) + calib(2, seq=SEQ - 4, seed=3)
    model, report = sp.sparsify(build("llama"), items, pattern="0.5", max_iters=2, progress=False)
    assert report.settings["captures"] == 2
    assert report["model.layers.1.mlp.down_proj"].tokens == 2 * SEQ + 2 * (SEQ - 4)
    for rec in report.pruned_weights():
        rec.check()


def test_batching_calibration_items_gives_the_same_masks():
    items = calib(4)
    _, r1 = sp.sparsify(build("qwen2"), items, pattern="0.5", max_iters=4, progress=False)
    _, r2 = sp.sparsify(build("qwen2"), items, pattern="0.5", max_iters=4, batch_size=2, progress=False)
    assert r2.settings["calibration_items"] == 2
    for a, b in zip(r1.pruned, r2.pruned):
        assert a.name == b.name and a.tokens == b.tokens
        assert torch.equal(a.mask(), b.mask()), a.name


def test_prepare_calibrate_convert_equals_one_shot_sparsify():
    items = calib(3)
    model = build("opt")
    prepared = sp.prepare(model, items[0], pattern="2:4")
    for ids in items:
        out = prepared(input_ids=ids)  # the prepared model runs like the model
        assert torch.isfinite(out.logits).all()
    report = sp.convert(prepared, max_iters=4, progress=False)
    _, ref = sp.sparsify(build("opt"), items, pattern="2:4", max_iters=4, sequential=False, progress=False)
    assert [r.name for r in report.pruned] == [r.name for r in ref.pruned]
    for a, b in zip(report.pruned, ref.pruned):
        assert torch.equal(a.mask(), b.mask()), a.name
    graph = next(iter(prepared.graphs.values())).graph_module
    assert not any(n.op == "call_module" and n.target.startswith("swappass_observer") for n in graph.graph.nodes)


def test_convert_without_calibration_is_an_error():
    prepared = sp.prepare(build("llama"), calib(1)[0], pattern="0.5")
    with pytest.raises(RuntimeError, match="no calibration data reached"):
        sp.convert(prepared, progress=False)


def test_one_shot_and_sequential_differ_downstream_only():
    items = calib(3)
    _, seq = sp.sparsify(build("llama"), items, pattern="0.5", max_iters=3, progress=False)
    _, one = sp.sparsify(build("llama"), items, pattern="0.5", max_iters=3, sequential=False, progress=False)
    first = "model.layers.0.self_attn.q_proj"
    assert torch.equal(seq[first].mask(), one[first].mask())  # level 0 sees the same inputs
    assert seq[first].loss_warm == pytest.approx(one[first].loss_warm)
    last = "model.layers.1.mlp.down_proj"
    assert seq[last].loss_warm != pytest.approx(one[last].loss_warm, rel=1e-4)


# ------------------------------------------------------------------------------------------------ report, provenance
def test_report_json_table_and_mask_records(tmp_path):
    model, report = sp.sparsify(build("gpt2"), calib(2), pattern="2:4", max_iters=3, progress=False)
    data = json.loads(report.to_json(tmp_path / "report.json"))
    assert (tmp_path / "report.json").exists()
    assert data["settings"]["pattern"] == "2:4" and data["settings"]["sequential"] is True
    site = next(s for s in data["sites"] if s["name"] == "transformer.h.0.attn.c_attn")
    assert site["shape"] == [96, 32] and site["transposed"] is True and site["status"] == "pruned"
    assert {"loss_warm", "loss_final", "relative_reduction", "swaps", "seconds"} <= set(site)
    again = sp.SparsifyReport.from_dict(data)
    assert [r.name for r in again] == [r.name for r in report]
    assert again["transformer.h.0.attn.c_attn"].loss_final == report["transformer.h.0.attn.c_attn"].loss_final
    table = str(report)
    assert "transformer.h.1.mlp.c_proj" in table and "reduction" in table and "8 pruned" in table
    path = save_masks(report.pruned_weights(), tmp_path / "masks.safetensors")
    loaded = load_masks(path)
    for rec in report.pruned_weights():
        assert torch.equal(loaded[rec.name].mask, rec.mask) and loaded[rec.name].transposed
        loaded[rec.name].check()


def test_capture_traces_nodes_back_to_modules_and_parameters():
    model = build("llama")
    captured = sp.capture(model, calib(1)[0])
    gm = captured.graph_module
    linear = [n for n in gm.graph.nodes if n.op == "call_function" and n.target == torch.ops.aten.linear.default]
    assert [captured.source(n).module for n in linear] == [
        f"model.layers.{i}.{m}" for i in range(2) for m in (
            "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    ] + ["lm_head"]
    assert captured.source(linear[0]).module_type == "Linear"
    weights = [n.args[1] for n in linear]
    assert captured.source(weights[0]).param == "model.layers.0.self_attn.q_proj.weight"
    assert gm.get_parameter("model.layers.0.self_attn.q_proj.weight") is model.model.layers[0].self_attn.q_proj.weight
    norm = [n for n in gm.graph.nodes if n.op == "call_function" and n.target == torch.ops.aten.rsqrt.default][0]
    assert captured.source(norm).module == "model.layers.0.input_layernorm"
    assert captured.source(norm).module_type == "LlamaRMSNorm"


def test_pruned_model_runs_without_swappass():
    model = build("llama")
    ids = calib(1, seed=9)[0]
    model, _ = sp.sparsify(model, calib(2), pattern="2:4", max_iters=2, progress=False)
    state = copy.deepcopy(model.state_dict())
    fresh = build("llama", seed=123)
    fresh.load_state_dict(state)  # a plain model object with the same weights computes the same outputs
    assert torch.allclose(outputs(model, ids), outputs(fresh, ids))
    assert type(model.model.layers[0].mlp.down_proj) is nn.Linear
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_tokenizer_style_dict_inputs(arch):
    items = [{"input_ids": x, "attention_mask": torch.ones_like(x)} for x in calib(2)]
    model, report = sp.sparsify(build(arch), items, pattern="2:4", max_iters=2, progress=False)
    assert len(report.pruned) == len(linear_module_names(model) - {"lm_head"})
    for rec in report.pruned_weights():
        rec.check()


def test_gram_dtype_and_device_options():
    prepared = sp.prepare(build("llama"), calib(1)[0], pattern="0.5", gram_dtype=torch.float64, gram_device="cpu")
    prepared(calib(1)[0])
    for obs in prepared.observers.values():
        G = obs.statistics()["G"]
        assert G.dtype == torch.float64 and G.device.type == "cpu" and obs.tokens == SEQ
    with pytest.raises(ValueError, match="float32 or float64"):
        sp.prepare(build("llama"), calib(1)[0], gram_dtype=torch.float16)


def test_gram_tf32_option_reaches_every_observer_and_the_report():
    prepared = sp.prepare(build("llama"), calib(1)[0], pattern="0.5", gram_tf32=True)
    assert all(obs.accumulator.tf32 for obs in prepared.observers.values())
    assert not any(obs.accumulator.tf32 for obs in sp.prepare(build("llama"), calib(1)[0]).observers.values())
    _, report = sp.sparsify(build("llama"), calib(1), pattern="0.5", max_iters=1, gram_tf32=True, progress=False)
    assert report.settings["gram_tf32"] is True


@pytest.mark.parametrize("order", ["level", "block"])
def test_resume_after_an_interrupt_gives_the_uninterrupted_result(order):
    items = calib(3)
    straight, _ = sp.sparsify(build("llama"), items, pattern="0.5", max_iters=3, sequential=order, progress=False)
    states = []

    def interrupt_after_the_first_level(state):
        states.append(state)
        if len(states) == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sp.sparsify(build("llama"), items, pattern="0.5", max_iters=3, sequential=order, progress=False,
                    checkpoint=interrupt_after_the_first_level)
    resumed, report = sp.sparsify(build("llama"), items, pattern="0.5", max_iters=3, sequential=order,
                                  progress=False, resume=states)
    a, b = dict(straight.named_parameters()), dict(resumed.named_parameters())
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert report.settings["calibration_order"] == order
