"""The ``swappass prune`` job: load a model, calibrate, prune (resumably), save, report, plot, export.

:func:`prune_to_dir` runs the steps in order; the command (:mod:`swappass.cli.prune_command`) only parses options.

    outcome = prune_to_dir(PruneOptions(model="smollm2-135m", out=Path("out"), pattern="2:4", calib="self"))

The output directory (see :mod:`swappass.cli.output_dir`) receives a ``save_pretrained`` model with its tokenizer,
``swappass_masks.safetensors`` (bit-packed masks, :func:`swappass.core.masks.save_masks`), ``swappass.json`` (the
recipe with the model's fingerprint, command line, versions, per-site report and the SHA-256 of every file), and on
request ``reduction.png`` and ``model.onnx``. While the run works, ``.swappass-checkpoint/`` holds the calibration
tokens and one file per finished level, each verified against its recorded digest on resume; the same command
started again continues from there and gives the same result.

Before the heavy work the job checks ``--out`` (writable, free space for the model's size) and ``--seqlen``
against the model's positions; before anything is written, every pruned weight against its pattern and mask. A
finished directory counts as finished only while its files match their digests: damaged files are rebuilt where
they can be (:mod:`swappass.cli.repair`), or the run is refused with what to do. A run where nothing could be
pruned writes nothing and raises :class:`~swappass.core.errors.NothingPrunedError` (exit status 3).

Launched by ``torchrun`` (``WORLD_SIZE`` > 1), every rank runs the same job and the 1-swap refinement is split
over the ranks (:mod:`swappass.refine.distributed`, :mod:`swappass.cli.ranks`): the result is the single-process
one, bit for bit. Rank 0 alone writes ``--out`` and prints; the ranks agree on every step, so that a bad input
fails all of them.
"""
from __future__ import annotations

import contextlib
import os
import platform
import shlex
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import transformers

from ..core.errors import (CalibrationWarning, InputError, NonFiniteActivationError, NothingPrunedError,
                           PatternViolationError)
from ..core.version import __version__
from ..graph.report import SparsifyReport
from ..graph.sequential import sparsify
from ..graph.sites import DEFAULT_IGNORE
from ..graph.tracing import CaptureError
from ..lm.calibration import calibration_set, describe_source
from ..lm.errors import CalibrationTextWarning, LMInputError
from ..lm.matmul_precision import resolve_matmul_precision
from ..lm.models import load_model
from ..onnx.adapter import ExportError
from ..refine import distributed
from . import ranks
from .atomic import storage_errno
from .checkpoint import LevelCheckpoints
from .export import export_pruned_dir
from .inputs import calibration_items, check_text_model
from .options import DTYPES
from .output_dir import RunDir, RunDirError, format_bytes
from .plot import plot_reduction
from .preflight import check_positions, model_file_bytes, output_bytes
from .recipe import PruneOptions, check_options, complete_recipe, sparsify_extras
from .repair import DERIVED_PREFIXES, rebuild_model_files, rebuildable
from .saving import write_model_files
from .threads import ThreadPolicy

__all__ = ["PruneOutcome", "prune_to_dir", "nothing_pruned_reason", "ONNX_FILE", "PLOT_FILE", "RECORD_FORMAT"]

ONNX_FILE = "model.onnx"
PLOT_FILE = "reduction.png"
RECORD_FORMAT = 2  # 2: the record holds the SHA-256 of every file (file_digests)


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


@contextlib.contextmanager
def _console_warnings(sink: list[str], group=None) -> Iterator[None]:
    """Within the block, swappass's warnings (calibration, skipped sites …) are one ``swappass: warning:`` line
    each on stderr (rank 0) and collected in ``sink``; other warnings are shown as usual."""
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            text = str(message)
            if issubclass(category, (CalibrationWarning, CalibrationTextWarning)) or text.startswith("swappass: "):
                text = text.removeprefix("swappass: ")
                sink.append(text)
                _say(f"warning: {text}", group)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


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
        _say(f"calibration: {len(cached)} × {opts.seqlen} tokens from the checkpoint (verified)", group)
        return cached, True
    precision = resolve_matmul_precision(model, opts.sample_precision) if opts.calib == "self" else None
    matmuls = f", Linear matmuls in {str(precision).removeprefix('torch.')}" if precision is not None else ""
    _say(f"calibration: {opts.nsamples} × {opts.seqlen} tokens, {describe_source(opts.calib)}, seed {opts.seed}"
         f"{matmuls}", group)
    try:
        windows = calibration_set(opts.calib, tokenizer, model, nsamples=opts.nsamples, seqlen=opts.seqlen,
                                  seed=opts.seed, sample_precision=opts.sample_precision,
                                  progress=opts.progress and distributed.is_main_process(group))
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


