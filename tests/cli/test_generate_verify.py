"""`swappass export` (KV-cache decoder) → `swappass generate` (both runtimes) and `swappass verify` (a good file,
a tampered one, bad input); `--opset` refused before any work."""
import shutil

import numpy as np
import onnx
import pytest
import torch
import transformers
from onnx import numpy_helper
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
