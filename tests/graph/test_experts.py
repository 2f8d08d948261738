"""Mixture-of-experts sites: one site per expert of the fused 3-D parameters, Gram matrices of the routed rows only,
routers dense by default, write-back into the fused parameter, unrouted experts, checkpoints and ONNX."""
import pytest
import torch
import torch.nn.functional as F
from tiny_hf import VOCAB, build_moe, calib

import swappass as sp
from swappass.core.masks import load_masks, save_masks
from swappass.core.patterns import parse_pattern
from swappass.core.routing import expert_counts, expert_rows
from swappass.graph import find_sites


def _routed_reference(model, ids, layer: int = 0):
    """Per-expert Gram matrices of layer ``layer``, computed independently of the graph: the MoE block's input,
    the router's top-k, the rows of every expert (unweighted), and its intermediate activations for down_proj."""
    seen = {}
    block = model.model.layers[layer].mlp
    handle = block.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0].detach()))
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
    handle.remove()
    x = seen["x"].reshape(-1, seen["x"].shape[-1])
    logits = x @ block.gate.weight.T
    top = torch.topk(torch.softmax(logits.float(), -1), block.gate.top_k, dim=-1).indices
    experts = block.experts
    out = {}
    for e in range(experts.num_experts):
        rows = x[(top == e).any(-1)]
        gate, up = (rows @ experts.gate_up_proj[e].detach().T).chunk(2, dim=-1)
        h = F.silu(gate) * up
        out[e] = (rows.T @ rows, h.T @ h, rows.shape[0])
    return out


def test_expert_rows_split_by_offsets_and_by_ids():
    x = torch.arange(12.0).reshape(6, 2)
    parts = expert_rows(x, torch.tensor([2, 2, 5], dtype=torch.int32), "offsets", 3)
    assert [p.shape[0] for p in parts] == [2, 0, 3]
    assert torch.equal(parts[2], x[2:5])  # rows past the last offset belong to no expert
    ids = torch.tensor([1, 0, 1, 2, 0, 1])
    parts = expert_rows(x.unsqueeze(-1), ids, "ids", 3)  # (S, d_in, 1) as bmm reads it
    assert torch.equal(parts[1], x[[0, 2, 5]]) and torch.equal(parts[0], x[[1, 4]]) and torch.equal(parts[2], x[[3]])
    assert expert_counts(ids, "ids", 4) == [2, 3, 1, 0]


@pytest.mark.parametrize("implementation", ["grouped_mm", "batched_mm"])
def test_every_expert_is_a_site_and_the_router_stays_dense(implementation):
    model = build_moe("mixtral", experts=4, implementation=implementation)
    sites = find_sites(sp.capture(model, calib(1)[0]))
    experts = [s for s in sites if s.expert is not None]
    assert len(experts) == 2 * 2 * 4  # layers × (gate_up, down) × experts
    s = next(s for s in experts if s.name == "model.layers.1.mlp.experts.down_proj[3]")
    assert s.param_name == "model.layers.1.mlp.experts.down_proj" and s.shape == (32, 64) and not s.transposed
    assert s.layout == ("offsets" if implementation == "grouped_mm" else "ids")
    routers = [s for s in sites if s.role == "router"]
    assert [s.name for s in routers] == ["model.layers.0.mlp.gate", "model.layers.1.mlp.gate"]
    _, report = sp.sparsify(model, calib(2), pattern="2:4", max_iters=5, progress=False)
    assert report["model.layers.0.mlp.gate"].status == "ignored"
    assert "router" in report["model.layers.0.mlp.gate"].reason
    assert len([r for r in report.pruned if r.expert is not None]) == 16


