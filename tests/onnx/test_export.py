"""ONNX export of one graph (no KV cache: ``kv_cache=False`` for the causal LMs): tiny LLaMA / GPT-2 / BERT pruned,
exported, checked in onnxruntime and audited; bad inputs. The KV-cache decoder: tests/onnx/test_decoder_export.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from pruning_helper import magnitude_prune
from torch import nn

import swappass as sp
from swappass.cli.export import export_pruned_dir
from swappass.core.masks import MASKS_FILE, PrunedWeight, save_masks
from swappass.onnx.adapter import ExportError
from swappass.onnx.audit import audit_sparsity
from swappass.onnx.metadata import METADATA_SPARSITY, read_sparsity_metadata

REPO = Path(__file__).resolve().parents[2]


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg)


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg)


def tiny_bert():
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=64)
    return BertModel(cfg)


def build(arch, pattern, seed=0):
    torch.manual_seed(seed)
    model = {"llama": tiny_llama, "gpt2": tiny_gpt2, "bert": tiny_bert}[arch]().eval()
    return model, magnitude_prune(model, pattern)


def token_inputs(arch, batch=2, seq=8, seed=1):
    ids = torch.randint(0, 96, (batch, seq), generator=torch.Generator().manual_seed(seed))
    if arch == "llama":  # a tokenizer's BatchEncoding
        from transformers import BatchEncoding

        return BatchEncoding({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    if arch == "gpt2":  # a bare tensor: input_ids
        return ids
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


@pytest.fixture(scope="module")
def llama_export(tmp_path_factory):
    """Pruned tiny LLaMA exports, made once per (pattern, compact): (model, records, report)."""
    cache = {}

    def get(pattern, compact=False):
        if (pattern, compact) not in cache:
            model, records = build("llama", pattern)
            path = tmp_path_factory.mktemp("llama") / f"{pattern.replace(':', '_')}{'_c' if compact else ''}.onnx"
            report = sp.export_onnx(model, token_inputs("llama"), path, masks=records, compact=compact, verbose=False,
                                    kv_cache=False)
            cache[pattern, compact] = model, records, report
        return cache[pattern, compact]

    return get


def eager_output(model, arch, feeds):
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    return (out.last_hidden_state if arch == "bert" else out.logits).numpy()


@pytest.mark.parametrize("pattern", ["2:4", "0.6"])
@pytest.mark.parametrize("arch", ["llama", "gpt2", "bert"])
def test_pruned_hf_model_exports_verifies_and_passes_audit(tmp_path, llama_export, arch, pattern):
    if arch == "llama":
        model, records, report = llama_export(pattern)
    else:
        model, records = build(arch, pattern)
        report = sp.export_onnx(model, token_inputs(arch), tmp_path / "model.onnx", masks=records, verbose=False,
                                kv_cache=False)
    path = report.path
    assert report.passed, report.failures()
    # onnxruntime against PyTorch at two different (batch, sequence) shapes
    shapes = {c.inputs for c in report.checks}
    assert shapes == {"example 2×8", "second 3×11"}
    assert all(c.max_abs <= c.tolerance for c in report.checks)
    out_name = "last_hidden_state" if arch == "bert" else "logits"
    assert list(report.outputs) == [out_name] and report.outputs[out_name][:2] == ["batch", "sequence"]
    if arch != "bert":
        assert all(c.top1 == 1.0 for c in report.checks)
    # the audit located every pruned weight; BERT's pooler does not feed last_hidden_state
    status = {e.parameter: e.status for e in report.audit.entries}
    unused = {n for n, s in status.items() if s == "unused"}
    assert unused == ({"pooler.dense.weight"} if arch == "bert" else set())
    assert all(s in ("ok", "unused") for s in status.values()) and len(status) == len(records)
    for e in report.audit.entries:
        if e.status == "ok":
            assert e.reduction_axes == [e.in_axis] and e.sparsity == pytest.approx(e.mask_sparsity)
    # independently: the file loads in onnxruntime and matches PyTorch on a third shape
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    ids = np.random.default_rng(5).integers(0, 96, (1, 5), dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    feeds = {k: v for k, v in feeds.items() if k in names}
    got = session.run(None, feeds)[0]
    np.testing.assert_allclose(got, eager_output(model, arch, feeds), rtol=1e-4, atol=1e-5)
    # the metadata describes every pruned initializer
    meta = read_sparsity_metadata(path)
    assert meta["swappass.version"] == sp.__version__ and meta["swappass.pattern"] == str(sp.parse_pattern(pattern))
    by_param = {v["parameter"]: v for v in meta[METADATA_SPARSITY].values()}
    for rec in records:
        if rec.name not in unused:
            assert by_param[rec.name]["sparsity"] == pytest.approx(rec.sparsity, abs=1e-6)


def test_compact_mode_shrinks_file_and_still_verifies(llama_export):
    model, records, dense = llama_export("0.6")
    _, _, small = llama_export("0.6", compact=True)
    assert dense.passed and small.passed, small.failures()
    assert small.compacted and small.dense_bytes == pytest.approx(dense.file_bytes, rel=1e-3)
    assert small.file_bytes < dense.file_bytes
    # compacted weights are computed in the file (not initializers) and the audit decoded them
    inits = {t.name for t in onnx.load(str(small.path)).graph.initializer}
    assert not inits & set(small.compacted)
    storages = {e.initializer: e.storage for e in small.audit.entries}
    assert all(storages[name] == "computed" for name in small.compacted if name in storages)
    meta = read_sparsity_metadata(small.path)[METADATA_SPARSITY]
    assert {k for k, v in meta.items() if v["storage"] == "compact"} == set(small.compacted) & set(meta)


def _corrupt_one_pruned_weight(src: Path, dst: Path, records) -> str:
    """Set one pruned weight of the first audited initializer to 0.5 in a copy of the file; return its parameter."""
    model = onnx.load(str(src))
    meta = read_sparsity_metadata(model)[METADATA_SPARSITY]
    init_name, info = sorted(meta.items())[0]
    rec = next(r for r in records if r.name == info["parameter"])
    init = next(t for t in model.graph.initializer if t.name == init_name)
    arr = numpy_helper.to_array(init).copy()
    user = arr if info["in_axis"] == 1 else arr.T  # a view: writes go to arr
    r, c = (int(v) for v in np.argwhere(~rec.user_mask.numpy())[0])
    user[r, c] = 0.5
    init.CopyFrom(numpy_helper.from_array(arr, init_name))
    onnx.save(model, str(dst))
    return rec.name


@pytest.mark.parametrize("pattern", ["2:4", "0.6"])
def test_corrupted_initializer_fails_audit(tmp_path, llama_export, pattern):
    model, records, report = llama_export(pattern)
    assert report.passed
    weights = dict(model.named_parameters())
    bad = _corrupt_one_pruned_weight(report.path, tmp_path / "bad.onnx", records)
    for w in (weights, None):  # with the PyTorch weights, and from the file and masks alone
        audit = audit_sparsity(tmp_path / "bad.onnx", records, w)
        assert not audit.passed
        assert [e.parameter for e in audit.failures] == [bad]
        assert "pruned weight(s) are non-zero in the file" in " ".join(audit.failures[0].problems)
        assert "value 0.5" in " ".join(audit.failures[0].problems)
    assert audit_sparsity(report.path, records, weights).passed


def test_corrupted_compact_weight_fails_audit(tmp_path, llama_export):
    model, records, report = llama_export("2:4", compact=True)
    assert report.passed
    m = onnx.load(str(report.path))
    bits = next(t for t in m.graph.initializer if t.name.endswith(".nz_bits"))
    arr = numpy_helper.to_array(bits).copy()
    flip = int(np.argmax(arr != 0xFF))  # a byte with a pruned (0) bit
    arr[flip] = 0xFF
    bits.CopyFrom(numpy_helper.from_array(arr, bits.name))
    onnx.save(m, str(tmp_path / "c_bad.onnx"))
    audit = audit_sparsity(tmp_path / "c_bad.onnx", records, dict(model.named_parameters()))
    assert [e.initializer for e in audit.failures] == [bits.name[: -len(".nz_bits")]]
    assert "cannot compute" in audit.failures[0].problems[0] or "non-zero" in audit.failures[0].problems[0]


def test_audit_locates_weights_in_plain_exporter_output_by_value(tmp_path):
    """torch.onnx.export alone folds W.T into initializers named val_N: found by value, N:M along the reduction."""
    model, records = build("llama", "2:4")

    class Logits(nn.Module):  # what a user writes by hand without swappass
        def __init__(self):
            super().__init__()
            self.lm = model

        def forward(self, ids):
            return self.lm(input_ids=ids, use_cache=False).logits

    program = torch.onnx.export(Logits().eval(), (torch.randint(0, 96, (2, 6)),), dynamo=True, verbose=False)
    program.save(str(tmp_path / "raw.onnx"))
    audit = audit_sparsity(tmp_path / "raw.onnx", records, dict(model.named_parameters()))
    assert audit.passed, str(audit)
    assert {e.located_by for e in audit.entries} == {"value"}
    assert all(e.in_axis == 0 and e.reduction_axes == [0] for e in audit.entries)  # stored d_in × d_out for MatMul
    # without the weights, nothing in that file is named like a parameter: the audit says so instead of passing
    blind = audit_sparsity(tmp_path / "raw.onnx", records)
    assert not blind.passed and "not found in the ONNX graph" in blind.failures[0].problems[0]


def _single_layer_graph(W_init: np.ndarray, consumer: str, transposed_node: bool = False, trans_b: int = 0):
    nodes, b = [], "fc.weight"
    if transposed_node:
        nodes.append(helper.make_node("Transpose", ["fc.weight"], ["wt"], perm=[1, 0]))
        b = "wt"
    if consumer == "Gemm":
        nodes.append(helper.make_node("Gemm", ["x", b], ["y"], transB=trans_b))
    else:
        nodes.append(helper.make_node("MatMul", ["x", b], ["y"]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(W_init, "fc.weight")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("layout", ["transpose_node", "gemm_transB", "wrong_axis"])
def test_audit_follows_transposes_and_checks_reduction_axis(layout):
    torch.manual_seed(0)
    W = torch.randn(8, 8)  # d_out × d_in, square so that the wrong layout is still a valid MatMul
    mask = sp.warm_start(W, None, "2:4", "magnitude")
    W = W * mask
    rec = PrunedWeight("fc.weight", mask, "2:4")
    arr = W.numpy()
    if layout == "transpose_node":  # x @ Transpose(W): reduction over W's axis 1 = d_in
        model = _single_layer_graph(arr, "MatMul", transposed_node=True)
    elif layout == "gemm_transB":
        model = _single_layer_graph(arr, "Gemm", trans_b=1)
    else:  # x @ W: reduces over d_out, so the 2:4 blocks do not lie along the reduction dimension
        model = _single_layer_graph(arr, "MatMul")
    audit = audit_sparsity(model, [rec], {"fc.weight": torch.from_numpy(arr)})
    entry = audit.entries[0]
    assert entry.initializer == "fc.weight" and entry.in_axis == 1
    if layout == "wrong_axis":
        assert not audit.passed
        problems = " ".join(entry.problems)
        assert "reduces over axis 0" in problems and "lie along axis 1" in problems
    else:
        assert audit.passed and entry.reduction_axes == [1]


# ---------------------------------------------------------------------------------------------- bad input
@torch.library.custom_op("swappass_test::opaque", mutates_args=())
def _opaque(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@_opaque.register_fake
def _(x):
    return torch.empty_like(x)


class OpaqueNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return _opaque(self.fc(x))


def test_unsupported_operator_is_named_and_nothing_written(tmp_path):
    with pytest.raises(ExportError, match=r"cannot translate operator swappass_test::opaque"):
        sp.export_onnx(OpaqueNet(), torch.randn(2, 3, 8), tmp_path / "m.onnx", verbose=False)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_paths_fail_before_exporting(tmp_path):
    net, x = nn.Linear(4, 4), torch.randn(2, 4)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ExportError, match="does not exist"):
        sp.export_onnx(net, x, tmp_path / "missing" / "m.onnx", verbose=False)
    with pytest.raises(ExportError, match="is not a directory"):
        sp.export_onnx(net, x, tmp_path / "a_file" / "m.onnx", verbose=False)
    with pytest.raises(ExportError, match="it is a directory"):
        sp.export_onnx(net, x, tmp_path, verbose=False)
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(ExportError, match="not writable"):
            sp.export_onnx(net, x, ro / "m.onnx", verbose=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"] + (["ro"] if os.geteuid() != 0 else [])


def test_permission_denied_is_reported(tmp_path, monkeypatch):
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", denied)  # what a read-only directory does for a non-root user
    with pytest.raises(ExportError, match="is not writable .*Permission denied"):
        sp.export_onnx(nn.Linear(4, 4), torch.randn(2, 4), tmp_path / "m.onnx", verbose=False)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_partial_file_and_keeps_old_one(tmp_path, monkeypatch):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous export")

    def broken_save(model, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save_model", broken_save)
    with pytest.raises(ExportError, match="No space left on device"):
        sp.export_onnx(nn.Linear(4, 4), torch.randn(2, 4), target, verbose=False)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"] and target.read_bytes() == b"previous export"


class ExportDiffersFromEager(nn.Module):
    """Eager output ``b`` is shifted by 0.5 against what torch.export captures: onnxruntime cannot match it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        y = self.fc(x)
        shift = 0.0 if torch.compiler.is_exporting() else 0.5
        return {"a": y, "b": y + shift}