def nothing_pruned_reason(report: SparsifyReport, pattern: str) -> str:
    """Why no site was pruned, per kind of site (the last part of the site names) and reason."""
    by_reason: dict[str, list[str]] = {}
    for row in report.rows:
        kind = row.name.rsplit(".", 1)[-1]
        kinds = by_reason.setdefault(f"{row.status}: {row.reason or 'no reason recorded'}", [])
        kinds.append(kind)
    parts = [f"{', '.join(dict.fromkeys(kinds))} ({len(kinds)} site{'s' * (len(kinds) > 1)}) {why}"
             for why, kinds in by_reason.items()]
    return (f"nothing could be pruned with --pattern {pattern}: {'; '.join(parts) or 'the model has no Linear site'}; "
            f"choose a pattern that fits these shapes (nothing was written)")


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
    state = ranks.on_main(lambda: _inspect(run, recipe, opts), group, f"checking --out {opts.out}")
    if state == "complete":
        record, redo = ranks.on_main(lambda: _reuse(run, recipe, opts), group, f"verifying {run.path}")
        opts = replace(opts, onnx=opts.onnx or "onnx" in redo, plot=opts.plot or "plot" in redo)
        outcome = PruneOutcome(opts.out, state, SparsifyReport.from_dict(record.get("report", {})))
    else:
        outcome, record = _prune(opts, argv, recipe, device, run, state, t0, group)
    outcome.onnx_passed, outcome.plot = ranks.on_main(lambda: _finish(opts, outcome, record, run), group,
                                                      f"finishing {opts.out}")
    return outcome


def _inspect(run: RunDir, recipe: dict, opts: PruneOptions) -> str:
    """The directory's state for this recipe, after checking that it can be written (and, for a new run of a
    local model, that its file system holds at least the model's weight files)."""
    state = run.inspect(recipe, opts.overwrite)
    if state != "complete":
        run.check_writable()
        lower = model_file_bytes(opts.model)
        if lower is not None:
            run.check_free_space(lower, f"at least the size of {opts.model}'s weight files")
    return state


def _reuse(run: RunDir, recipe: dict, opts: PruneOptions) -> tuple[dict, set[str]]:
    """The finished run's record after verifying its files against their digests; damaged model files are
    rebuilt, a damaged ONNX file or plot is to be made again (the returned ``{"onnx", "plot"}`` subset)."""
    run.claim(recipe)  # clears a checkpoint left by an interrupted clean-up
    record = run.record() or {}
    problems = run.verify_outputs(record)
    if not problems:
        _say(f"{opts.out} already holds this run (finished {record.get('finished', '?')}; its "
             f"{len(record['file_digests'])} files verified); nothing to prune")
        return record, set()
    for name, problem in problems.items():
        _say(f"{run.path / name} {problem}")
    names = rebuildable(run, record, problems)
    if names:
        rebuild_model_files(run, record, names, opts.model, _say)
    redo = set()
    if any(n.startswith(ONNX_FILE) for n in problems):
        record.pop("onnx", None)
        redo.add("onnx")
    if PLOT_FILE in problems:
        redo.add("plot")
    record["file_digests"] = {n: d for n, d in record["file_digests"].items()
                              if not n.startswith(DERIVED_PREFIXES) or n not in problems}
    run.write_record(record)
    return record, redo


def _finish(opts: PruneOptions, outcome: PruneOutcome, record: dict, run: RunDir
            ) -> tuple[bool | None, Path | None]:
    """Print the report, plot, export to ONNX (rank 0); (ONNX verification passed or None, the plot or None)."""
    print(outcome.report.table(opts.table))
    print(_summary(outcome.report, opts.out))
    plot = onnx_passed = None
    fresh: list[str] = []
    if opts.plot:
        plot = plot_reduction(outcome.report, opts.out / PLOT_FILE)
        fresh.append(PLOT_FILE)
        _say(f"plot: {plot}")
    try:
        if opts.onnx:
            onnx_passed, exported = _export(opts, record)
            if exported:
                after = {p.name for p in run.path.iterdir() if p.is_file()}
                fresh += sorted(n for n in after if n.startswith(ONNX_FILE))
    finally:  # the record says how the export went, also when it failed
        if opts.plot or opts.onnx:
            run.write_record(record, fresh)
    return onnx_passed, plot


