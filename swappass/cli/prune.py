"""The ``swappass prune`` job: load a model, calibrate, prune (resumably), save, report, plot, export.

:func:`prune_to_dir` runs the steps in order; the command (:mod:`swappass.cli.prune_command`) only parses options.

    outcome = prune_to_dir(PruneOptions(model="smollm2-135m", out=Path("out"), pattern="2:4", calib="self"))

The output directory (see :mod:`swappass.cli.output_dir`) receives a ``save_pretrained`` model with its tokenizer,
``swappass_masks.safetensors`` (bit-packed masks, :func:`swappass.core.masks.save_masks`), ``swappass.json`` (the
recipe, command line, versions and per-site report), and on request ``reduction.png`` and ``model.onnx``.
While the run works, ``.swappass-checkpoint/`` holds the calibration tokens and one file per finished level;
the same command started again continues from there and gives the same result.

Launched by ``torchrun`` (``WORLD_SIZE`` > 1), every rank runs the same job and the 1-swap refinement is split
over the ranks (:mod:`swappass.refine.distributed`, :mod:`swappass.cli.ranks`): the result is the single-process one, bit for bit. Rank 0 alone
writes ``--out`` and prints; the ranks agree on every step, so that a bad input fails all of them.
"""
from __future__ import annotations

import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import transformers

from ..core.errors import InputError, NonFiniteActivationError
from ..core.masks import MASKS_FILE, save_masks
from ..core.version import __version__
from ..graph.report import SparsifyReport
from ..graph.sequential import sparsify
from ..graph.sites import DEFAULT_IGNORE
from ..graph.tracing import CaptureError
from ..lm.calibration import calibration_set, describe_source
from ..lm.errors import LMInputError
from ..lm.models import load_model
from ..onnx.adapter import ExportError
from ..refine import distributed
from . import ranks
from .checkpoint import LevelCheckpoints
from .export import export_pruned_dir
from .options import DTYPES
from .output_dir import RunDir
from .plot import plot_reduction
from .recipe import PruneOptions, check_options, sparsify_extras

__all__ = ["PruneOutcome", "prune_to_dir", "ONNX_FILE", "PLOT_FILE"]

ONNX_FILE = "model.onnx"
PLOT_FILE = "reduction.png"
RECORD_FORMAT = 1


@dataclass
class PruneOutcome:
    """What the job did: the directory, how it started (``new``/``resume``/``complete``), the report, the ONNX
    verification (None without ``--onnx``) and the plot path."""

    out: Path
    state: str
    report: SparsifyReport
    resumed_levels: int = 0
    onnx_passed: bool | None = None
    plot: Path | None = None


def _say(message: str, group=None) -> None:
    if distributed.is_main_process(group):
        print(f"swappass: {message}", file=sys.stderr, flush=True)


def _versions() -> dict[str, str]:
    return {
        "swappass": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
    }


def _ignore_list(model: torch.nn.Module, extra: Sequence[str]) -> list[str] | None:
    """The CLI's ``--ignore`` adds to the defaults: ``lm_head`` and the model's output projection stay dense."""
    if not extra:
        return None
    names = list(DEFAULT_IGNORE)
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if head is not None:
        names += [n for n, m in model.named_modules() if m is head and n and n not in names]
    return names + [s for s in extra if s not in names]


def _load(opts: PruneOptions, device: str, group):
    _say(f"loading {opts.model} ({opts.dtype})", group)
    try:
        return load_model(opts.model, dtype=DTYPES[opts.dtype], device=device)
    except LMInputError as exc:
        raise InputError(str(exc)) from exc


def _calibration(opts: PruneOptions, ckpt: LevelCheckpoints, model, tokenizer, resuming: bool,
                 group=None) -> tuple[list, bool]:
    """(the calibration windows, whether they came from the checkpoint). Every rank of a torchrun launch
    computes (or reads) the same windows; rank 0 alone reports."""
    cached = ckpt.load_calibration() if resuming else None
    if cached is not None and len(cached) == opts.nsamples and cached[0].shape[-1] == opts.seqlen:
        _say(f"calibration: {len(cached)} × {opts.seqlen} tokens from the checkpoint", group)
        return cached, True
    _say(f"calibration: {opts.nsamples} × {opts.seqlen} tokens, {describe_source(opts.calib)}, seed {opts.seed}",
         group)
    try:
        windows = calibration_set(opts.calib, tokenizer, model, nsamples=opts.nsamples, seqlen=opts.seqlen,
                                  seed=opts.seed, progress=opts.progress and distributed.is_main_process(group))
    except LMInputError as exc:
        raise InputError(f"--calib {opts.calib}: {exc}") from exc
    return windows, False


