"""Writing an ONNX file: atomically (a temporary directory beside the target, then a rename), with external
data when the weights exceed the 2 GB protobuf limit, and the files that go beside it (``genai_config.json``,
tokenizer files) in the same commit."""
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
    commit removes everything, so a failed export never leaves a partial file (or clobbers an existing one).
    Files written into :attr:`tmp` beside the model (a runtime config, tokenizer files) are committed with it."""

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

    def write(self, model: onnx.ModelProto, external_data: bool | None) -> bool:
        """Save ``model`` into the temporary directory: as one file, or with its weights in ``NAME.data`` when
        ``external_data`` (None: when over the 2 GB protobuf limit). Returns whether external data was used."""
        from .report import megabytes

        too_big = tensor_bytes(model) > PROTOBUF_LIMIT_BYTES - EXTERNAL_MARGIN
        if too_big and external_data is False:
            raise ExportError(f"the model's weights ({megabytes(tensor_bytes(model))}) exceed the 2 GB protobuf "
                              "limit; use external_data=True (or None)")
        external = too_big if external_data is None else bool(external_data)
        self.save(model, external)
        return external

    @property
    def staged(self) -> Path:
        """Where the model file lies until :meth:`commit`."""
        return self.tmp / self.path.name

    def commit(self, keep_existing: tuple[str, ...] = ()) -> tuple[Path, Path | None]:
        """Move the data file (if any), the files beside the model, and then the model into place; files named in
        ``keep_existing`` do not replace a file of that name already there (e.g. a model directory's tokenizer)."""
        data = self.tmp / (self.path.name + ".data")
        data_final = None
        if data.exists():
            data_final = self.path.with_name(data.name)
            os.replace(data, data_final)
        for extra in sorted(self.tmp.iterdir()):
            if extra.is_file() and extra.name != self.path.name:
                target = self.path.with_name(extra.name)
                if not (extra.name in keep_existing and target.exists()):
                    os.replace(extra, target)
        os.replace(self.staged, self.path)
        return self.path, data_final

    def __enter__(self) -> "AtomicOutput":
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
