"""Durable writes of the command's files: a temporary file in the same directory, flushed to disk, then renamed.

A reader (or a run started after a crash, a SIGKILL or a power loss) sees either the old file or the whole new
one, never a part: :func:`atomic_file` yields the temporary path to write, :func:`write_json_atomic` writes JSON.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_file", "write_json_atomic", "default_file_mode", "fsync_path", "storage_errno"]

_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def storage_errno(exc: BaseException) -> int | None:
    """The ``errno`` of a failed read or write: an ``OSError``'s, or the one safetensors' Rust writer reports
    inside its ``SafetensorError`` message (``… (os error 28)``); None for anything else."""
    if isinstance(exc, OSError):
        return exc.errno
    if type(exc).__name__ == "SafetensorError":
        match = _OS_ERROR.search(str(exc))
        return int(match.group(1)) if match else None
    return None


def default_file_mode() -> int:
    """``0o666`` less the process umask: the mode ``open()`` would give a new file (mkstemp gives 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_path(path: Path) -> None:
    """Flush a file's (or a directory's entries') data to the disk; a no-op where the system cannot."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an error, the file written there is
    flushed, given the default mode and renamed to ``path`` (and the directory flushed). On an error the temporary
    file is removed and ``path`` is untouched."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        fsync_path(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as tmp:
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.write("\n")
