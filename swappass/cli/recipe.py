"""The options of ``swappass prune`` and the run's *recipe*: everything that decides the result, checked up front.

:func:`check_options` validates the options before any work (no model is loaded, nothing is written) and returns
the recipe that :mod:`swappass.cli.output_dir` compares with the run already in ``--out`` (resume or refuse).
The recipe holds the model's fingerprint (:mod:`swappass.cli.fingerprint`): the digests of a local model's files
from the start, an alias's or hub model's state digest once it is loaded (:func:`complete_recipe`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import InputError
from ..core.patterns import parse_pattern
from ..graph.blocks import CALIBRATION_ORDERS
from ..lm import data
from ..lm.calibration import HF_PREFIX
from ..lm.errors import DataNotFoundError
from ..lm.models import ALIASES, smollm2_dir
from ..methods.options import (
    REFINE_METHODS,
    REFIT_METHODS,
    WARM_START_METHODS,
    check_prune_options,
)
from .digests import file_sha256
from .fingerprint import file_fingerprint, loaded_fingerprint
from .options import DTYPES, resolve_device
from .plot import PlotError, require_matplotlib

__all__ = ["PruneOptions", "check_options", "complete_recipe", "sparsify_extras", "calibration_batch_size",
           "AUTO_BATCH_TOKENS"]


@dataclass
class PruneOptions:
    """Everything ``swappass prune`` takes; see ``swappass prune --help`` for each."""

    model: str
    out: Path
    pattern: str = "0.6"
    warm_start: str = "wanda"
    iters: int = 100
    calib: str = "wikitext2"
    sample_precision: str = "auto"  # with calib 'self' (swappass.lm.matmul_precision)
    nsamples: int = 128
    seqlen: int = 2048
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    batch_size: int | None = None  # None: auto (calibration_batch_size)
    gram_tf32: bool = False
    calibration_order: str = "level"
    refit_rounds: int = 1
    targets: list[str] | None = None
    ignore: list[str] = field(default_factory=list)
    refine: str = "swaps"
    refit: str = "none"
    onnx: bool = False
    plot: bool = False
    overwrite: bool = False
    progress: bool = True
    threads: str = "auto"  # not part of the recipe: the result does not depend on it (swappass.cli.threads)
    table: str = "auto"  # how the per-site report is printed (swappass.graph.report.TABLE_STYLES)


def _calib_identity(spec: str) -> tuple[str, str | None]:
    """(the spec as recorded, the text's SHA-256 for files) — raises for a missing file."""
    if spec in ("self", "wikitext2") or spec.startswith(HF_PREFIX):
        if spec == "wikitext2":
            try:
                path = data.wikitext2_path("valid")
            except DataNotFoundError as exc:
                raise InputError(
                    f"--calib wikitext2: {exc}. Pass a text file (--calib FILE.txt), --calib self (data-free: "
                    f"samples from the model) or a hub dataset (--calib hf:NAME[:CONFIG[:SPLIT]])"
                ) from exc
            return spec, file_sha256(path)
        return spec, None
    path = Path(spec).expanduser()
    if not path.is_file():
        raise InputError(
            f"--calib {spec}: no such file. Use a text file, 'wikitext2', 'self' (data-free) or "
            f"hf:NAME[:CONFIG[:SPLIT]]"
        )
    return str(path.resolve()), file_sha256(path)


def _model_identity(spec: str) -> str:
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def complete_recipe(recipe: dict[str, Any], model, tokenizer, spec: str | None = None) -> dict[str, Any]:
    """The recipe with the loaded model's fingerprint where it had none: for the alias ``spec``, its cached
    directory's files (the directory exists once loaded); for a hub id, the loaded state's digest."""
    if recipe.get("model_fingerprint") is not None:
        return recipe
    fingerprint = file_fingerprint(str(smollm2_dir())) if spec in ALIASES else None  # the one alias
    return {**recipe, "model_fingerprint": fingerprint or loaded_fingerprint(model, tokenizer)}


def sparsify_extras(opts: PruneOptions) -> dict[str, Any]:
    """``refine`` / ``refit`` for :func:`swappass.sparsify`, passed only when not the default."""
    extras: dict[str, Any] = {}
    if opts.refine != REFINE_METHODS[0]:
        extras["refine"] = opts.refine
    if opts.refit != REFIT_METHODS[0]:
        extras["refit"] = opts.refit
    return extras


def _check_methods(opts: PruneOptions, pattern) -> None:
    """Reject a method combination the pass cannot run (e.g. --refit sparsegpt without SparseGPT's own mask)."""
    refit = False if opts.refit == REFIT_METHODS[0] else opts.refit
    try:
        check_prune_options(pattern, opts.warm_start, opts.refine, refit, opts.iters, opts.refit_rounds)
    except ValueError as exc:
        flags = f"--warm-start {opts.warm_start} --refine {opts.refine} --refit {opts.refit} --pattern {pattern}"
        raise InputError(f"{flags}: {exc}") from exc


AUTO_BATCH_TOKENS = 2048  # calibration tokens per forward pass with --batch-size auto


def calibration_batch_size(opts: PruneOptions) -> int:
    """Calibration sequences per forward pass: ``--batch-size``, or automatically as many as fit in
    :data:`AUTO_BATCH_TOKENS` tokens (at least one; the default 128 × 2048 calibration: one). Sequences share a
    pass only when their inputs match (:func:`swappass.graph.sequential.batch_calls`); the Gram matrices then
    sum the same products in another order."""
    if opts.batch_size is not None:
        return opts.batch_size
    return max(1, min(opts.nsamples, AUTO_BATCH_TOKENS // max(opts.seqlen, 1)))


def check_options(opts: PruneOptions) -> dict[str, Any]:
    """Validate the options before any work; returns the run's recipe (what decides the result)."""
    try:
        pattern = parse_pattern(opts.pattern)
    except (ValueError, TypeError) as exc:
        raise InputError(f"--pattern {opts.pattern!r}: {exc}") from exc
    if opts.warm_start not in WARM_START_METHODS:
        raise InputError(f"--warm-start {opts.warm_start!r}: choose one of {', '.join(WARM_START_METHODS)}")
    if opts.refine not in REFINE_METHODS or opts.refit not in REFIT_METHODS:
        raise InputError(f"--refine must be one of {REFINE_METHODS} and --refit one of {REFIT_METHODS}")
    batch = 1 if opts.batch_size is None else opts.batch_size  # None: auto
    for flag, value, low in (("--nsamples", opts.nsamples, 1), ("--seqlen", opts.seqlen, 2),
                             ("--iters", opts.iters, 0), ("--batch-size", batch, 1)):
        if value < low:
            raise InputError(f"{flag} must be at least {low}, got {value}")
    if opts.calibration_order not in CALIBRATION_ORDERS:
        choices = ", ".join(CALIBRATION_ORDERS)
        raise InputError(f"--calibration-order {opts.calibration_order!r}: choose one of {choices}")
    if opts.dtype not in DTYPES:
        raise InputError(f"--dtype {opts.dtype!r}: choose one of {', '.join(DTYPES)}")
    device = resolve_device(opts.device)
    if opts.plot:
        try:
            require_matplotlib()
        except PlotError as exc:
            raise InputError(f"--plot: {exc}") from exc
    _check_methods(opts, pattern)
    calib, calib_sha = _calib_identity(opts.calib)
    fingerprint = file_fingerprint(opts.model)
    return {
        "model": _model_identity(opts.model),
        **({"model_fingerprint": fingerprint} if fingerprint is not None else {}),
        "pattern": str(pattern),
        "warm_start": opts.warm_start,
        "iters": opts.iters,
        "refine": opts.refine,
        "refit": opts.refit,
        "calib": calib,
        "calib_sha256": calib_sha,
        **({"sample_precision": opts.sample_precision} if opts.calib == "self" else {}),
        "nsamples": opts.nsamples,
        "seqlen": opts.seqlen,
        "seed": opts.seed,
        "batch_size": calibration_batch_size(opts),
        "gram_tf32": opts.gram_tf32,
        "calibration_order": opts.calibration_order,
        "refit_rounds": opts.refit_rounds,
        "device": device,
        "dtype": opts.dtype,
        "targets": list(opts.targets) if opts.targets is not None else None,
        "ignore": list(opts.ignore),
    }
