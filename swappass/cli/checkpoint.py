"""Per-level checkpoints of a sequential pass on disk, so that an interrupted run can resume, and that verify
themselves.

A :class:`LevelCheckpoints` directory holds one ``level-NNNNN.safetensors`` per finished level (the level's
masks bit-packed, the weights a method changed, the report rows and the dense model's state digest as metadata)
and ``calibration.safetensors`` (the calibration token windows, so a resumed run calibrates on exactly the same
tokens, even ``--calib self``, whose samples come from the model). Each file is written atomically (temporary
file, flushed, renamed); then its SHA-256 and size are recorded in ``index.json``, itself written atomically. On
resume every file is checked against the index before it is read:

* a file that does not match (a flipped byte, a truncation, a file from elsewhere) is refused with
  :class:`CheckpointError` (exit status 2), naming the file and what to delete to recompute it;
* a level or calibration file the index does not list (the run was killed between the two writes) is not used:
  that level is pruned again, the tokens are computed again (the result is the same);
* a directory with level files but no index cannot be verified and is refused.

The calibration file's index entry also records the digest of the tokens: a deleted calibration file is
recomputed, and the finished levels are kept only if the recomputed tokens are the same.

    ckpt = LevelCheckpoints(out_dir / ".swappass-checkpoint")
    sparsify(model, calib, ..., checkpoint=ckpt.save_level, resume=ckpt.load_levels())
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..core.errors import InputError
from ..graph.levels import LevelState
from ..graph.report import SparsifyReport
from .atomic import atomic_file, write_json_atomic
from .digests import digest_problem, file_digest

__all__ = ["LevelCheckpoints", "CheckpointError", "INDEX_FILE"]

_FORMAT = "swappass.level/1"
_INDEX_FORMAT = "swappass.checkpoint-index/1"
INDEX_FILE = "index.json"


class CheckpointError(InputError):
    """A checkpoint file is unreadable, damaged or foreign; the message names the file and what to do."""


def _save_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> dict[str, Any]:
    """Write atomically; returns the digest of the bytes as written (read back from the temporary file)."""
    from safetensors.torch import save_file

    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
        digest = file_digest(tmp)
    return digest


def _tokens_sha256(ids: torch.Tensor) -> str:
    ids = ids.to("cpu", torch.int64).contiguous()
    return hashlib.sha256(f"{tuple(ids.shape)}".encode() + ids.numpy().tobytes()).hexdigest()


class LevelCheckpoints:
    """The checkpoint directory of one run (created on first write)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def level_path(self, level: int) -> Path:
        return self.directory / f"level-{level:05d}.safetensors"

    @property
    def calibration_path(self) -> Path:
        return self.directory / "calibration.safetensors"

    @property
    def index_path(self) -> Path:
        return self.directory / INDEX_FILE

    # ------------------------------------------------------------------ the index
    def index(self) -> dict[str, dict[str, Any]]:
        """File name -> recorded digest (``sha256``, ``bytes``; ``tokens_sha256`` for the calibration file)."""
        if not self.index_path.is_file():
            recorded = [p.name for p in self.directory.glob("level-*.safetensors")] if self.directory.is_dir() else []
            if recorded:  # (a calibration file alone: killed before its first record; it is recomputed)
                raise CheckpointError(
                    f"the checkpoint in {self.directory} has no {INDEX_FILE} (an older swappass wrote it, or it was "
                    f"damaged), so its files cannot be verified; delete {self.directory} (or pass --overwrite) to "
                    f"start the run over"
                )
            return {}
        try:
            data = json.loads(self.index_path.read_text())
            files = data["files"]
            if data.get("format") != _INDEX_FORMAT or not isinstance(files, dict):
                raise ValueError(f"format {data.get('format')!r}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"{self.index_path} is unreadable ({exc}), so the checkpoint cannot be verified; delete "
                f"{self.directory} (or pass --overwrite) to start the run over"
            ) from exc
        return files

    def _record(self, name: str, digest: dict[str, Any]) -> None:
        """Add ``name``'s digest to the index (after :meth:`index` was checked, before the file was written)."""
        files = self.index() if self.index_path.is_file() else {}
        files[name] = digest
        write_json_atomic(self.index_path, {"format": _INDEX_FORMAT, "files": files})

    def _verify(self, path: Path, recorded: dict[str, Any], fix: str) -> None:
        problem = digest_problem(path, recorded)
        if problem is not None:
            raise CheckpointError(f"checkpoint file {path} {problem}: {fix}")

    def _level_fix(self, level: int) -> str:
        last = self.finished_files() - 1
        later = f" and the levels after it (up to {last}, calibrated through it)" if last > level else ""
        return (f"delete it and run the same command again to recompute level {level}{later}; levels 0–{level - 1} "
                f"are kept" if level else f"delete it and run the same command again to recompute level 0{later}")

    # ------------------------------------------------------------------ levels
    def save_level(self, state: LevelState) -> None:
        """Write one finished level (atomically), then record its digest in the index."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        for row in state.rows:
            if row.packed_mask is None:
                raise CheckpointError(f"level {state.level}: site {row.name} has no mask to save")
            tensors[f"mask/{row.key}"] = torch.from_numpy(np.ascontiguousarray(row.packed_mask))
        for name, w in state.weights.items():
            tensors[f"weight/{name}"] = w.detach().to("cpu").contiguous()
        meta = {
            "format": _FORMAT,
            "level": str(state.level),
            "rows": json.dumps([r.to_dict() for r in state.rows]),
            "settings": json.dumps(state.settings, default=str),
        }
        if state.model_sha256 is not None:
            meta["model_sha256"] = state.model_sha256
        path = self.level_path(state.level)
        self.index()  # refuse to add to a checkpoint that cannot be verified
        self._record(path.name, _save_safetensors(tensors, meta, path))

    def load_level(self, level: int) -> LevelState:
        """The state of ``level``, after checking its file against the index (raises :class:`CheckpointError`)."""
        from safetensors import safe_open

        path = self.level_path(level)
        recorded = self.index().get(path.name)
        if recorded is None:
            raise CheckpointError(f"checkpoint file {path} is not recorded in {self.index_path}: {self._level_fix(level)}")
        self._verify(path, recorded, self._level_fix(level))
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                if meta.get("format") != _FORMAT or int(meta.get("level", -1)) != level:
                    raise CheckpointError(f"{path} is not a swappass level-{level} checkpoint: "
                                          f"{self._level_fix(level)}")
                rows = SparsifyReport.from_dict({"sites": json.loads(meta["rows"])}).rows
                for row in rows:
                    row.set_packed_mask(fh.get_tensor(f"mask/{row.key}").numpy())
                weights = {
                    k[len("weight/"):]: fh.get_tensor(k) for k in fh.keys() if k.startswith("weight/")
                }
                settings = json.loads(meta.get("settings", "{}"))
        except CheckpointError:
            raise
        except Exception as exc:  # a file that matches its digest but is not a level (written by hand …)
            raise CheckpointError(f"cannot read checkpoint {path}: {exc}; {self._level_fix(level)}") from exc
        return LevelState(level, rows, weights, settings, meta.get("model_sha256"))

    def finished_files(self) -> int:
        """How many consecutive level files from 0 exist (recorded in the index or not)."""
        k = 0
        while self.level_path(k).is_file():
            k += 1
        return k

    def finished_levels(self) -> int:
        """How many consecutive levels from 0 have a level file recorded in the index (the levels a resume
        uses; a file written but not recorded, by a run killed between the two, is pruned again)."""
        files = self.index() if self.directory.is_dir() else {}
        k = 0
        while self.level_path(k).is_file() and self.level_path(k).name in files:
            k += 1
        return k

    def unrecorded_level(self) -> int | None:
        """The first level whose file exists but is not in the index (it will be pruned again), or None."""
        k = self.finished_levels()
        return k if self.level_path(k).is_file() else None

    def load_levels(self) -> list[LevelState]:
        """The verified states of levels 0, 1, … up to the first one missing from the index."""
        return [self.load_level(k) for k in range(self.finished_levels())]

    # ------------------------------------------------------------------ calibration tokens
    def save_calibration(self, windows: Sequence[torch.Tensor]) -> None:
        """Cache the calibration windows (each ``(1, seqlen)`` token ids). When finished levels exist (their
        calibration file was lost), the windows must be the ones those levels used."""
        self.directory.mkdir(parents=True, exist_ok=True)
        stacked = torch.stack([w.reshape(-1) for w in windows]).long().contiguous()
        tokens = _tokens_sha256(stacked)
        before = self.index().get(self.calibration_path.name)
        if before is not None and before.get("tokens_sha256") != tokens and self.finished_levels():
            raise CheckpointError(
                f"the calibration tokens computed now differ from those the {self.finished_levels()} finished "
                f"level(s) in {self.directory} were calibrated on; delete {self.directory} (or pass --overwrite) to "
                f"start the run over"
            )
        self.index()  # refuse to add to a checkpoint that cannot be verified
        digest = _save_safetensors({"input_ids": stacked}, {"format": "swappass.lm.calibration/1"},
                                   self.calibration_path)
        self._record(self.calibration_path.name, {**digest, "tokens_sha256": tokens})

    def load_calibration(self) -> list[torch.Tensor] | None:
        """The cached windows after checking them against the index, or None if there are none (or the file was
        never recorded: the run was killed right after writing it)."""
        from safetensors.torch import load_file

        if not self.calibration_path.is_file():
            return None
        fix = (f"delete it and run the same command again: the tokens are recomputed, and the finished levels are "
               f"kept if they are the same")
        recorded = self.index().get(self.calibration_path.name)
        if recorded is None:  # written, not recorded: the run was killed between the two; recomputed
            return None
        self._verify(self.calibration_path, recorded, fix)
        try:
            ids = load_file(str(self.calibration_path))["input_ids"]
        except Exception as exc:
            raise CheckpointError(f"cannot read {self.calibration_path}: {exc}; {fix}") from exc
        return [row.reshape(1, -1).clone() for row in ids]

    def remove(self) -> None:
        """Delete the checkpoint directory (after the final result is written)."""
        shutil.rmtree(self.directory, ignore_errors=True)