def test_verification_failure_names_output_and_error(tmp_path):
    x = torch.randn(2, 3, 8)
    with pytest.warns(UserWarning, match="failed verification"):
        report = sp.export_onnx(ExportDiffersFromEager(), x, tmp_path / "m.onnx", verbose=False)
    assert not report.passed
    failed = [c for c in report.checks if not c.passed]
    assert {c.output for c in failed} == {"b"} and len(failed) == 2  # both input shapes
    assert all(c.max_abs == pytest.approx(0.5, abs=1e-5) for c in failed)
    assert "output 'b'" in report.failures()[0] and "0.5" in report.failures()[0]
    assert "FAILED" in str(report)
    with pytest.raises(sp.VerificationError, match="output 'b'"):
        sp.export_onnx(ExportDiffersFromEager(), x, tmp_path / "m2.onnx", verbose=False, strict=True)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x, y):
        return self.fc(x) * y


def test_tuple_inputs_static_shapes_and_opset(tmp_path):
    x, y = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    dyn = sp.export_onnx(TwoInputs(), (x, y), tmp_path / "d.onnx", opset=18, verbose=False)
    assert dyn.passed and dyn.opset == 18
    assert dyn.inputs == {"x": ["batch", "sequence", 8], "y": ["batch", "sequence", 8]}
    assert {c.inputs for c in dyn.checks} == {"example 2×3", "second 3×6"}
    static = sp.export_onnx(TwoInputs(), (x, y), tmp_path / "s.onnx", dynamic=False, verbose=False)
    assert static.passed and static.inputs["x"] == [2, 3, 8] and len(static.checks) == 1
    assert any("fixed input shapes" in n for n in static.notes)
    unverified = sp.export_onnx(TwoInputs(), (x, y), tmp_path / "u.onnx", verify=False, verbose=False)
    assert not unverified.verified and unverified.checks == [] and "not verified" in str(unverified)


