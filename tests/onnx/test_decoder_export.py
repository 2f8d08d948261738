"""The KV-cache decoder: tiny LLaMA (torch.onnx path: head size 8), tiny GPT-2 (torch.onnx, Conv1D weights) and a
tiny LLaMA with head size 16 through the onnxruntime-genai builder (compact storage); each pruned, exported,
generated with in onnxruntime and in onnxruntime-genai's own loader, audited; what fails, and what leaves no file."""
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import onnxruntime_genai as og
import pytest
import torch
import transformers
from cli_helpers import corpus, tokenizer_for
from onnx import numpy_helper
from pruning_helper import magnitude_prune

import swappass as sp
from swappass.core.errors import InputError
from swappass.onnx.adapter import ExportError
from swappass.onnx.cache_adapter import cache_kwarg, cache_pairs, returned_cache
from swappass.onnx.cache_verify import compare_generation, torch_greedy
from swappass.onnx.file_verify import verify_file
from swappass.onnx.generation import DecoderSession
from swappass.onnx.metadata import METADATA_SPARSITY, read_sparsity_metadata
from swappass.onnx.opsets import MIN_OPSET, check_opset, max_opset


def tiny_llama(head_size=8, seed=0, vocab=96):
    torch.manual_seed(seed)
    hidden = 4 * head_size
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=128, tie_word_embeddings=False)
    return transformers.LlamaForCausalLM(cfg).eval()


