"""Writing an ONNX file: atomically (a temporary directory beside the target, then a rename), with external
data when the weights exceed the 2 GB protobuf limit."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import onnx

from .adapter import ExportError

__all__ = ["AtomicOutput", "tensor_bytes", "serialized_bytes", "PROTOBUF_LIMIT_BYTES", "EXTERNAL_MARGIN"]

PROTOBUF_LIMIT_BYTES = 2**31 - 1  # a serialized ModelProto cannot be larger
EXTERNAL_MARGIN = 2**26  # room for the graph itself next to the weights


def tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the initializers' data."""
    total = 0
    for t in model.graph.initializer:
        if t.raw_data:
            total += len(t.raw_data)
        else:
            n = 1
            for d in t.dims:
                n *= d
            total += n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return total


def serialized_bytes(model: onnx.ModelProto) -> int:
    """The file size the model would have (its data alone when it goes to external data)."""
    tensors = tensor_bytes(model)
    return model.ByteSize() if tensors < PROTOBUF_LIMIT_BYTES - EXTERNAL_MARGIN else tensors


class AtomicOutput:
    """A temporary directory beside ``path``; ``commit`` moves the written files into place, any exit without
    commit removes everything, so a failed export never leaves a partial file (or clobbers an existing one)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        parent = path.parent
        if path.is_dir():
            raise ExportError(f"cannot write {path}: it is a directory; give a file name such as {path / 'model.onnx'}")
        if not parent.is_dir():
            what = "is not a directory" if parent.exists() else "does not exist"
            raise ExportError(f"cannot write {path}: {parent} {what}")
        try:
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=parent))
        except OSError as exc:
            raise ExportError(f"cannot write {path}: {parent} is not writable ({exc.strerror or exc})") from exc

    def save(self, model: onnx.ModelProto, external: bool) -> tuple[Path, Path | None]:
        target = self.tmp / self.path.name
        data_name = self.path.name + ".data"
        try:
            if external:
                onnx.save_model(model, str(target), save_as_external_data=True, all_tensors_to_one_file=True,
                                location=data_name, size_threshold=1024)
            else:
                onnx.save_model(model, str(target))
        except (OSError, ValueError) as exc:
            raise ExportError(f"writing {self.path} failed: {exc}") from exc
        return target, (self.tmp / data_name) if external else None

    def commit(self) -> tuple[Path, Path | None]:
        """Move the data file (if any) and then the model into place."""
        data = self.tmp / (self.path.name + ".data")
        data_final = None
        if data.exists():
            data_final = self.path.with_name(data.name)
            os.replace(data, data_final)
        os.replace(self.tmp / self.path.name, self.path)
        return self.path, data_final

    def __enter__(self) -> "AtomicOutput":
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
