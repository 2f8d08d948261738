"""`swappass export` (KV-cache decoder) → `swappass generate` (both runtimes) and `swappass verify` (a good file,
a tampered one, bad input); `--opset` refused before any work; the builder started early, its weights file kept."""
import contextlib
import io
import shutil

import numpy as np
import onnx
import pytest
import torch
import transformers
from onnx import numpy_helper
from cli_helpers import corpus, tokenizer_for
from pruning_helper import magnitude_prune

from swappass import cli
from swappass.core.masks import MASKS_FILE, save_masks
from swappass.onnx.metadata import METADATA_SPARSITY, read_sparsity_metadata

PROMPT = "the city river"


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    """A pruned tiny LLaMA directory with its KV-cache decoder exported into it: (directory, model, tokenizer)."""
    model_dir, _ = tiny
    out = tmp_path_factory.mktemp("exported") / "pruned"
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    records = magnitude_prune(model, "2:4")
    model.save_pretrained(out)
    save_masks(records, out / MASKS_FILE)
    tokenizer.save_pretrained(out)
    assert cli.main(["export", str(out), "--out", str(out / "model.onnx"), "--tokens", "8"]) == 0
    return out, model, tokenizer


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A pruned tiny LLaMA with head size 16 (one the onnxruntime-genai builder takes) exported by `swappass
    export`: (directory, the export's progress output)."""
    tokenizer = tokenizer_for(corpus())
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=128, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(cfg).eval()
    out = tmp_path_factory.mktemp("built") / "pruned"
    records = magnitude_prune(model, "2:4")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    save_masks(records, out / MASKS_FILE)
    log = io.StringIO()
    with contextlib.redirect_stderr(log):
        assert cli.main(["export", str(out), "--out", str(out / "model.onnx"), "--tokens", "8"]) == 0
    return out, log.getvalue()


def pytorch_text(model, tokenizer, n, directory, runtime):
    """PyTorch's greedy continuation, as text the way each runtime shows it: Hugging Face's decode, or
    onnxruntime-genai's token stream (which drops the bytes of incomplete characters that the random tiny model
    produces)."""
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False)
    new = out[0, ids.shape[1]:].tolist()
    if runtime == "onnxruntime":
        return tokenizer.decode(new, skip_special_tokens=True)
    import onnxruntime_genai as og

    stream = og.Tokenizer(og.Model(str(directory))).create_stream()
    return "".join(stream.decode(t) for t in new)


@pytest.mark.parametrize("runtime", ["genai", "onnxruntime"])
def test_generate_streams_pytorchs_greedy_text_and_reports_speed(exported, capsys, runtime):
    out, model, tokenizer = exported
    args = ["generate", str(out), "--prompt", PROMPT, "--tokens", "12", "--ignore-eos", "--runtime", runtime]
    assert cli.main(args) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(PROMPT)
    assert captured.out[len(PROMPT):].rstrip("\n") == pytorch_text(model, tokenizer, 12, out, runtime)
    assert "prefill" in captured.err and "decode 11 tokens" in captured.err and "tokens/s" in captured.err
    assert ("onnxruntime-genai" in captured.err) == (runtime == "genai")