def test_model_in_training_mode_exports_and_verifies_in_eval_mode(tmp_path):
    net = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5)).train()
    report = sp.export_onnx(net, torch.randn(4, 8), tmp_path / "m.onnx", verbose=False)
    assert report.passed and net.training and all(m.training for m in net.modules())


def test_external_data_when_over_the_protobuf_limit(tmp_path, monkeypatch):
    import swappass.onnx.files as files

    model, records = build("llama", "2:4")
    monkeypatch.setattr(files, "PROTOBUF_LIMIT_BYTES", 60_000)
    monkeypatch.setattr(files, "EXTERNAL_MARGIN", 0)
    with pytest.raises(ExportError, match="exceed the 2 GB protobuf limit"):
        sp.export_onnx(model, token_inputs("llama"), tmp_path / "no.onnx", masks=records, external_data=False,
                       verbose=False, kv_cache=False)
    assert list(tmp_path.iterdir()) == []
    report = sp.export_onnx(model, token_inputs("llama"), tmp_path / "m.onnx", masks=records, verbose=False,
                            kv_cache=False)
    assert report.passed and report.external_data == tmp_path / "m.onnx.data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    assert report.file_bytes == sum(p.stat().st_size for p in tmp_path.iterdir())


def test_masks_that_do_not_fit_the_model_are_rejected(tmp_path):
    model, records = build("llama", "2:4")
    wrong = [PrunedWeight("model.layers.0.mlp.nope.weight", records[0].mask, "2:4")]
    with pytest.raises(ExportError, match="no such parameter"):
        sp.export_onnx(model, token_inputs("llama"), tmp_path / "m.onnx", masks=wrong, verbose=False)
    k_proj = next(r for r in records if r.mask.shape[0] != r.mask.shape[1])
    wrong = [PrunedWeight(k_proj.name, k_proj.mask.T, "2:4")]
    with pytest.raises(ExportError, match="has shape"):
        sp.export_onnx(model, token_inputs("llama"), tmp_path / "m.onnx", masks=wrong, verbose=False)