def prompt_inputs(vocab=96, batch=2, seq=8, seed=1):
    ids = torch.randint(3, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.fixture(scope="module")
def torch_decoder(tmp_path_factory):
    """Tiny LLaMA, 2:4, KV-cache decoder through torch.onnx (auto: head size 8 is not one the builder takes)."""
    model = tiny_llama()
    records = magnitude_prune(model, "2:4")
    path = tmp_path_factory.mktemp("torch_decoder") / "model.onnx"
    report = sp.export_onnx(model, prompt_inputs(), path, masks=records, verbose=False)
    return model, records, report


@pytest.fixture(scope="module")
def genai_decoder(tmp_path_factory):
    """Tiny LLaMA with head size 16 and a real tokenizer, 0.6 per row, through the onnxruntime-genai builder,
    stored compactly."""
    tokenizer = tokenizer_for(corpus())
    model = tiny_llama(head_size=16, vocab=len(tokenizer))
    records = magnitude_prune(model, "0.6")
    path = tmp_path_factory.mktemp("genai_decoder") / "model.onnx"
    report = sp.export_onnx(model, prompt_inputs(len(tokenizer)), path, masks=records, verbose=False,
                            exporter="genai", tokenizer=tokenizer, compact=True)
    return model, records, report, tokenizer


def _check_decoder_report(report, n_records):
    assert report.passed, report.failures()
    assert report.kv_cache and report.runtime_config == report.path.with_name("genai_config.json")
    # greedy 32 tokens: onnxruntime with the cache = PyTorch with its cache, and the logits of every step
    prompt = next(t for t in report.token_checks if t.runtime == "onnxruntime" and t.inputs.startswith("prompt"))
    assert prompt.tokens == prompt.matched == 32
    assert [c.output for c in report.checks if c.inputs.startswith("prompt")] == ["logits, prefill",
                                                                                 "logits, 31 decode steps"]
    assert all(c.passed and c.top1 == 1.0 for c in report.checks)
    assert any(t.inputs.startswith("batch 2×") and t.passed for t in report.token_checks)  # the dynamic batch axis
    genai = [t for t in report.token_checks if t.runtime.startswith("onnxruntime-genai")]
    assert len(genai) == 1 and genai[0].passed and genai[0].matched == genai[0].tokens > 0
    assert report.audit.passed and len(report.audit.entries) == n_records
    for stage in ("write", "audit", "verify", "genai"):
        assert report.stage_seconds[stage] >= 0


def test_torch_path_decoder_layout_generation_and_audit(torch_decoder):
    model, records, report = torch_decoder
    _check_decoder_report(report, len(records))
    assert report.exporter.startswith("torch.onnx") and any("head size 8" in n for n in report.notes)
    names = list(report.inputs)
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert names[3:] == [f"past_key_values.{i}.{kv}" for i in range(2) for kv in ("key", "value")]
    assert report.inputs["attention_mask"] == ["batch_size", "total_sequence_length"]
    assert report.inputs["past_key_values.0.key"] == ["batch_size", 2, "past_sequence_length", 8]
    assert list(report.outputs) == ["logits"] + [f"present.{i}.{kv}" for i in range(2) for kv in ("key", "value")]
    config = json.loads(report.runtime_config.read_text())
    assert config["model"]["decoder"]["filename"] == "model.onnx"
    assert config["model"]["decoder"]["inputs"]["position_ids"] == "position_ids"


def test_one_decode_step_from_a_pytorch_cache_matches(torch_decoder):
    """Independently of swappass's loop: feed PyTorch's own cache after 6 tokens and one new token by hand."""
    model, _, report = torch_decoder
    ids = torch.randint(3, 96, (2, 7), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        first = model(input_ids=ids[:, :6], use_cache=True)
        pairs = [(k.clone(), v.clone()) for k, v in cache_pairs(returned_cache(first))]
        expected = model(input_ids=ids[:, 6:], use_cache=True, **{cache_kwarg(model): returned_cache(first)})
    feeds = {"input_ids": ids[:, 6:].numpy(), "attention_mask": np.ones((2, 7), np.int64),
             "position_ids": np.full((2, 1), 6, np.int64)}
    for i, (k, v) in enumerate(pairs):
        feeds[f"past_key_values.{i}.key"], feeds[f"past_key_values.{i}.value"] = k.numpy(), v.numpy()
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    np.testing.assert_allclose(out["logits"], expected.logits.numpy(), rtol=1e-4, atol=1e-5)
    k1, v1 = cache_pairs(returned_cache(expected))[1]
    assert out["present.1.key"].shape == (2, 2, 7, 8)
    np.testing.assert_allclose(out["present.1.value"], v1.numpy(), rtol=1e-4, atol=1e-5)


def test_a_wrong_graph_fails_the_cache_verification(torch_decoder):
    """The same file against a model whose one weight changed: logits and greedy tokens differ, and say so."""
    model, _, report = torch_decoder
    other = tiny_llama()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        other.model.layers[1].mlp.down_proj.weight.mul_(3.0)
    session = DecoderSession(report.path)
    checks, tokens, _ = compare_generation(session, other, torch.randint(3, 96, (1, 6)), 16, "prompt", 1e-3, 1e-5)
    assert not checks[0].passed and checks[0].max_abs > checks[0].tolerance
    assert not tokens.passed or not all(c.passed for c in checks)


def test_gpt2_conv1d_decoder(tmp_path):
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4,
                                                                 n_positions=64)).eval()
    records = magnitude_prune(model, "2:4")
    report = sp.export_onnx(model, prompt_inputs(), tmp_path / "gpt2.onnx", masks=records, verbose=False,
                            generate_tokens=12)
    assert report.passed, report.failures()
    assert report.exporter.startswith("torch.onnx") and any("does not export GPT2LMHeadModel" in n
                                                            for n in report.notes)
    assert all(t.passed and t.matched == t.tokens for t in report.token_checks)
    assert {e.in_axis for e in report.audit.entries} == {0}  # Conv1D stores d_in × d_out: kept as is for Gemm/MatMul


def test_builder_path_compact_storage_and_runtime(genai_decoder):
    model, records, report, tokenizer = genai_decoder
    _check_decoder_report(report, len(records))
    assert report.exporter.startswith("onnxruntime-genai") and report.opset == 22
    assert "position_ids" not in report.inputs  # GroupQueryAttention takes positions from the attention mask
    assert report.compacted and report.file_bytes < report.dense_bytes
    meta = read_sparsity_metadata(report.path)[METADATA_SPARSITY]
    assert {v["parameter"] for v in meta.values()} == {r.name for r in records}
    assert {v["storage"] for v in meta.values()} == {"compact"}
    assert (report.path.parent / "tokenizer.json").is_file()
    # onnxruntime-genai's own loader and tokenizer, on the directory as written
    og_model = og.Model(str(report.path.parent))
    ids = og.Tokenizer(og_model).encode("the city river")
    params = og.GeneratorParams(og_model)
    params.set_search_options(do_sample=False, max_length=len(ids) + 10)
    generator = og.Generator(og_model, params)
    generator.append_tokens(np.asarray(ids, dtype=np.int32)[None])
    out = []
    while not generator.is_done():
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    expected, _ = torch_greedy(model, torch.tensor(np.asarray(ids, dtype=np.int64))[None], len(out))
    assert out == expected[0].tolist()


