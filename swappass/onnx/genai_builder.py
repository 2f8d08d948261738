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
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from .adapter import ExportError
from .progress import StageLog

__all__ = ["GENAI_ARCHITECTURES", "GENAI_OPSET", "genai_version", "builder_refusal", "directory_refusal",
           "BuilderRun", "TOKENIZER_FILES", "has_tokenizer_files"]

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


def builder_refusal(architecture: str, dtype: Any, head_size: int, has_tokenizer: bool, opset: int | None
                    ) -> str | None:
    """Why the builder cannot export this model (None: it can); ``architecture``: the model's class name,
    ``head_size``: its attention heads' size."""
    import torch

    if genai_version() is None:
        return "onnxruntime-genai is not installed (pip install 'swappass[genai]')"
    arch = architecture
    if arch not in GENAI_ARCHITECTURES:
        return f"the onnxruntime-genai builder does not export {arch}"
    if dtype != torch.float32:
        return f"the model is {dtype}; the builder's CPU graph (GroupQueryAttention) is float32"
    if head_size % 16:
        return f"head size {head_size} is not a multiple of 16 (onnxruntime's CPU GroupQueryAttention)"
    if not has_tokenizer:
        return "no tokenizer was given (the builder needs one)"
    if opset is not None and opset != GENAI_OPSET:
        return f"opset {opset} was asked for; the onnxruntime-genai builder writes opset {GENAI_OPSET}"
    return None


def directory_refusal(source_dir: Path, dtype: Any, opset: int | None) -> str | None:
    """:func:`builder_refusal` judged from a ``save_pretrained`` directory's ``config.json`` and files alone,
    before the model is loaded (to start the builder early); the export decides again on the loaded model."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(source_dir))
    except Exception as exc:  # any unreadable config: no early start; loading the model reports it
        return f"its config cannot be read ({type(exc).__name__})"
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = getattr(text, "num_attention_heads", None)
    head_size = getattr(text, "head_dim", None) or (text.hidden_size // heads if heads else 0)
    architecture = (getattr(config, "architectures", None) or [""])[0]
    return builder_refusal(architecture, dtype, int(head_size), has_tokenizer_files(Path(source_dir)), opset)


class BuilderRun:
    """The builder running in a subprocess on ``source_dir`` into ``out_dir`` (float32, CPU), started on
    construction. A thread drains its output (so that it never blocks on a full pipe) and counts the layers it
    has read; :meth:`wait` shows that as a progress bar until the builder ends, :meth:`cancel` stops it and
    removes ``out_dir``. Starting it before the PyTorch model is loaded lets the two overlap."""

    def __init__(self, source_dir: Path, out_dir: Path) -> None:
        self.source_dir, self.out_dir = Path(source_dir), Path(out_dir)
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(self.source_dir), "-o",
               str(self.out_dir), "-p", "fp32", "-e", "cpu", "-c", str(self.out_dir / ".cache"), "--extra_options",
               "fuse_qkv=false"]
        self.tail: deque[str] = deque(maxlen=25)
        self.layers_read = 0
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for chunk in self.proc.stdout:
            for line in re.split(r"[\r\n]", chunk):
                if line.strip():
                    self.tail.append(line.strip())
                m = _LAYER.search(line)
                if m:
                    self.layers_read = int(m.group(1)) + 1

    def wait(self, log: StageLog, num_layers: int) -> None:
        """Until the builder ends, with a bar of the layers read; :class:`ExportError` with its last output lines
        when it fails or writes no ``model.onnx``."""
        bar = log.bar("build (onnxruntime-genai)", num_layers, "layer")
        try:
            while self.proc.poll() is None:
                bar.n = min(self.layers_read, num_layers)
                bar.refresh()
                time.sleep(0.1)
            self._reader.join()
        finally:
            bar.close()
        if self.proc.returncode != 0:
            last = " | ".join(list(self.tail)[-6:])
            raise ExportError(f"the onnxruntime-genai model builder failed (exit {self.proc.returncode}): "
                              f"{last[-1500:]}")
        if not (self.out_dir / "model.onnx").is_file():
            raise ExportError(f"the onnxruntime-genai model builder wrote no model.onnx in {self.out_dir}")

    def cancel(self) -> None:
        """Stop the builder (if it still runs) and remove what it wrote."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(timeout=5)
        shutil.rmtree(self.out_dir, ignore_errors=True)
