"""``swappass prune`` on what a directory holds: encoders as their own class, encoder-decoders with decoder inputs,
MoE experts, vision-language models text-only, and the kinds it refuses (with the reason, exit 2)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from cli_helpers import SMALL, corpus, tokenizer_for

from swappass import cli
from swappass.cli.inputs import calibration_items, decoder_inputs, model_kind
from swappass.core.masks import MASKS_FILE, load_masks
from swappass.lm.models import WeightMismatchError, load_pretrained


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("kinds")
    text = root / "corpus.txt"
    text.write_text(corpus())
    return text, tokenizer_for(corpus())


def save(directory: Path, model, tokenizer=None) -> Path:
    model.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory


def bert(vocab: int):
    torch.manual_seed(0)
    return transformers.BertModel(transformers.BertConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=64, pad_token_id=0))


def prune(*args) -> int:
    return cli.main(["prune", *map(str, args)])


def rows(out: Path) -> dict:
    return {r["name"]: r for r in json.loads((out / "swappass.json").read_text())["report"]["sites"]}


def test_bert_directory_loads_as_bert_model_not_a_head_it_lacks(tmp_path, corpus_file):
    text, tok = corpus_file
    directory = save(tmp_path / "bert", bert(len(tok)), tok)
    assert prune(directory, "--out", tmp_path / "out", "--calib", text, *SMALL) == 0
    sites = rows(tmp_path / "out")
    assert sites["pooler.dense"]["status"] == "pruned"
    assert not [n for n in sites if n.startswith("cls.")]
    reloaded = transformers.BertModel.from_pretrained(tmp_path / "out")
    assert float((reloaded.pooler.dense.weight == 0).float().mean()) == pytest.approx(0.6, abs=0.02)


def test_weights_that_do_not_fit_the_named_class_are_refused_with_their_keys(tmp_path, corpus_file, capsys):
    text, tok = corpus_file
    directory = save(tmp_path / "bert", bert(len(tok)), tok)
    config = json.loads((directory / "config.json").read_text())
    config["architectures"] = ["BertForMaskedLM"]
    (directory / "config.json").write_text(json.dumps(config))
    assert prune(directory, "--out", tmp_path / "out", "--calib", text, *SMALL) == 2
    err = capsys.readouterr().err
    assert "BertForMaskedLM" in err and "missing: cls.predictions" in err and "unexpected: pooler.dense" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_without_a_known_class_name_the_base_model_that_fits_is_loaded(tmp_path, corpus_file):
    _, tok = corpus_file
    directory = save(tmp_path / "bert", bert(len(tok)))
    config = json.loads((directory / "config.json").read_text())
    config["architectures"] = ["SomethingCustom"]
    (directory / "config.json").write_text(json.dumps(config))
    assert type(load_pretrained(str(directory), torch.float32)).__name__ == "BertModel"
    head = transformers.BertForMaskedLM(bert(len(tok)).config)
    save(tmp_path / "mlm", head)
    config = json.loads((tmp_path / "mlm" / "config.json").read_text())
    del config["architectures"]
    (tmp_path / "mlm" / "config.json").write_text(json.dumps(config))
    assert type(load_pretrained(str(tmp_path / "mlm"), torch.float32)).__name__ == "BertForMaskedLM"
    from safetensors.torch import load_file, save_file

    weights = load_file(tmp_path / "mlm" / "model.safetensors")
    weights["junk.weight"] = torch.zeros(2, 2)
    save_file(weights, tmp_path / "mlm" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightMismatchError, match=r"no model of the AutoModel family fits.*junk\.weight"):
        load_pretrained(str(tmp_path / "mlm"), torch.float32)


def test_t5_calibrates_encoder_and_decoder_from_text(tmp_path, corpus_file):
    text, tok = corpus_file
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=len(tok), d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4, decoder_start_token_id=0,
        pad_token_id=0))
    assert model_kind(model) == "encoder-decoder"
    ids = torch.tensor([[5, 6, 7]])
    assert decoder_inputs(model, ids).tolist() == [[0, 5, 6]]
    (item,) = calibration_items(model, [ids], "encoder-decoder")
    assert set(item) == {"input_ids", "decoder_input_ids"}
    directory = save(tmp_path / "t5", model, tok)
    assert prune(directory, "--out", tmp_path / "out", "--calib", text, *SMALL) == 0
    sites = rows(tmp_path / "out")
    cross = sites["decoder.block.1.layer.1.EncDecAttention.k"]
    assert cross["status"] == "pruned" and cross["tokens"] == 4 * 32  # reads the encoder's output
    assert sites["decoder.block.0.layer.2.DenseReluDense.wo"]["status"] == "pruned"


def test_mixtral_experts_are_pruned_from_the_command_line(tmp_path, corpus_file):
    text, tok = corpus_file
    torch.manual_seed(0)
    model = transformers.MixtralForCausalLM(transformers.MixtralConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=64))
    directory = save(tmp_path / "mixtral", model, tok)
    assert prune(directory, "--out", tmp_path / "out", "--calib", text, "--pattern", "2:4", *SMALL) == 0
    masks = load_masks(tmp_path / "out" / MASKS_FILE)
    assert "model.layers.1.mlp.experts.down_proj[3]" in masks and "model.layers.0.mlp.gate.weight" not in masks
    pruned = transformers.MixtralForCausalLM.from_pretrained(tmp_path / "out")
    fused = pruned.model.layers[1].mlp.experts.down_proj.detach()
    for e in range(4):
        rec = masks[f"model.layers.1.mlp.experts.down_proj[{e}]"]
        rec.check()
        assert not torch.count_nonzero(fused[e][~rec.mask])
    assert sum(r["tokens"] for n, r in rows(tmp_path / "out").items()
               if n.startswith("model.layers.0.mlp.experts.gate_up_proj")) == 2 * 4 * 32  # top-2 of every token


def test_vision_and_speech_models_are_refused_with_what_to_do(tmp_path, corpus_file, capsys):
    text, _ = corpus_file
    vit = transformers.ViTModel(transformers.ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                       num_attention_heads=4, image_size=16, patch_size=4))
    directory = save(tmp_path / "vit", vit)
    assert prune(directory, "--out", tmp_path / "out", "--calib", text, *SMALL) == 2
    err = capsys.readouterr().err
    assert "vision model that reads images (pixel_values)" in err and "swappass.sparsify" in err


def test_calib_self_needs_a_causal_lm(tmp_path, corpus_file, capsys):
    _, tok = corpus_file
    directory = save(tmp_path / "bert", bert(len(tok)), tok)
    assert prune(directory, "--out", tmp_path / "out", "--calib", "self", *SMALL) == 2
    assert "--calib self samples text from a causal LM" in capsys.readouterr().err
