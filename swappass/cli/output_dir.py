"""The output directory of a ``swappass prune`` run: which run it holds, the rules for reusing it, and the
digests that say whether its files are still the ones written.

A run is identified by its **recipe** (model and its fingerprint, pattern, method, calibration source and sizes,
seed, device, dtype, selection …: everything that decides the result). The directory is in one of these states:

* ``new``: it does not exist or is empty; the run starts from scratch.
* ``resume``: it holds an unfinished run with the same recipe (``.swappass-checkpoint/recipe.json``); the run
  continues from its last finished level.
* ``complete``: it holds a finished run with the same recipe (``swappass.json``). It is finished only while its
  files match the SHA-256 digests recorded in ``swappass.json`` (:meth:`RunDir.verify_outputs`).

Anything else is refused and nothing is touched: a different recipe (unless ``overwrite``, which first removes
that run's files), or files that are not from swappass (never removed, even with ``overwrite``). The run's files
are written into ``.swappass-staging/`` first and moved in together (:meth:`RunDir.staging`,
:meth:`RunDir.install`); ``swappass.json`` comes last. :meth:`RunDir.check_writable` and
:meth:`RunDir.check_free_space` check the location before any heavy work.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from ..core.errors import InputError
from .atomic import fsync_path, write_json_atomic
from .digests import digest_problem, file_digest
from .exits import ERROR_LOG
from .fingerprint import fingerprint_changes

__all__ = ["RunDir", "RunDirError", "RUN_FILE", "CHECKPOINT_DIR", "STAGING_DIR", "LATE_RECIPE_KEYS",
           "recipe_differences", "format_bytes"]

RUN_FILE = "swappass.json"
CHECKPOINT_DIR = ".swappass-checkpoint"
STAGING_DIR = ".swappass-staging"
_RECIPE_FILE = "recipe.json"
# recipe entries known only once the model is loaded (an alias's or hub model's fingerprint): compared when both
# sides have them
LATE_RECIPE_KEYS = ("model_fingerprint",)
_NOT_RUN_FILES = (ERROR_LOG,)


class RunDirError(InputError):
    """The output directory cannot take this run; the message says why and what to do."""


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def format_bytes(n: float) -> str:
    """``1.5 GiB``-style size."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def recipe_differences(mine: dict, theirs: dict) -> list[str]:
    """``key: value here vs value there`` for every recipe entry that differs (the model's fingerprint file by
    file); an entry of :data:`LATE_RECIPE_KEYS` that ``mine`` lacks is not compared."""
    out = []
    for k in sorted(set(mine) | set(theirs)):
        if k in LATE_RECIPE_KEYS and k not in mine:
            continue
        if mine.get(k) == theirs.get(k):
            continue
        if k == "model_fingerprint":
            out.append(f"the model changed ({', '.join(fingerprint_changes(mine.get(k), theirs.get(k)))})")
        else:
            out.append(f"{k}: {mine.get(k)!r} here, {theirs.get(k)!r} there")
    return out


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


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

    @property
    def staging_dir(self) -> Path:
        return self.path / STAGING_DIR

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

    def _holds_other_files(self) -> bool:
        """Whether the directory holds anything but swappass's own leftovers (an error log, a checkpoint or
        staging folder or temporary file of a run killed before it recorded its recipe)."""
        return any(p.name not in _NOT_RUN_FILES and not p.name.startswith((".swappass", f".{RUN_FILE}."))
                   for p in self.path.iterdir())

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
            if (self.checkpoint_dir / _RECIPE_FILE).exists() and not overwrite:
                raise RunDirError(f"{self.checkpoint_dir / _RECIPE_FILE} is unreadable, so the unfinished run in "
                                  f"{self.path} cannot be identified; pass --overwrite to start it over")
            if self._holds_other_files():
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
        """Delete the run in the directory: the files its ``swappass.json`` lists, that file, the checkpoint, the
        staging directory and an error log."""
        record = self.record() or {}
        for name in list(record.get("files", [])) + list(_NOT_RUN_FILES):
            target = self.path / name
            if target.parent == self.path and target.is_file():  # only plain files directly in the directory
                target.unlink()
        if self.run_file.is_file():
            self.run_file.unlink()
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        for tmp in self.path.glob(f".{RUN_FILE}.*.tmp"):  # left by a write that was killed
            tmp.unlink()

    # ------------------------------------------------------------------ writing the run's files
    def staging(self) -> Path:
        """An empty ``.swappass-staging/`` to write the run's files into (a leftover one is removed first)."""
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        self.staging_dir.mkdir(parents=True)
        return self.staging_dir

    def install(self, names: Iterable[str]) -> None:
        """Move the staged files ``names`` into the directory (each rename atomic), then drop the staging."""
        for name in names:
            fsync_path(self.staging_dir / name)
            os.replace(self.staging_dir / name, self.path / name)
        fsync_path(self.path)
        shutil.rmtree(self.staging_dir, ignore_errors=True)

    def write_record(self, record: dict, fresh: Iterable[str] = ()) -> None:
        """Write ``swappass.json`` (atomically): ``record`` with ``files`` and ``file_digests`` (SHA-256 and size of
        each of the run's files; both set in ``record`` itself). ``fresh``: files written (or rewritten) since the
        digests were last taken; they are hashed now, the others keep their recorded digests."""
        digests = dict(record.get("file_digests") or {})
        for name in fresh:
            digests[name] = file_digest(self.path / name)
        digests = {n: d for n, d in digests.items() if (self.path / n).is_file()}
        record["files"], record["file_digests"] = sorted(digests), dict(sorted(digests.items()))
        write_json_atomic(self.run_file, record)

    def verify_outputs(self, record: dict) -> dict[str, str]:
        """File name -> what is wrong with it (missing, truncated, other content), for every file the record lists;
        empty when all match their digests. Raises :class:`RunDirError` for a record without digests."""
        digests = record.get("file_digests")
        if not isinstance(digests, dict) or not digests:
            raise RunDirError(
                f"{self.run_file} records no file digests (an older swappass wrote it), so the files in {self.path} "
                f"cannot be verified; pass --overwrite to prune again"
            )
        problems = {}
        for name, recorded in digests.items():
            problem = digest_problem(self.path / name, recorded)
            if problem is not None:
                problems[name] = problem
        return problems

    # ------------------------------------------------------------------ the location, before any work
    def check_writable(self) -> None:
        """Raise :class:`RunDirError` unless files can be created in the directory (created and removed again
        here if it does not exist yet)."""
        created = []
        try:
            missing = []
            p = self.path.absolute()
            while not p.exists():
                missing.append(p)
                p = p.parent
            if not p.is_dir():
                raise RunDirError(f"--out {self.path}: {p} is not a directory; choose another --out")
            for d in reversed(missing):
                d.mkdir()
                created.append(d)
            fd, probe = tempfile.mkstemp(dir=self.path, prefix=".swappass-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise RunDirError(f"--out {self.path} cannot be written ({exc.strerror or exc}); choose a writable "
                              f"directory") from exc
        finally:
            for d in reversed(created):
                try:
                    d.rmdir()
                except OSError:
                    pass

    def check_free_space(self, need: int, what: str) -> None:
        """Raise :class:`RunDirError` unless the directory's file system has ``need`` bytes free; ``what`` says
        what they are for."""
        where = _existing_ancestor(self.path)
        free = shutil.disk_usage(where).free
        if free < need:
            raise RunDirError(
                f"--out {self.path}: {format_bytes(free)} free on its file system, but the run writes about "
                f"{format_bytes(need)} ({what}); free space or choose another --out (nothing was written)"
            )