def _check_space(run: RunDir, model, opts: PruneOptions) -> None:
    need, what = output_bytes(model, opts.onnx, opts.refit != "none")
    run.check_free_space(need, what)


def _prune(opts: PruneOptions, argv, recipe: dict, device: str, run: RunDir, state: str, t0: float,
           group) -> tuple[PruneOutcome, dict]:
    """Load, check, calibrate, claim the directory, prune with per-level checkpoints, save; (outcome, record)."""
    ckpt = LevelCheckpoints(run.checkpoint_dir)
    threads = ThreadPolicy.from_option(opts.threads)
    timings, t = {}, time.perf_counter()
    notes: list[str] = []
    with _console_warnings(notes, group):
        model, tokenizer = ranks.everywhere(lambda: _load(opts, device, group), group, f"loading {opts.model}")
        kind = ranks.everywhere(lambda: check_text_model(model, tokenizer, opts.model, opts.calib), group,
                                "checking the model's inputs")
        recipe = ranks.everywhere(lambda: complete_recipe(recipe, model, tokenizer, opts.model), group,
                                  "fingerprinting the model")
        beyond = ranks.everywhere(lambda: check_positions(model, opts.seqlen), group, "checking --seqlen")
        if beyond is not None:
            warnings.warn(f"swappass: {beyond}", CalibrationWarning, stacklevel=1)
        ranks.on_main(lambda: _check_space(run, model, opts), group, f"checking the free space of {opts.out}")
        timings["load"], t = time.perf_counter() - t, time.perf_counter()
        torch.manual_seed(opts.seed)
        threads.enter("calibration")
        windows, cached = ranks.everywhere(
            lambda: _calibration(opts, ckpt, model, tokenizer, state == "resume", group), group, "calibration data")
        timings["calibration_data"], t = time.perf_counter() - t, time.perf_counter()
        existed = run.path.exists()
        state = ranks.on_main(lambda: _claim(run, recipe, opts.overwrite, ckpt, None if cached else windows), group,
                              f"preparing {opts.out}")  # from here on the directory holds this run
        resume = ranks.everywhere(lambda: _resume_states(ckpt, group), group,
                                  f"reading the checkpoint in {ckpt.directory}")
        threads.enter("pruning")
        try:
            report = _sparsify(opts, recipe, device, model, calibration_items(model, windows, kind), ckpt, resume,
                               group, kind)
            if not report.pruned:
                raise NothingPrunedError(nothing_pruned_reason(report, recipe["pattern"]))
        except InputError:
            if distributed.is_main_process(group) and state == "new" and ckpt.finished_levels() == 0:
                ckpt.remove()  # nothing done: leave no trace
                if not existed:
                    run.remove_run()
                    _remove_if_empty(run.path)
            raise
    timings["sparsify"] = time.perf_counter() - t
    record = _record(opts, argv, recipe, report, len(resume), 0.0, group)
    record["threads"] = threads.to_dict()
    if notes:
        record["warnings"] = notes
    ranks.on_main(lambda: _save(opts, run, ckpt, model, tokenizer, report, record, timings, t0), group,
                  f"writing {opts.out}")
    return PruneOutcome(opts.out, state, report, resumed_levels=len(resume)), record


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _resume_states(ckpt: LevelCheckpoints, group) -> list:
    """The verified finished levels; says so, and when a level file was written but never recorded."""
    states = ckpt.load_levels()
    if states:
        _say(f"resuming: levels 0–{len(states) - 1} are done (checkpoint in {ckpt.directory}, verified)", group)
    unrecorded = ckpt.unrecorded_level()
    if unrecorded is not None:
        _say(f"level {unrecorded}'s checkpoint file was written but not recorded (the run stopped between the two); "
             f"it is pruned again", group)
    return states


def _claim(run: RunDir, recipe: dict, overwrite: bool, ckpt: LevelCheckpoints, windows: list | None) -> str:
    """Make the directory this run's (see :meth:`RunDir.claim`) and cache new calibration windows."""
    state = run.claim(recipe, overwrite)
    if windows is not None:
        _write_checkpoint(lambda: ckpt.save_calibration(windows), ckpt, "the calibration tokens")
    return state


def _write_checkpoint(write, ckpt: LevelCheckpoints, what: str) -> None:
    """``write()``; a file system that refuses it becomes a :class:`RunDirError` saying what is kept."""
    try:
        write()
    except Exception as exc:
        code = storage_errno(exc)
        if code is None:
            raise
        done = ckpt.finished_levels()
        kept = f"the {done} finished level(s) are kept" if done else "nothing was finished yet"
        raise RunDirError(f"writing {what} to {ckpt.directory} failed ({os.strerror(code)}); {kept}: free space "
                          f"(or fix the location) and run the same command again") from exc