# ---------------------------------------------------------------------------------------------- the CLI
def _saved_pruned_dir(path: Path, arch="llama", pattern="2:4"):
    model, records = build(arch, pattern)
    model.save_pretrained(path)
    save_masks(records, path / MASKS_FILE)
    return records


def test_cli_export_end_to_end(tmp_path):
    """A causal LM exports as a KV-cache decoder (torch.onnx here: the tiny model's head size 8 is not one the
    builder's CPU attention takes), with genai_config.json and the stage times."""
    _saved_pruned_dir(tmp_path / "pruned")
    out, js = tmp_path / "m.onnx", tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "swappass", "export", str(tmp_path / "pruned"), "--out", str(out), "--compact",
           "--json", str(js), "--tokens", "8"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PASSED" in proc.stdout and "sparsity audit: 14/14" in proc.stdout
    for stage in ("load", "capture", "translate", "write", "audit", "verify"):
        assert f"export: {stage} " in proc.stderr  # each stage says when it starts and how long it took
    assert "head size 8 is not a multiple of 16" in proc.stderr
    data = json.loads(js.read_text())
    assert data["passed"] and data["audit"]["passed"] and data["kv_cache"] and data["compacted"]
    assert all(t["passed"] and t["matched"] == t["tokens"] for t in data["token_checks"])
    assert (tmp_path / "genai_config.json").is_file()
    names = [i.name for i in ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).get_inputs()]
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"] and "past_key_values.1.value" in names