def test_gram_matrix_of_each_expert_holds_only_its_routed_rows():
    model = build_moe("mixtral", experts=4)
    ids = calib(1, seq=16)[0]
    reference = _routed_reference(model, ids)
    prepared = sp.prepare(model, ids, pattern="2:4")
    prepared(ids)
    for e, (g_in, g_hidden, tokens) in reference.items():
        up = prepared.observers[f"model.layers.0.mlp.experts.gate_up_proj[{e}]"]
        down = prepared.observers[f"model.layers.0.mlp.experts.down_proj[{e}]"]
        assert up.tokens == down.tokens == tokens
        torch.testing.assert_close(up.statistics()["G"], g_in, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(down.statistics()["G"], g_hidden, rtol=1e-4, atol=1e-6)
    assert sum(t for _, _, t in reference.values()) == 2 * ids.numel()  # top-2: every token twice
    assert len({g.key for g in prepared.groups}) == len(prepared.groups)
    assert all(len(g.sites) == 1 for g in prepared.groups if g.expert is not None)  # experts never share


def test_grouped_and_batched_layouts_give_the_same_masks():
    results = []
    for implementation in ("grouped_mm", "batched_mm"):
        model = build_moe("mixtral", implementation=implementation)
        _, report = sp.sparsify(model, calib(2), pattern="0.6", max_iters=20, progress=False)
        results.append({r.name: r.mask() for r in report.pruned})
    assert results[0].keys() == results[1].keys()
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_bfloat16_grouped_mm_experts_are_sites():
    model = build_moe("mixtral").to(torch.bfloat16)
    captured = sp.capture(model, calib(1)[0])
    assert any("_grouped_mm" in str(n.target) for n in captured.graph_module.graph.nodes)
    assert len([s for s in find_sites(captured) if s.expert is not None]) == 16


def test_pruned_experts_are_written_into_the_fused_parameter_with_exact_patterns():
    model = build_moe("mixtral")
    dense = {n: p.detach().clone() for n, p in model.named_parameters()}
    _, report = sp.sparsify(model, calib(3), pattern="2:4", max_iters=20, progress=False)
    params = dict(model.named_parameters())
    for row in (r for r in report.pruned if r.expert is not None):
        stored = params[row.param].detach()[row.expert]
        mask = row.mask()
        assert torch.equal(stored, dense[row.param][row.expert].masked_fill(~mask, 0))
        parse_pattern("2:4").check_mask(mask, where=row.name)
        assert row.loss_final <= row.loss_warm * (1 + 1e-6)
        assert row.tokens > 0
    router = params["model.layers.0.mlp.gate.weight"]
    assert torch.equal(router, dense["model.layers.0.mlp.gate.weight"])
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=calib(1)[0]).logits).all()


def test_an_expert_without_tokens_keeps_a_magnitude_mask_and_says_so():
    model = build_moe("mixtral", experts=8, top_k=1)
    ids = torch.tensor([[5, 9]])  # two tokens, top-1: at most two of the eight experts see a token
    _, report = sp.sparsify(model, [ids], pattern="2:4", max_iters=10, progress=False)
    idle = [r for r in report.pruned if r.expert is not None and r.tokens == 0]
    busy = [r for r in report.pruned if r.expert is not None and r.tokens > 0]
    assert idle and busy
    params = dict(model.named_parameters())
    for row in idle:
        assert row.warm_start == "magnitude" and row.swaps == 0 and "no calibration token" in row.reason
        w = params[row.param].detach()[row.expert]
        assert torch.equal(row.mask(), sp.warm_start(w, torch.eye(w.shape[1]), "2:4", "magnitude"))
    assert all(r.warm_start == "wanda" for r in busy)
    assert "no calibration token" in str(report)


def test_routers_and_shared_expert_gates_are_selectable_with_targets():
    model = build_moe("qwen2_moe")
    _, report = sp.sparsify(model, calib(2), pattern="0.5", max_iters=2, progress=False)
    assert report["model.layers.0.mlp.shared_expert_gate"].status == "ignored"
    assert report["model.layers.0.mlp.shared_expert.up_proj"].status == "pruned"
    model = build_moe("qwen2_moe")
    _, report = sp.sparsify(model, calib(2), pattern="0.5", max_iters=2, targets=["mlp"], progress=False)
    assert report["model.layers.0.mlp.gate"].status == "ignored"  # a containing module does not pick the router
    assert report["model.layers.0.mlp.experts.down_proj[2]"].status == "pruned"
    model = build_moe("qwen2_moe")
    _, report = sp.sparsify(model, calib(2), pattern="0.5", max_iters=2, targets=["mlp.gate", "shared_expert_gate"],
                            progress=False)
    assert report["model.layers.1.mlp.gate"].status == "pruned"
    assert report["model.layers.1.mlp.shared_expert_gate"].status == "pruned"
    assert not [r for r in report.pruned if r.expert is not None]


