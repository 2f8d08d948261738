"""Writing a pruned model's files: every pruned weight checked first, everything staged, read back, moved in.

:func:`check_pruned_model` checks each pruned parameter against its pattern and mask
(:func:`swappass.core.masks.check_pruned_weight`) before anything is written. :func:`write_model_files` saves the
model, tokenizer and masks into the run directory's staging folder, reads the weights and masks back and compares
them with the model in memory, and only then moves the files into the directory (:meth:`RunDir.install`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..core.errors import CheckError
from ..core.masks import MASKS_FILE, PrunedWeight, load_masks, save_masks
from .output_dir import RunDir

__all__ = ["check_pruned_model", "write_model_files", "stage_model_files", "WriteBackError"]


class WriteBackError(CheckError):
    """A file read back after saving differs from what was saved (the storage lost or changed it)."""


def _parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters(remove_duplicate=False))
    return params


def check_pruned_model(model: nn.Module, records: Sequence[PrunedWeight]) -> None:
    """Raise :class:`~swappass.core.errors.PatternViolationError` unless every recorded parameter of ``model``
    satisfies its pattern and is zero where its mask prunes."""
    params = _parameters(model)
    for rec in records:
        weight = params.get(rec.name)
        if weight is None:
            raise CheckError(f"pruned parameter {rec.name} is not a parameter of the model")
        rec.check_weight(weight.detach())


def _read_back(directory: Path, model: nn.Module, records: Sequence[PrunedWeight]) -> None:
    """Compare the saved weight files and the masks file with ``model`` and ``records``."""
    from safetensors import safe_open

    state = model.state_dict()
    found = set()
    for path in sorted(directory.glob("*.safetensors")):
        if path.name == MASKS_FILE:
            continue
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():
                if key in state:
                    found.add(key)
                    if not torch.equal(fh.get_tensor(key), state[key].detach().to("cpu")):
                        raise WriteBackError(f"{path.name}: {key} read back differs from the model in memory")
    missing = sorted({r.name for r in records if r.name not in found and r.name in state})
    if missing:  # saved under the checkpoint's own key names (e.g. fused experts saved per expert): load them back
        found.update(_read_back_converted(directory, model, missing))
        missing = [name for name in missing if name not in found]
    if missing:
        raise WriteBackError(f"the saved weight files hold no {missing[0]} (and {len(missing) - 1} more pruned "
                             f"weights)" if len(missing) > 1 else f"the saved weight files hold no {missing[0]}")
    saved = load_masks(directory / MASKS_FILE)
    for rec in records:
        back = saved.get(rec.key)
        if back is None or not torch.equal(back.mask, rec.mask.to("cpu")) or back.pattern != rec.pattern:
            raise WriteBackError(f"{MASKS_FILE}: the mask of {rec.key} read back differs from the one saved")


def _read_back_converted(directory: Path, model: nn.Module, names: Sequence[str]) -> set[str]:
    """Load ``directory`` with ``model``'s class (transformers converts the saved key names back) and compare the
    parameters ``names``; returns the names compared, raises :class:`WriteBackError` on a difference."""
    dtype = next(iter(model.parameters())).dtype
    try:
        loaded = type(model).from_pretrained(str(directory), dtype=dtype, device_map="cpu")
    except Exception as exc:
        raise WriteBackError(f"the saved model in {directory} could not be loaded back to check "
                             f"{names[0]} ({type(exc).__name__}: {exc})") from exc
    ours, theirs = dict(model.named_parameters(remove_duplicate=False)), dict(loaded.named_parameters())
    compared = set()
    for name in names:
        if name in theirs:
            if not torch.equal(theirs[name].detach(), ours[name].detach().to("cpu")):
                raise WriteBackError(f"{name} loaded back from the saved files differs from the model in memory")
            compared.add(name)
    return compared


def stage_model_files(run: RunDir, model: nn.Module, tokenizer, records: Sequence[PrunedWeight]) -> list[str]:
    """Save model, tokenizer and masks into ``run``'s fresh staging folder and read them back; the file names."""
    staging = run.staging()
    model.save_pretrained(staging)
    if tokenizer is not None:
        tokenizer.save_pretrained(staging)
    save_masks(records, staging / MASKS_FILE)
    _read_back(staging, model, records)
    return sorted(p.name for p in staging.iterdir() if p.is_file())


def write_model_files(run: RunDir, model: nn.Module, tokenizer, records: Sequence[PrunedWeight]) -> list[str]:
    """:func:`check_pruned_model`, :func:`stage_model_files`, then move the files in; returns their names."""
    check_pruned_model(model, records)
    names = stage_model_files(run, model, tokenizer, records)
    run.install(names)
    return names