def test_tampered_decoder_file_is_named_by_verify(genai_decoder, tmp_path):
    model, records, report, _ = genai_decoder
    assert verify_file(report.path, records, dict(model.named_parameters())).passed
    # a dense copy of one compact weight, with one pruned position set: found by the metadata and by the masks
    m = onnx.load(str(report.path))
    meta = read_sparsity_metadata(m)[METADATA_SPARSITY]
    name, info = sorted(meta.items())[0]
    from swappass.onnx.locate import GraphIndex

    arr = GraphIndex(m).array(name).copy()
    rec = next(r for r in records if r.name == info["parameter"])
    r, c = (int(v) for v in np.argwhere(~rec.user_mask.numpy())[0])
    (arr if info["in_axis"] == 1 else arr.T)[r, c] = 0.25
    nodes = [n for n in m.graph.node if name not in n.output]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    m.graph.initializer.append(numpy_helper.from_array(arr, name))
    onnx.save(m, str(tmp_path / "model.onnx"))
    shutil.copy(report.runtime_config, tmp_path / "genai_config.json")
    result = verify_file(tmp_path / "model.onnx", records)
    assert not result.passed
    failing = {e.initializer for e in result.tensors.failures} | {e.initializer for e in result.masks.failures}
    assert failing == {name}
    text = " ".join(result.failures())
    assert "pruned weight(s) are non-zero" in text and "stored as initializer, the metadata records compact" in text


def test_opsets_are_checked_before_any_work(tmp_path):
    assert check_opset(None) is None and check_opset(MIN_OPSET) == MIN_OPSET and check_opset(max_opset())
    for bad in (7, 0, -5, max_opset() + 1, 99, "18", 18.0, True):
        with pytest.raises(InputError, match=f"use an opset from {MIN_OPSET} to {max_opset()}"):
            check_opset(bad)
    with pytest.raises(InputError, match="opset 99"):
        sp.export_onnx(torch.nn.Linear(4, 4), torch.randn(2, 4), tmp_path / "m.onnx", opset=99, verbose=False)
    assert list(tmp_path.iterdir()) == []


def test_failed_decoder_exports_leave_no_file(tmp_path, monkeypatch):
    import swappass.onnx.decoder_export as dx

    model = tiny_llama(head_size=16)
    with pytest.raises(ExportError, match="exporter 'genai' cannot export this model: no tokenizer"):
        sp.export_onnx(model, prompt_inputs(), tmp_path / "a.onnx", exporter="genai", verbose=False)
    bert = transformers.BertModel(transformers.BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=1,
                                                          num_attention_heads=4, intermediate_size=32)).eval()
    with pytest.raises(ExportError, match="needs a Hugging Face causal language model"):
        sp.export_onnx(bert, prompt_inputs(), tmp_path / "b.onnx", kv_cache=True, verbose=False)

    def broken_builder(self, log, num_layers):
        raise ExportError("the onnxruntime-genai model builder failed (exit 1): out of memory")

    monkeypatch.setattr(dx.BuilderRun, "wait", broken_builder)
    with pytest.raises(ExportError, match="builder failed"):
        sp.export_onnx(model, prompt_inputs(), tmp_path / "c.onnx", exporter="genai",
                       tokenizer=tokenizer_for(corpus()), verbose=False)
    assert list(tmp_path.iterdir()) == []


def test_no_cache_graph_runs_in_the_generation_loop(tmp_path):
    """The graph without a cache (kv_cache=False) re-runs the sequence per token: same greedy tokens."""
    model = tiny_llama()
    report = sp.export_onnx(model, prompt_inputs(), tmp_path / "plain.onnx", kv_cache=False, verbose=False)
    session = DecoderSession(report.path)
    assert not session.has_cache
    ids = torch.randint(3, 96, (1, 5), generator=torch.Generator().manual_seed(3))
    result = session.greedy(ids.numpy(), 10)
    expected, _ = torch_greedy(model, ids, 10)
    assert result.tokens.tolist() == expected.tolist()
    assert result.prefill_seconds > 0 and result.decode_tokens_per_second > 0