def test_a_pruned_router_comes_a_level_before_its_experts():
    model = build_moe("mixtral")
    _, report = sp.sparsify(model, calib(2), pattern="0.5", max_iters=2, targets=["mlp.gate", "experts"],
                            progress=False)
    assert report["model.layers.0.mlp.experts.gate_up_proj[0]"].level == report["model.layers.0.mlp.gate"].level + 1


def test_resume_restores_expert_levels_bit_for_bit():
    states = []
    model = build_moe("mixtral")
    _, full = sp.sparsify(model, calib(2), pattern="2:4", max_iters=10, refit=True, progress=False,
                          checkpoint=states.append)
    again = build_moe("mixtral")
    _, resumed = sp.sparsify(again, calib(2), pattern="2:4", max_iters=10, refit=True, progress=False,
                             resume=states[:3])
    assert any(k.endswith("]") for s in states for k in s.weights)  # refitted expert slices are kept by key
    for (n, p), q in zip(model.named_parameters(), again.parameters()):
        assert torch.equal(p, q), n
    assert [(r.name, r.status, r.loss_final, r.tokens) for r in full.rows] == \
        [(r.name, r.status, r.loss_final, r.tokens) for r in resumed.rows]


def test_expert_masks_round_trip_through_the_masks_file(tmp_path):
    model = build_moe("mixtral")
    _, report = sp.sparsify(model, calib(2), pattern="2:4", max_iters=2, progress=False)
    records = report.pruned_weights()
    path = save_masks(records, tmp_path / "masks.safetensors")
    loaded = load_masks(path)
    assert set(loaded) == {r.key for r in records}
    rec = loaded["model.layers.0.mlp.experts.gate_up_proj[2]"]
    assert rec.name == "model.layers.0.mlp.experts.gate_up_proj" and rec.expert == 2
    assert torch.equal(rec.mask, report["model.layers.0.mlp.experts.gate_up_proj[2]"].mask())
    rec.check()


def test_onnx_export_audits_every_expert_and_catches_a_tampered_one(tmp_path):
    import onnx
    from onnx import numpy_helper

    model = build_moe("mixtral")
    _, report = sp.sparsify(model, calib(2), pattern="2:4", max_iters=5, progress=False)
    records = report.pruned_weights()
    ids = torch.randint(3, VOCAB, (2, 10), generator=torch.Generator().manual_seed(3))
    path = tmp_path / "moe.onnx"
    result = sp.export_onnx(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, path, masks=records,
                            verbose=False)
    assert result.passed and result.audit.passed
    experts = [e for e in result.audit.entries if e.expert is not None]
    assert len(experts) == 16 and all(e.status == "ok" for e in experts)
    assert model.config._experts_implementation == "grouped_mm"  # the model's own setting is restored
    proto = onnx.load(str(path))
    name = "model.layers.1.mlp.experts.down_proj"
    init = next(t for t in proto.graph.initializer if t.name == name)
    arr = numpy_helper.to_array(init).copy()
    mask = report[f"{name}[3]"].mask().numpy()
    r, c = [int(v) for v in (~mask).nonzero()[0][:1]], [int(v) for v in (~mask).nonzero()[1][:1]]
    arr[3, r[0], c[0]] = 1.0
    init.CopyFrom(numpy_helper.from_array(arr, name))
    audit = sp.onnx.audit_sparsity(proto, records, dict(model.named_parameters()))
    assert [e.key for e in audit.failures] == [f"{name}[3]"]


def test_the_eager_expert_loop_cannot_be_captured_and_the_error_says_what_to_load():
    model = build_moe("mixtral", implementation="eager")
    with pytest.raises(sp.CaptureError, match="experts_implementation='grouped_mm'"):
        sp.capture(model, calib(1)[0], method="export")
