"""The onnxruntime-genai model builder as the KV-cache exporter of the architectures it supports.

``python -m onnxruntime_genai.models.builder -i DIR -o OUT -p fp32 -e cpu`` (the ``genai`` extra) reads a
``save_pretrained`` directory and writes ``model.onnx`` (+ ``model.onnx.data``), ``genai_config.json`` and the
tokenizer files: a decoder with ``GroupQueryAttention`` (rotary embedding inside, so positions come from the
attention mask and there is no ``position_ids`` input) and fused layer norms. Measured against torch.onnx on
SmolLM2-135M (docs/BENCHMARKS.md) it exports in a fraction of the time and decodes faster on CPU, with the same
greedy tokens. It runs in a subprocess: its command line is its stable interface, its memory is returned when it
ends, and its output becomes our progress bar. ``fuse_qkv=false`` keeps one MatMul weight per parameter (the
audit finds each ``q_proj``/``k_proj``/``v_proj`` weight by value).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

from .adapter import ExportError
from .cache_adapter import DecoderGeometry
from .progress import StageLog

__all__ = ["GENAI_ARCHITECTURES", "GENAI_OPSET", "genai_version", "builder_refusal", "run_builder",
           "TOKENIZER_FILES", "has_tokenizer_files"]

# Architectures the builder exports and swappass verified (LLaMA family and Qwen2 here; the others are the
# builder's LLaMA-like decoders, still verified token by token at every export).
GENAI_ARCHITECTURES = frozenset({
    "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "GraniteForCausalLM",
    "OlmoForCausalLM", "NemotronForCausalLM", "SmolLM3ForCausalLM", "Phi3ForCausalLM",
})
GENAI_OPSET = 22  # the opset the builder writes (onnxruntime-genai 0.18)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "tokenizer.model", "chat_template.jinja")
_LAYER = re.compile(r"Reading (?:decoder )?layer (\d+)")


def genai_version() -> str | None:
    """The installed onnxruntime-genai version, or None."""
    if importlib.util.find_spec("onnxruntime_genai") is None:
        return None
    try:
        return importlib.metadata.version("onnxruntime-genai")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        return "unknown"


def has_tokenizer_files(directory: Path) -> bool:
    """Whether ``directory`` holds a tokenizer the builder (and onnxruntime-genai) can read."""
    return any((directory / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json"))


def builder_refusal(architecture: str, dtype: Any, geometry: DecoderGeometry, has_tokenizer: bool,
                    opset: int | None) -> str | None:
    """Why the builder cannot export this model (None: it can); ``architecture``: the model's class name."""
    import torch

    if genai_version() is None:
        return "onnxruntime-genai is not installed (pip install 'swappass[genai]')"
    arch = architecture
    if arch not in GENAI_ARCHITECTURES:
        return f"the onnxruntime-genai builder does not export {arch}"
    if dtype != torch.float32:
        return f"the model is {dtype}; the builder's CPU graph (GroupQueryAttention) is float32"
    if geometry.head_size % 16:
        return f"head size {geometry.head_size} is not a multiple of 16 (onnxruntime's CPU GroupQueryAttention)"
    if not has_tokenizer:
        return "no tokenizer was given (the builder needs one)"
    if opset is not None and opset != GENAI_OPSET:
        return f"opset {opset} was asked for; the onnxruntime-genai builder writes opset {GENAI_OPSET}"
    return None


def run_builder(source_dir: Path, out_dir: Path, geometry: DecoderGeometry, log: StageLog) -> None:
    """Run the builder on ``source_dir`` into ``out_dir`` (float32, CPU); :class:`ExportError` with its last
    output lines when it fails."""
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source_dir), "-o", str(out_dir),
           "-p", "fp32", "-e", "cpu", "-c", str(out_dir / ".cache"), "--extra_options", "fuse_qkv=false"]
    tail: deque[str] = deque(maxlen=25)
    bar = log.bar("build (onnxruntime-genai)", geometry.num_layers, "layer")
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        for chunk in proc.stdout:
            for line in re.split(r"[\r\n]", chunk):
                if line.strip():
                    tail.append(line.strip())
                m = _LAYER.search(line)
                if m:
                    bar.n = min(int(m.group(1)) + 1, geometry.num_layers)
                    bar.refresh()
        code = proc.wait()
    finally:
        bar.close()
    if code != 0:
        last = " | ".join(list(tail)[-6:])
        raise ExportError(f"the onnxruntime-genai model builder failed (exit {code}): {last[-1500:]}")
    if not (out_dir / "model.onnx").is_file():
        raise ExportError(f"the onnxruntime-genai model builder wrote no model.onnx in {out_dir}")