def _record(opts: PruneOptions, argv: Sequence[str] | None, recipe: dict, report: SparsifyReport,
            resumed: int, seconds: float, group=None) -> dict[str, Any]:
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    return {
        "format": RECORD_FORMAT,
        "complete": True,
        "command": shlex.join(["swappass", *argv]) if argv is not None else None,
        "recipe": recipe,
        "options": options,
        "distributed": ranks.world(group),  # this invocation's ranks (not in the recipe: the result is the same)
        "versions": _versions(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": seconds,  # this invocation's load, calibration data, pruning and saving
        "resumed_levels": resumed,
        "calibration": describe_source(opts.calib),
        "report": report.to_dict(),
    }


def _summary(report: SparsifyReport, out: Path) -> str:
    pruned = report.pruned
    total = sum(r.shape[0] * r.shape[1] for r in pruned)
    zeros = sum(r.sparsity * r.shape[0] * r.shape[1] for r in pruned)
    share = f"{100 * zeros / total:.1f}%" if total else "n/a"
    return f"{len(pruned)} Linear weights pruned ({share} of their entries are zero); written to {out}"


def prune_to_dir(opts: PruneOptions, argv: Sequence[str] | None = None) -> PruneOutcome:
    """Run the whole job. Raises :class:`~swappass.core.errors.InputError` for bad input, before the output directory is touched
    (or, for a selection that matches nothing, after removing the little this run had written).

    Under torchrun every rank calls this with the same options; the process group is started here (and ended
    here if started here) and every rank returns the same outcome.
    """
    group, created = ranks.start_group(opts.device)
    together = False  # whether every rank leaves at the same point (a result, or bad input they agreed on)
    try:
        outcome = _run(opts, argv, group)
        together = True
        return outcome
    except InputError:
        together = True
        raise
    finally:
        if created:
            distributed.close_distributed(group, wait=together)


def _run(opts: PruneOptions, argv: Sequence[str] | None, group) -> PruneOutcome:
    t0 = time.perf_counter()
    recipe = ranks.everywhere(lambda: check_options(opts), group, "checking the options")
    device = ranks.everywhere(lambda: ranks.rank_device(recipe["device"], group), group, "choosing the device")
    run = RunDir(opts.out)
    state = ranks.on_main(lambda: run.inspect(recipe, opts.overwrite), group, f"checking --out {opts.out}")
    if state == "complete":
        record = ranks.on_main(lambda: _reuse(run, recipe, opts.out), group, f"reading {run.run_file}")
        outcome = PruneOutcome(opts.out, state, SparsifyReport.from_dict(record.get("report", {})))
    else:
        outcome, record = _prune(opts, argv, recipe, device, run, state, t0, group)
    outcome.onnx_passed, outcome.plot = ranks.on_main(lambda: _finish(opts, outcome, record, run), group,
                                                 f"finishing {opts.out}")
    return outcome


def _reuse(run: RunDir, recipe: dict, out: Path) -> dict:
    """The finished run's record (the directory already holds this run)."""
    run.claim(recipe)  # clears a checkpoint left by an interrupted clean-up
    record = run.record() or {}
    _say(f"{out} already holds this run (finished {record.get('finished', '?')}); nothing to prune")
    return record


def _finish(opts: PruneOptions, outcome: PruneOutcome, record: dict, run: RunDir
            ) -> tuple[bool | None, Path | None]:
    """Print the report, plot, export to ONNX (rank 0); (ONNX verification passed or None, the plot or None)."""
    print(outcome.report)
    print(_summary(outcome.report, opts.out))
    plot = onnx_passed = None
    if opts.plot:
        plot = plot_reduction(outcome.report, opts.out / PLOT_FILE)
        _say(f"plot: {plot}")
    try:
        if opts.onnx:
            onnx_passed = _export(opts, record)
    finally:  # the record says how the export went, also when it failed
        if opts.plot or opts.onnx:
            run.write_record(record)
    return onnx_passed, plot


def _prune(opts: PruneOptions, argv, recipe: dict, device: str, run: RunDir, state: str, t0: float,
           group) -> tuple[PruneOutcome, dict]:
    """Load, calibrate, claim the directory, prune with per-level checkpoints, save; (outcome, swappass.json)."""
    ckpt = LevelCheckpoints(run.checkpoint_dir)
    timings, t = {}, time.perf_counter()
    model, tokenizer = ranks.everywhere(lambda: _load(opts, device, group), group, f"loading {opts.model}")
    timings["load"], t = time.perf_counter() - t, time.perf_counter()
    torch.manual_seed(opts.seed)
    windows, cached = ranks.everywhere(lambda: _calibration(opts, ckpt, model, tokenizer, state == "resume", group),
                                  group, "calibration data")
    timings["calibration_data"], t = time.perf_counter() - t, time.perf_counter()
    existed = run.path.exists()
    state = ranks.on_main(lambda: _claim(run, recipe, opts.overwrite, ckpt, None if cached else windows), group,
                     f"preparing {opts.out}")  # from here on the directory holds this run
    resume = ranks.everywhere(ckpt.load_levels, group, f"reading the checkpoint in {ckpt.directory}")
    if resume:
        _say(f"resuming: levels 0–{len(resume) - 1} are done (checkpoint in {ckpt.directory})", group)
    try:
        report = _sparsify(opts, recipe, device, model, windows, ckpt, resume, group)
    except InputError:
        if distributed.is_main_process(group) and state == "new" and ckpt.finished_levels() == 0:  # nothing done: leave no trace
            ckpt.remove()
            if not existed:
                run.path.rmdir()
        raise
    timings["sparsify"] = time.perf_counter() - t
    record = _record(opts, argv, recipe, report, len(resume), 0.0, group)
    ranks.on_main(lambda: _save(opts, run, ckpt, model, tokenizer, report, record, timings, t0), group,
             f"writing {opts.out}")
    return PruneOutcome(opts.out, state, report, resumed_levels=len(resume)), record


def _claim(run: RunDir, recipe: dict, overwrite: bool, ckpt: LevelCheckpoints, windows: list | None) -> str:
    """Make the directory this run's (see :meth:`RunDir.claim`) and cache new calibration windows."""
    state = run.claim(recipe, overwrite)
    if windows is not None:
        ckpt.save_calibration(windows)
    return state


def _save(opts: PruneOptions, run: RunDir, ckpt: LevelCheckpoints, model, tokenizer, report: SparsifyReport,
          record: dict, timings: dict, t0: float) -> None:
    """Write the model, tokenizer, masks and ``swappass.json`` (completing ``record``); drop the checkpoint."""
    t = time.perf_counter()
    _say(f"saving to {opts.out}")
    model.save_pretrained(opts.out)
    tokenizer.save_pretrained(opts.out)
    save_masks(report.pruned_weights(), opts.out / MASKS_FILE)
    timings["save"] = time.perf_counter() - t
    record["seconds"], record["timings"] = time.perf_counter() - t0, timings
    run.write_record(record)
    ckpt.remove()


def _sparsify(opts: PruneOptions, recipe: dict, device: str, model, windows, ckpt: LevelCheckpoints, resume,
              group=None) -> SparsifyReport:
    def save_level(state) -> None:
        ranks.on_main(lambda: ckpt.save_level(state), group, f"saving the checkpoint of level {state.level}")

    try:
        _, report = sparsify(
            model, windows, pattern=recipe["pattern"], warm_start=opts.warm_start, max_iters=opts.iters,
            targets=opts.targets, ignore=_ignore_list(model, opts.ignore), device=device,
            batch_size=opts.batch_size, gram_tf32=opts.gram_tf32,
            progress=opts.progress and distributed.is_main_process(group),
            checkpoint=save_level, resume=resume, group=group, **sparsify_extras(opts),
        )
    except KeyboardInterrupt:
        done = ckpt.finished_levels()
        _say(f"interrupted with {done} level(s) saved; run the same command again to resume", group)
        raise
    except CaptureError as exc:
        raise InputError(f"the model could not be captured as a graph: {exc}") from exc
    except NonFiniteActivationError as exc:  # finished levels stay in the checkpoint
        raise InputError(f"{exc}; with --dtype float16/bfloat16 try --dtype float32") from exc
    except distributed.DistributedError as exc:  # e.g. another rank's input check failed while rows were split
        ranks.raise_peer_input_error(exc)
        raise
    return report


def _export(opts: PruneOptions, record: dict) -> bool:
    """Export ``out/model.onnx`` and verify it (reused when this run's file verified before); the outcome goes
    into ``record``. Raises :class:`~swappass.onnx.adapter.ExportError` when the model cannot be exported."""
    path = opts.out / ONNX_FILE
    previous = record.get("onnx") or {}
    if previous.get("passed") and path.is_file() and previous.get("file_bytes") == path.stat().st_size:
        _say(f"{path} was exported and verified before (passed)")
        return True
    try:
        report = export_pruned_dir(opts.out, path, verbose=False, progress=opts.progress)
    except ExportError as exc:
        record["onnx"] = {"path": str(path), "passed": False, "error": str(exc)}
        raise
    print(report)
    record["onnx"] = report.to_dict()
    return report.passed
