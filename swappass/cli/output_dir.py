"""The output directory of a ``swappass prune`` run: which run it holds, and the rules for reusing it.

A run is identified by its **recipe** (model, pattern, method, calibration source and sizes, seed, device,
dtype, selection …: everything that decides the result). The directory is in one of these states:

* ``new``: it does not exist or is empty; the run starts from scratch.
* ``resume``: it holds an unfinished run with the same recipe (``.swappass-checkpoint/recipe.json``); the run
  continues from its last finished level.
* ``complete``: it holds a finished run with the same recipe (``swappass.json``); nothing is recomputed.

Anything else is refused and nothing is touched: a different recipe (unless ``overwrite``, which first removes
that run's files), or files that are not from swappass (never removed, even with ``overwrite``).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..core.errors import InputError

__all__ = ["RunDir", "RunDirError", "RUN_FILE", "CHECKPOINT_DIR"]

RUN_FILE = "swappass.json"
CHECKPOINT_DIR = ".swappass-checkpoint"
_RECIPE_FILE = "recipe.json"


class RunDirError(InputError):
    """The output directory cannot take this run; the message says why and what to do."""


def default_file_mode() -> int:
    """``0o666`` less the process umask: the mode ``open()`` would give a new file (mkstemp gives 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename (never a half-written file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.write("\n")
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def recipe_differences(mine: dict, theirs: dict) -> list[str]:
    """``key: value here vs value there`` for every recipe entry that differs."""
    return [
        f"{k}: {mine.get(k)!r} here, {theirs.get(k)!r} there"
        for k in sorted(set(mine) | set(theirs))
        if mine.get(k) != theirs.get(k)
    ]


class RunDir:
    """The directory ``path`` as the output of one run."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def record(self) -> dict | None:
        """The finished run's ``swappass.json``, or None."""
        return _read_json(self.run_file) if self.run_file.is_file() else None

    def _existing(self) -> tuple[dict | None, bool]:
        """(recipe of the run in the directory, whether it is complete); (None, False) if there is none."""
        record = self.record()
        if record is not None and isinstance(record.get("recipe"), dict):
            return record["recipe"], True
        pending = _read_json(self.checkpoint_dir / _RECIPE_FILE)
        if pending is not None:
            return pending, False
        return None, False

    def inspect(self, recipe: dict, overwrite: bool = False) -> str:
        """``"new"``, ``"resume"`` or ``"complete"`` for a run with ``recipe``; raises :class:`RunDirError` when the
        directory cannot take it. Changes nothing."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"--out {self.path} exists and is not a directory")
        if not self.path.exists():
            return "new"
        theirs, complete = self._existing()
        if theirs is None:
            if self.run_file.exists():
                raise RunDirError(f"{self.run_file} is unreadable; choose another --out (nothing was changed)")
            if any(self.path.iterdir()):
                raise RunDirError(
                    f"--out {self.path} is not empty and holds no swappass run; choose a new or empty directory "
                    f"(nothing was changed)"
                )
            return "new"
        if overwrite:
            return "new"
        diff = recipe_differences(recipe, theirs)
        if diff:
            what = "a finished" if complete else "an unfinished"
            raise RunDirError(
                f"--out {self.path} holds {what} run with a different recipe ({'; '.join(diff)}); choose another "
                f"--out, run the same command as before to {'reuse' if complete else 'resume'} it, or pass "
                f"--overwrite to replace it (nothing was changed)"
            )
        return "complete" if complete else "resume"

    def claim(self, recipe: dict, overwrite: bool = False) -> str:
        """:meth:`inspect`, then make the directory ready: remove the old run when ``overwrite`` replaces one,
        and record the recipe of a new run before any work (so that a different command cannot mix into it)."""
        state = self.inspect(recipe, overwrite)
        if state == "new" and self.path.exists():
            self.remove_run()
        if state == "complete" and self.checkpoint_dir.exists():  # left over from an interrupted clean-up
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        if state == "new":
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.checkpoint_dir / _RECIPE_FILE, recipe)
        return state

    def remove_run(self) -> None:
        """Delete the run in the directory: the files its ``swappass.json`` lists, that file and the checkpoint."""
        record = self.record() or {}
        for name in record.get("files", []):
            target = self.path / name
            if target.parent == self.path and target.is_file():  # only plain files directly in the directory
                target.unlink()
        if self.run_file.is_file():
            self.run_file.unlink()
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)

    def write_record(self, record: dict) -> None:
        """Write ``swappass.json`` (atomically), listing the directory's files as the run's files."""
        record = dict(record)
        record["files"] = sorted(
            p.name for p in self.path.iterdir()
            if p.is_file() and p.name != RUN_FILE and not p.name.startswith(".")
        )
        write_json_atomic(self.run_file, record)