def test_cli_export_fails_on_masks_that_do_not_match_the_weights(tmp_path, capsys):
    from swappass.cli import main

    records = _saved_pruned_dir(tmp_path / "pruned")
    # masks of another pruning: they claim zeros where the saved weights are not zero
    flipped = [PrunedWeight(r.name, r.mask.flip(-1), r.pattern, r.transposed) for r in records]
    save_masks(flipped, tmp_path / "pruned" / MASKS_FILE)
    with pytest.warns(UserWarning, match="failed verification"):
        code = main(["export", str(tmp_path / "pruned"), "--out", str(tmp_path / "m.onnx")])
    captured = capsys.readouterr()
    assert code == 1
    assert "FAILED: weight model.layers.0.self_attn.q_proj.weight" in captured.out
    assert "failed verification" in captured.err


def test_cli_export_bad_input(tmp_path, capsys):
    from swappass.cli import main

    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "holds no config.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["export", str(tmp_path)])  # --out is required
    assert exc.value.code == 2


def test_export_pruned_dir_bert(tmp_path):
    """The directory export picks the saved class (BertModel), adds token_type_ids, exports last_hidden_state."""
    _saved_pruned_dir(tmp_path / "bert", "bert", "0.6")
    report = export_pruned_dir(tmp_path / "bert", tmp_path / "b.onnx", verbose=False)
    assert report.passed and list(report.inputs) == ["input_ids", "attention_mask", "token_type_ids"]
    assert list(report.outputs) == ["last_hidden_state"] and report.audit is not None
    (tmp_path / "bert" / MASKS_FILE).unlink()  # a dense directory still exports, without an audit, and says so
    dense = export_pruned_dir(tmp_path / "bert", tmp_path / "d.onnx", verbose=False)
    assert dense.passed and dense.audit is None and any(MASKS_FILE in n for n in dense.notes)


