"""A finished run whose files no longer match their digests: what can be rebuilt, and the rebuild.

The output directory keeps the masks (``swappass_masks.safetensors``); the checkpoint is gone once a run is
finished. So, for a file that is missing, truncated or changed (see :meth:`RunDir.verify_outputs`):

* the model's weight, config and tokenizer files of a mask-only run (``--refit none``) are rebuilt from the dense
  model (whose fingerprint must still be the recipe's) with the saved masks applied, the same operation the pass
  performs, and each rebuilt file must match the digest recorded when the run finished before it replaces the
  damaged one;
* ``model.onnx`` (and its external data) is exported again, ``reduction.png`` plotted again (by the caller);
* the masks file, and the weights of a refitted run (they exist nowhere else), cannot be rebuilt: the run is
  refused with the command that recomputes it (``--overwrite``).
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..core.errors import CheckError, InputError
from ..core.masks import MASKS_FILE, load_masks
from ..lm.errors import LMInputError
from ..lm.models import ALIASES, load_model, smollm2_dir
from .digests import file_digest
from .fingerprint import file_fingerprint, fingerprint_changes, loaded_fingerprint
from .options import DTYPES
from .output_dir import RUN_FILE, RunDir, RunDirError
from .saving import check_pruned_model, stage_model_files

__all__ = ["DERIVED_PREFIXES", "rebuildable", "rebuild_model_files"]

# files re-made from the model directory by the caller: the ONNX export and the plot
DERIVED_PREFIXES = ("model.onnx", "reduction.png")


def _derived(name: str) -> bool:
    return name.startswith(DERIVED_PREFIXES)


def rebuildable(run: RunDir, record: dict[str, Any], problems: dict[str, str]) -> list[str]:
    """The damaged model files to rebuild (derived files aside); raises :class:`RunDirError` when one cannot be."""
    model_files = [n for n in problems if not _derived(n)]
    listing = "; ".join(f"{n} {p}" for n, p in problems.items())
    redo = f"run the same command with --overwrite to prune again"
    if MASKS_FILE in problems:
        raise RunDirError(f"{run.path} holds a finished run whose files are damaged ({listing}); the masks exist "
                          f"only in {MASKS_FILE}, so they cannot be rebuilt: {redo}")
    if model_files and (record.get("recipe") or {}).get("refit", "none") != "none":
        raise RunDirError(f"{run.path} holds a finished run whose files are damaged ({listing}); its refitted "
                          f"weights exist only in those files, so they cannot be rebuilt: {redo}")
    return model_files


@torch.no_grad()
def rebuild_model_files(run: RunDir, record: dict[str, Any], names: list[str], model_spec: str,
                        say: Callable[[str], None]) -> None:
    """Rebuild ``names`` (model, config, tokenizer files of a mask-only run) from the dense model and the masks;
    each must match its recorded digest before it replaces the damaged file (else :class:`CheckError`)."""
    recipe = record["recipe"]
    say(f"rebuilding {', '.join(names)} from {model_spec} and {MASKS_FILE}")
    try:
        model, tokenizer = load_model(model_spec, dtype=DTYPES[recipe["dtype"]], device="cpu")
    except LMInputError as exc:
        raise InputError(str(exc)) from exc
    recorded = recipe.get("model_fingerprint") or {}
    if model_spec in ALIASES:  # known only now that it is loaded
        mine = file_fingerprint(str(smollm2_dir()))
    elif recorded.get("kind") == "state":
        mine = loaded_fingerprint(model, tokenizer)
    else:
        mine = recorded  # a local model's files were compared with the recipe before
    if mine != recorded:
        changes = fingerprint_changes(mine, recorded)
        raise RunDirError(f"cannot rebuild {', '.join(names)}: the model changed since the run ({'; '.join(changes)}); "
                          f"run the same command with --overwrite to prune the new model")
    records = list(load_masks(run.path / MASKS_FILE).values())
    params = dict(model.named_parameters(remove_duplicate=False))
    for rec in records:
        rec.stored(params[rec.name]).masked_fill_(~rec.mask, 0)
    check_pruned_model(model, records)
    staged = stage_model_files(run, model, tokenizer, records)
    digests = record["file_digests"]
    for name in names:
        if name not in staged:
            raise CheckError(f"rebuilding {name} failed: saving the model again does not write it; run the same "
                             f"command with --overwrite to prune again")
        if file_digest(run.staging_dir / name) != digests[name]:
            raise CheckError(
                f"{name} rebuilt from the dense model and the masks does not match the digest in {RUN_FILE} (the "
                f"model or the library versions changed since the run); nothing was replaced: run the same command "
                f"with --overwrite to prune again"
            )
    run.install(names)
    say(f"rebuilt {', '.join(names)}: identical to the files the run wrote")
