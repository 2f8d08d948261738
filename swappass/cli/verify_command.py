"""``swappass verify FILE.onnx [--masks DIR]``: audit an exported file as it is, without re-exporting it
(:func:`swappass.onnx.file_verify.verify_file`). Exit 1 naming each failing tensor, 2 for a file or masks that
cannot be read."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..core.errors import InputError
from ..core.masks import MASKS_FILE, load_masks
from .exits import EXIT_OK

__all__ = ["add_verify_parser", "run_verify", "checkpoint_weights"]


def add_verify_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``swappass verify`` and its options to the command's subparsers."""
    p = subparsers.add_parser(
        "verify",
        help="audit an existing ONNX file: its sparsity against the masks, the pattern itself, its metadata",
        description="Audit an exported ONNX file as it is on disk: every sparse tensor its swappass metadata "
        "describes must hold the recorded sparsity, layout and pattern (per-row kept counts, N:M blocks along the "
        "reduction axis); with the masks, every pruned weight must be exactly zero where its mask prunes (and equal "
        "the checkpoint's kept values when the masks directory holds the model); onnxruntime must load the file. "
        "Exits 1 naming each failing tensor.",
    )
    p.add_argument("file", type=Path, help="the .onnx file")
    p.add_argument("--masks", type=Path, default=None,
                   help=f"a directory holding {MASKS_FILE} (and the checkpoint), or the masks file itself (default: "
                   f"{MASKS_FILE} beside FILE when there is one)")
    p.add_argument("--no-runtime", action="store_true", help="do not load the file in onnxruntime")
    p.add_argument("--json", type=Path, default=None, help="also write the result as JSON to this file")
    p.set_defaults(func=run_verify)
    return p


def _masks_path(file: Path, masks: Path | None) -> Path | None:
    if masks is None:
        beside = file.parent / MASKS_FILE
        return beside if beside.is_file() else None
    if masks.is_dir():
        if not (masks / MASKS_FILE).is_file():
            raise InputError(f"--masks {masks}: the directory holds no {MASKS_FILE}")
        return masks / MASKS_FILE
    if not masks.is_file():
        raise InputError(f"--masks {masks} does not exist")
    return masks


def checkpoint_weights(directory: Path, names: list[str]) -> dict | None:
    """The tensors ``names`` from a ``save_pretrained`` checkpoint's safetensors files in ``directory`` (None
    when there is no checkpoint there, or it lacks one of them)."""
    from safetensors import safe_open

    files = sorted(p for p in directory.glob("*.safetensors") if p.name != MASKS_FILE)
    found = {}
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            for key in handle.keys():
                if key in names and key not in found:
                    found[key] = handle.get_tensor(key).float()
    return found if files and len(found) == len(names) else None


def run_verify(args: argparse.Namespace) -> int:
    """``swappass verify``; returns the exit status (errors propagate to :func:`swappass.cli.exits.run_command`)."""
    from ..onnx.file_verify import verify_file  # loads onnx: only when verifying
    from ..onnx.verify import VerificationError

    masks_path = _masks_path(args.file, args.masks)
    records = weights = None
    notes = []
    if masks_path is not None:
        try:
            records = load_masks(masks_path)
        except Exception as exc:
            raise InputError(f"cannot read the masks {masks_path}: {exc}") from exc
        weights = checkpoint_weights(masks_path.parent, list(records))
        notes.append(f"masks: {masks_path}" + ("; kept values against the checkpoint beside it" if weights else ""))
    result = verify_file(args.file, records, weights, runtime=not args.no_runtime)
    result.notes = notes + result.notes
    print(result)
    if args.json is not None:
        import json

        args.json.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    if not result.passed:
        raise VerificationError(f"{args.file} failed verification: {len(result.failures())} problem(s), first: "
                             f"{result.failures()[0]}")
    return EXIT_OK
