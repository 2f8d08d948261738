"""Per-level checkpoints of a sequential pass on disk, so that an interrupted run can resume.

A :class:`LevelCheckpoints` directory holds one ``level-NNNNN.safetensors`` per finished level (the level's
masks bit-packed, the weights a method changed, and the report rows as JSON metadata), written atomically
(temporary file, then rename): a file either holds a whole level or does not exist. It also caches the
calibration token windows, so a resumed run calibrates on exactly the same tokens (even ``--calib self``,
whose samples come from the model).

    ckpt = LevelCheckpoints(out_dir / ".swappass-checkpoint")
    sparsify(model, calib, ..., checkpoint=ckpt.save_level, resume=ckpt.load_levels())
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..core.errors import InputError
from ..graph.levels import LevelState
from ..graph.report import SparsifyReport

__all__ = ["LevelCheckpoints", "CheckpointError"]

_FORMAT = "swappass.level/1"


class CheckpointError(InputError):
    """A checkpoint file is unreadable or inconsistent; the message names the file."""


def _atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class LevelCheckpoints:
    """The checkpoint directory of one run (created on first write)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def level_path(self, level: int) -> Path:
        return self.directory / f"level-{level:05d}.safetensors"

    @property
    def calibration_path(self) -> Path:
        return self.directory / "calibration.safetensors"

    # ------------------------------------------------------------------ levels
    def save_level(self, state: LevelState) -> None:
        """Write one finished level (atomically)."""
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
        _atomic_save(tensors, meta, self.level_path(state.level))

    def load_level(self, level: int) -> LevelState:
        from safetensors import safe_open

        path = self.level_path(level)
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                if meta.get("format") != _FORMAT or int(meta.get("level", -1)) != level:
                    raise CheckpointError(f"{path} is not a swappass level-{level} checkpoint")
                rows = SparsifyReport.from_dict({"sites": json.loads(meta["rows"])}).rows
                for row in rows:
                    row.set_packed_mask(fh.get_tensor(f"mask/{row.key}").numpy())
                weights = {
                    k[len("weight/"):]: fh.get_tensor(k) for k in fh.keys() if k.startswith("weight/")
                }
                settings = json.loads(meta.get("settings", "{}"))
        except CheckpointError:
            raise
        except Exception as exc:  # truncated or foreign file
            raise CheckpointError(f"cannot read checkpoint {path}: {exc}; delete it to redo that level") from exc
        return LevelState(level, rows, weights, settings)

    def finished_levels(self) -> int:
        """How many consecutive levels from 0 have a checkpoint."""
        k = 0
        while self.level_path(k).is_file():
            k += 1
        return k

    def load_levels(self) -> list[LevelState]:
        """The states of levels 0, 1, … up to the first missing one."""
        return [self.load_level(k) for k in range(self.finished_levels())]

    # ------------------------------------------------------------------ calibration tokens
    def save_calibration(self, windows: Sequence[torch.Tensor]) -> None:
        """Cache the calibration windows (each ``(1, seqlen)`` token ids)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        stacked = torch.stack([w.reshape(-1) for w in windows]).long().contiguous()
        _atomic_save({"input_ids": stacked}, {"format": "swappass.lm.calibration/1"}, self.calibration_path)

    def load_calibration(self) -> list[torch.Tensor] | None:
        """The cached windows, or None if there are none."""
        from safetensors.torch import load_file

        if not self.calibration_path.is_file():
            return None
        try:
            ids = load_file(str(self.calibration_path))["input_ids"]
        except Exception as exc:
            raise CheckpointError(f"cannot read {self.calibration_path}: {exc}; delete it to redo calibration") from exc
        return [row.reshape(1, -1).clone() for row in ids]

    def remove(self) -> None:
        """Delete the checkpoint directory (after the final result is written)."""
        shutil.rmtree(self.directory, ignore_errors=True)