def _save(opts: PruneOptions, run: RunDir, ckpt: LevelCheckpoints, model, tokenizer, report: SparsifyReport,
          record: dict, timings: dict, t0: float) -> None:
    """Check every pruned weight, write the model, tokenizer and masks (staged, read back), then
    ``swappass.json`` with the files' digests (completing ``record``); drop the checkpoint."""
    t = time.perf_counter()
    _say(f"saving to {opts.out}")
    try:
        names = write_model_files(run, model, tokenizer, report.pruned_weights())
    except PatternViolationError as exc:
        raise PatternViolationError(f"{exc}; nothing was written (the checkpoint in {ckpt.directory} is kept)") from exc
    except Exception as exc:
        code = storage_errno(exc)
        if code is None:
            raise
        shutil.rmtree(run.staging_dir, ignore_errors=True)  # the part written: give its space back
        need, what = output_bytes(model, opts.onnx, opts.refit != "none")
        raise RunDirError(
            f"writing the model to {opts.out} failed ({os.strerror(code)}); the checkpoint with all "
            f"{ckpt.finished_levels()} levels is kept in {ckpt.directory}: free space (the run writes about "
            f"{format_bytes(need)}: {what}) and run the same command again, which only saves"
        ) from exc
    names += _copy_processor_files(opts.model, opts.out)
    timings["save"] = time.perf_counter() - t
    record["seconds"], record["timings"] = time.perf_counter() - t0, timings
    run.write_record(record, names)
    ckpt.remove()


PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json")


def _copy_processor_files(source: str, out: Path) -> list[str]:
    """A model directory's image/audio processor configuration goes with the pruned model (a vision-language
    model's processor is more than its tokenizer); returns the names copied."""
    src, copied = Path(source), []
    if not src.is_dir():
        return copied
    for name in PROCESSOR_FILES:
        if (src / name).is_file() and not (out / name).exists():
            shutil.copyfile(src / name, out / name)
            copied.append(name)
    return copied


def _sparsify(opts: PruneOptions, recipe: dict, device: str, model, windows, ckpt: LevelCheckpoints, resume,
              group=None, kind: str = "decoder") -> SparsifyReport:
    def save_level(state) -> None:
        ranks.on_main(lambda: _write_checkpoint(lambda: ckpt.save_level(state), ckpt, f"level {state.level}"),
                      group, f"saving the checkpoint of level {state.level}")

    try:
        _, report = sparsify(
            model, windows, pattern=recipe["pattern"], warm_start=opts.warm_start, max_iters=opts.iters,
            targets=opts.targets, ignore=_ignore_list(model, opts.ignore), device=device,
            batch_size=recipe["batch_size"], gram_tf32=opts.gram_tf32, sequential=opts.calibration_order,
            refit_rounds=opts.refit_rounds,
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
    except InputError as exc:  # after NonFiniteActivationError, which is one
        if kind == "vision-language" and opts.targets:
            raise InputError(f"{exc} (swappass prune calibrates a vision-language model with text only, so its "
                             f"vision tower and projector do not run; prune them from Python with pixel_values "
                             f"in the calibration items)") from exc
        raise
    except distributed.DistributedError as exc:  # e.g. another rank's input check failed while rows were split
        ranks.raise_peer_input_error(exc)
        raise
    return report


def _export(opts: PruneOptions, record: dict) -> tuple[bool, bool]:
    """Export ``out/model.onnx`` and verify it (reused when this run's file verified before and still matches its
    digest); the outcome goes into ``record``. (passed, whether a file was written). Raises
    :class:`~swappass.onnx.adapter.ExportError` when the model cannot be exported."""
    path = opts.out / ONNX_FILE
    previous = record.get("onnx") or {}
    if previous.get("passed") and path.is_file() and ONNX_FILE in (record.get("file_digests") or {}):
        _say(f"{path} was exported and verified before (passed)")
        return True, False
    record.setdefault("threads", {})["export"] = ThreadPolicy.from_option(opts.threads).enter("export")
    try:
        report = export_pruned_dir(opts.out, path, verbose=False, progress=opts.progress)
    except ExportError as exc:
        record["onnx"] = {"path": str(path), "passed": False, "error": str(exc)}
        raise
    print(report)
    record["onnx"] = report.to_dict()
    return report.passed, True
