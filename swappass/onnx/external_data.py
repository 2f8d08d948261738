"""Keeping an exporter's external data file instead of writing every weight a second time.

The onnxruntime-genai builder writes ``model.onnx`` (the graph) and ``model.onnx.data`` (every weight). swappass
reads both, renames and audits the weights and adds its metadata, which changes the graph only. Serializing
the whole model again would copy and write every weight once more (SmolLM2-135M: 540 MB, about half of the
export's time on a 2-core machine). Instead :func:`load_keeping_external_data` remembers where each initializer's
bytes lie in the data file, and :func:`adopt_external_data` points every initializer whose bytes are still
exactly those (compared byte for byte with the file) back at the file, which moves beside the output; an
initializer that changed stays inline. The written file then reads back the same as a fresh save would
(the audit and the verification run on it afterwards).
"""
from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx.external_data_helper import load_external_data_for_model, uses_external_data

__all__ = ["ExternalData", "load_keeping_external_data", "adopt_external_data"]


@dataclass
class ExternalData:
    """Where the initializers of a loaded model came from: ``spans[name] = (offset, length)`` in ``path``."""

    path: Path
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)


def load_keeping_external_data(model_path: Path) -> tuple[onnx.ModelProto, ExternalData | None]:
    """The model at ``model_path`` with all its data in memory, and (when every external tensor lies in one
    data file, at an explicit offset and length) where each initializer's bytes are in that file; else None."""
    proto = onnx.load(str(model_path), load_external_data=False)
    spans: dict[str, tuple[int, int]] = {}
    locations = set()
    for t in proto.graph.initializer:
        if uses_external_data(t):
            info = {e.key: e.value for e in t.external_data}
            locations.add(info.get("location"))
            if "offset" in info and "length" in info:
                spans[t.name] = (int(info["offset"]), int(info["length"]))
    load_external_data_for_model(proto, str(model_path.parent))
    if len(locations) != 1 or None in locations or not spans:
        return proto, None
    return proto, ExternalData(model_path.parent / next(iter(locations)), spans)


def adopt_external_data(proto: onnx.ModelProto, data: ExternalData, target: Path, names_when_loaded: list[str]
                        ) -> int:
    """Point each initializer of ``proto`` whose bytes equal its span in ``data`` at that span of ``target``,
    move the data file there, and return how many initializers were pointed; the others keep their bytes
    inline. With none to point, nothing moves (0).

    ``names_when_loaded``: the initializers' names when the model was loaded, in order (initializers renamed
    since are found by position while their number is unchanged).
    """
    current = list(proto.graph.initializer)
    before = names_when_loaded if len(names_when_loaded) == len(current) else [t.name for t in current]
    matches = []
    with open(data.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
        for t, name in zip(current, before):
            span = data.spans.get(name)
            if span is None or not t.HasField("raw_data"):
                continue
            offset, length = span
            raw = t.raw_data
            if len(raw) == length and view[offset:offset + length] == raw:
                matches.append((t, offset, length))
    if not matches:
        return 0
    os.replace(data.path, target)
    for t, offset, length in matches:
        t.ClearField("raw_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        del t.external_data[:]
        for key, value in (("location", target.name), ("offset", offset), ("length", length)):
            entry = t.external_data.add()
            entry.key, entry.value = key, str(value)
    return len(matches)
