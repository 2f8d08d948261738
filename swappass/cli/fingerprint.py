"""Fingerprints of the model a run prunes: what the recipe records so that a resume or a reuse can refuse a model
that changed under the same name.

* A local Hugging Face directory: the SHA-256 of every file the loaders read (config, weights, tokenizer, …:
  :func:`model_files`); a ``.gguf`` file: its SHA-256 (weights and tokenizer are inside). Both come before the
  model is loaded, through the digest cache (:func:`swappass.cli.digests.cached_file_sha256`), so that a model is
  hashed once per version of its files.
* An alias: its cached directory's files, once it is loaded (the directory exists from then on).
* A hub id: known only once loaded: the digest of the model's state (:func:`swappass.core.digests.state_sha256`)
  and of the tokenizer's saved files (:func:`loaded_fingerprint`).

:func:`fingerprint_changes` lists what differs between two fingerprints, file by file.
"""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from ..core.digests import state_sha256
from .digests import cached_file_sha256, file_sha256

__all__ = ["model_files", "file_fingerprint", "loaded_fingerprint", "fingerprint_changes", "MODEL_FILE_SUFFIXES"]

# top-level files of a model directory that loaders read: config, weights (safetensors, bin, shard indexes),
# tokenizer (json, vocab / merges text, sentencepiece models, chat templates)
MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".txt", ".jinja", ".tiktoken")
_NOT_MODEL = ("readme", "license", "notice")


def model_files(directory: Path) -> list[Path]:
    """The files of a model directory that decide the loaded model (see :data:`MODEL_FILE_SUFFIXES`)."""
    return sorted(
        p for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix in MODEL_FILE_SUFFIXES
        and not p.name.lower().startswith(_NOT_MODEL)
    )


def file_fingerprint(spec: str) -> dict[str, Any] | None:
    """``{"kind": "files", "files": {name: sha256}}`` of a local model directory or ``.gguf`` file; None for
    anything else (an alias or a hub id: see :func:`loaded_fingerprint`)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return {"kind": "files", "files": {p.name: cached_file_sha256(p) for p in model_files(path)}}
    if path.is_file() and path.suffix == ".gguf":
        return {"kind": "files", "files": {path.name: cached_file_sha256(path)}}
    return None


def loaded_fingerprint(model, tokenizer) -> dict[str, Any]:
    """``{"kind": "state", "weights_sha256": …, "tokenizer_sha256": …}`` of a loaded model and tokenizer."""
    h = hashlib.sha256()
    if tokenizer is not None:
        with tempfile.TemporaryDirectory(prefix="swappass-tokenizer-") as tmp:
            tokenizer.save_pretrained(tmp)
            for p in sorted(Path(tmp).iterdir()):
                h.update(f"{p.name}\0{file_sha256(p)}\n".encode())
    return {"kind": "state", "weights_sha256": state_sha256(model), "tokenizer_sha256": h.hexdigest()}


def _short(digest: Any) -> str:
    return f"{str(digest)[:12]}…" if digest else "none"


def fingerprint_changes(mine: dict[str, Any] | None, theirs: dict[str, Any] | None) -> list[str]:
    """What differs between this model's fingerprint (``mine``) and the run's (``theirs``), one entry per file or
    part; empty when they are equal."""
    if mine == theirs:
        return []
    if not mine or not theirs or mine.get("kind") != theirs.get("kind"):
        return [f"model fingerprint {mine!r} here, {theirs!r} there"]
    if mine["kind"] == "state":
        return [f"{part} {_short(mine.get(part))} here, {_short(theirs.get(part))} there"
                for part in ("weights_sha256", "tokenizer_sha256") if mine.get(part) != theirs.get(part)]
    a, b = mine.get("files", {}), theirs.get("files", {})
    out = []
    for name in sorted(set(a) | set(b)):
        if name not in b:
            out.append(f"{name} is new")
        elif name not in a:
            out.append(f"{name} is gone")
        elif a[name] != b[name]:
            out.append(f"{name} changed (SHA-256 {_short(a[name])} here, {_short(b[name])} there)")
    return out
