"""The scripts in examples/ run (on a tiny LLaMA; the defaults use SmolLM2-135M)."""
import runpy
import sys
from pathlib import Path

import pytest
from cli_helpers import corpus, save_tiny_llama

from swappass import cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, argv: list[str], monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [name, *map(str, argv)])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples")
    text = root / "corpus.txt"
    text.write_text(corpus())
    return save_tiny_llama(root / "model"), text, root


@pytest.mark.parametrize("manual", [False, True])
def test_prune_with_api(tiny, tmp_path, monkeypatch, capsys, manual):
    model_dir, text, _ = tiny
    out = tmp_path / "out"
    run_example("prune_with_api.py", ["--model", model_dir, "--calib", text, "--nsamples", "2", "--seqlen", "16",
                                      "--iters", "2", "--out", out] + (["--manual"] if manual else []), monkeypatch)
    assert "mean relative error reduction" in capsys.readouterr().out
    assert (out / "swappass_masks.safetensors").is_file() and (out / "report.json").is_file()
    assert cli.main(["export", str(out), "--out", str(tmp_path / "m.onnx")]) == 0


def test_onnx_inference_and_evaluation(tiny, monkeypatch, capsys):
    model_dir, text, root = tiny
    out = root / "pruned"
    assert cli.main(["prune", str(model_dir), "--out", str(out), "--pattern", "2:4", "--calib", str(text),
                     "--nsamples", "2", "--seqlen", "16", "--iters", "2", "--onnx", "--no-progress"]) == 0
    capsys.readouterr()
    run_example("onnx_inference.py", [out, "--prompt", "the city river", "--tokens", "5", "--check"], monkeypatch)
    printed = capsys.readouterr().out
    assert "pattern 2:4, 14 sparse weights" in printed and "greedy tokens identical: True" in printed
    run_example("evaluate_pruned.py", [out, model_dir, "--text", text, "--seqlen", "32", "--max-windows", "2"],
                monkeypatch)
    assert "perplexity: pruned" in capsys.readouterr().out