def test_generate_bad_input(tmp_path, capsys):
    assert cli.main(["generate", str(tmp_path / "nowhere"), "--prompt", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["generate", str(tmp_path), "--prompt", "x"]) == 2
    assert "holds no model.onnx" in capsys.readouterr().err


def test_verify_passes_then_names_the_tampered_tensor(exported, tmp_path, capsys):
    out, _, _ = exported
    assert cli.main(["verify", str(out / "model.onnx")]) == 0  # the masks beside the file are found
    text = capsys.readouterr().out
    assert "PASSED" in text and "against the masks: 14/14" in text and "kept values against the checkpoint" in text
    # a copy with one pruned weight set to 0.5
    m = onnx.load(str(out / "model.onnx"))
    name, info = sorted(read_sparsity_metadata(m)[METADATA_SPARSITY].items())[1]
    init = next(t for t in m.graph.initializer if t.name == name)
    arr = numpy_helper.to_array(init).copy()
    view = arr if info["in_axis"] == 1 else arr.T
    r, c = (int(v) for v in np.argwhere(view == 0)[0])
    view[r, c] = 0.5
    init.CopyFrom(numpy_helper.from_array(arr, name))
    onnx.save(m, str(tmp_path / "model.onnx"))
    shutil.copy(out / MASKS_FILE, tmp_path / MASKS_FILE)
    assert cli.main(["verify", str(tmp_path / "model.onnx")]) == 1
    captured = capsys.readouterr()
    assert f"FAIL {name} ({info['parameter']})" in captured.out and "FAILED" in captured.out
    assert name in captured.err and "failed verification" in captured.err
    # the file alone (no masks): its 2:4 blocks and recorded sparsity still catch it
    (tmp_path / MASKS_FILE).unlink()
    assert cli.main(["verify", str(tmp_path / "model.onnx"), "--no-runtime"]) == 1
    assert "hold more than 2 non-zeros" in capsys.readouterr().out


def test_verify_and_export_bad_input(tmp_path, capsys):
    assert cli.main(["verify", str(tmp_path / "missing.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["verify", str(tmp_path / "missing.onnx"), "--masks", str(tmp_path)]) == 2
    assert f"holds no {MASKS_FILE}" in capsys.readouterr().err
    for opset in ("7", "0", "-5", "99"):  # refused before the model directory is even looked at
        assert cli.main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.onnx"), "--opset", opset]) == 2
        assert "is not supported: use an opset from 18 to" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_export_keeps_the_builders_weights_file_and_verify_reads_it(built, tmp_path, capsys):
    out, log = built
    assert "started before the model loaded" in log  # the builder ran while the model loaded
    graph, data = out / "model.onnx", out / "model.onnx.data"
    assert data.is_file() and graph.stat().st_size < data.stat().st_size / 5  # the weights live in the data file
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no staging or builder directory left
    m = onnx.load(str(graph), load_external_data=False)
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer if t.dims)
    # one pruned position of one weight set to 0.5 inside a copy of the data file
    name, info = sorted(read_sparsity_metadata(m)[METADATA_SPARSITY].items())[2]
    init = next(t for t in m.graph.initializer if t.name == name)
    offset = int({e.key: e.value for e in init.external_data}["offset"])
    full = numpy_helper.to_array(next(t for t in onnx.load(str(graph)).graph.initializer if t.name == name))
    flat = int(np.flatnonzero(full.reshape(-1) == 0)[0])
    for f in ("model.onnx", "genai_config.json", MASKS_FILE):
        shutil.copy(out / f, tmp_path / f)
    raw = bytearray(data.read_bytes())
    raw[offset + 4 * flat: offset + 4 * flat + 4] = np.float32(0.5).tobytes()
    (tmp_path / "model.onnx.data").write_bytes(bytes(raw))
    assert cli.main(["verify", str(tmp_path / "model.onnx"), "--no-runtime"]) == 1
    assert f"FAIL {name} ({info['parameter']})" in capsys.readouterr().out


def test_an_early_builder_is_stopped_and_removed_when_the_export_fails(built, tmp_path, monkeypatch):
    import swappass.cli.export as ex
    from swappass.onnx.adapter import ExportError

    model_dir, _ = built
    started = []

    def start(*args):
        run = real_start(*args)
        started.append(run)
        return run

    def broken_load(*args):
        raise ExportError("the model cannot be loaded")

    real_start = ex.start_builder_early
    monkeypatch.setattr(ex, "start_builder_early", start)
    monkeypatch.setattr(ex, "load_pruned_dir", broken_load)
    with pytest.raises(ExportError, match="cannot be loaded"):
        ex.export_pruned_dir(model_dir, tmp_path / "model.onnx", verbose=False, progress=False)
    assert len(started) == 1 and started[0].proc.poll() is not None  # stopped
    assert list(tmp_path.iterdir()) == []  # its output directory removed


def test_the_builder_starts_early_only_where_the_export_will_use_it(built, tiny, tmp_path):
    import swappass.cli.export as ex

    model_dir, _ = built
    assert ex.start_builder_early(tiny[0], tmp_path / "m.onnx", torch.float32, {}) is None  # head size 8
    out = tmp_path / "model.onnx"
    for kwargs in ({"exporter": "torch"}, {"kv_cache": False}, {"opset": 18}):
        assert ex.start_builder_early(model_dir, out, torch.float32, kwargs) is None, kwargs
    assert ex.start_builder_early(model_dir, out, torch.float16, {}) is None  # the builder's CPU graph is float32
    bert = tmp_path / "bert"
    transformers.BertModel(transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=32)).save_pretrained(bert)
    assert ex.start_builder_early(bert, out, torch.float32, {}) is None
    assert ex.start_builder_early(model_dir, tmp_path / "missing" / "m.onnx", torch.float32, {}) is None
    run = ex.start_builder_early(model_dir, out, torch.float32, {})
    assert run is not None and run.out_dir.parent == tmp_path
    run.cancel()
    assert list(tmp_path.iterdir()) == [bert]