# ---------------------------------------------------------------------------------------------- the real model
@pytest.mark.slow


def test_a_batch_of_one_example_still_exports_dynamic_axes(tmp_path):
    """torch.export specialises size-1 axes: the exporter widens them for the capture, so a (1, 12) example
    gives a file that also runs (and verifies) at batch 2."""
    model, records = build("llama", "2:4")
    report = sp.export_onnx(model, token_inputs("llama", batch=1, seq=12), tmp_path / "m.onnx", masks=records,
                            verbose=False, kv_cache=False)
    assert report.passed, report.failures()
    assert {c.inputs for c in report.checks} == {"example 1×12", "second 2×15"}
    assert all(c.top1 == 1.0 for c in report.checks)
    assert report.outputs["logits"][:2] == ["batch", "sequence"]


class CheckedNet(nn.Module):
    """A runtime check on tensors (what transformers' torch_compilable_check records) and a Linear applied to a
    constant (like DeBERTa-v2's pos_key_proj on its relative position embeddings)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.table = nn.Parameter(torch.randn(3, 8))
        self.pos = nn.Linear(8, 8, bias=False)

    def forward(self, x):
        torch._assert_async(torch._is_all_true(torch.isfinite(x)))
        return self.fc(x) + self.pos(self.table).sum(0)


def test_runtime_checks_export_and_weights_applied_to_constants_are_reported_folded(tmp_path):
    net = CheckedNet().eval()
    mask = sp.warm_start(net.pos.weight.detach(), torch.eye(8), "2:4", "magnitude")
    with torch.no_grad():
        net.pos.weight.masked_fill_(~mask, 0)
    report = sp.export_onnx(net, torch.randn(2, 3, 8), tmp_path / "m.onnx", verbose=False,
                            masks=[PrunedWeight("pos.weight", mask, "2:4")])
    assert report.passed
    (entry,) = report.audit.entries
    assert entry.status == "folded" and "folded into constants" in report.audit.summary()


def test_dynamic_axes_of_decoder_image_and_audio_inputs():
    from swappass.onnx.adapter import dynamic_axes

    ids = torch.ones(2, 12, dtype=torch.long)
    named = {"input_ids": ids, "decoder_input_ids": ids[:, :8], "pixel_values": torch.randn(2, 3, 16, 16),
             "input_features": torch.randn(2, 16, 32)}
    axes = dynamic_axes(named, True)
    assert axes["input_ids"] == {0: "batch", 1: "sequence"}
    assert axes["decoder_input_ids"] == {0: "batch", 1: "decoder_sequence"}
    assert axes["pixel_values"] == {0: "batch"} and axes["input_features"] == {0: "batch"}
