"""The ``swappass prune`` job: load a model, calibrate, prune (resumably), save, report, plot, export.

:func:`prune_to_dir` runs the steps in order; the command line (:mod:`swappass.cli`) only parses options.

    outcome = prune_to_dir(PruneOptions(model="smollm2-135m", out=Path("out"), pattern="2:4", calib="self"))

The output directory (see :mod:`swappass.run_dir`) receives a ``save_pretrained`` model with its tokenizer,
``swappass_masks.safetensors`` (bit-packed masks, :func:`swappass.masks.save_masks`), ``swappass.json`` (the
recipe, command line, versions and per-site report), and on request ``reduction.png`` and ``model.onnx``.
While the run works, ``.swappass-checkpoint/`` holds the calibration tokens and one file per finished level;
the same command started again continues from there and gives the same result.

Launched by ``torchrun`` (``WORLD_SIZE`` > 1), every rank runs the same job and the 1-swap refinement is split
over the ranks (:mod:`swappass.distributed`): the result is the single-process one, bit for bit. Rank 0 alone
writes ``--out`` and prints; the ranks agree on every step, so that a bad input fails all of them.
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import torch

from . import distributed
from .calibration import HF_PREFIX, CalibrationError, calibration_set, describe_source
from .checkpoint import LevelCheckpoints
from .masks import MASKS_FILE, save_masks
from .patterns import parse_pattern
from .report import SparsifyReport
from .run_dir import RunDir, RunDirError

__all__ = [
    "PruneOptions", "PruneOutcome", "PruneInputError", "prune_to_dir", "check_options", "resolve_device", "DTYPES",
    "WARM_START_CHOICES", "REFINE_CHOICES", "REFIT_CHOICES",
    "ONNX_FILE", "PLOT_FILE",
]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
WARM_START_CHOICES = ("wanda", "magnitude", "ria", "sparsegpt")
REFINE_CHOICES = ("swaps", "dsnot", "none")  # default first
REFIT_CHOICES = ("none", "lstsq", "sparsegpt")  # default first
ONNX_FILE = "model.onnx"
PLOT_FILE = "reduction.png"
RECORD_FORMAT = 1
# Under torchrun, ranks > 0 wait in a collective while rank 0 alone saves the model and exports and verifies the
# ONNX file, which takes longer than 30 minutes for a large model. A rank that dies is noticed by torchrun at
# once, so this only bounds how long a hung rank 0 goes unnoticed.
RANK_WAIT = timedelta(hours=6)
T = TypeVar("T")


class PruneInputError(ValueError):
    """An option, the model, the calibration data or the output directory cannot be used (exit status 2)."""


@dataclass
class PruneOptions:
    """Everything ``swappass prune`` takes; see ``swappass prune --help`` for each."""

    model: str
    out: Path
    pattern: str = "0.6"
    warm_start: str = "wanda"
    iters: int = 100
    calib: str = "wikitext2"
    nsamples: int = 128
    seqlen: int = 2048
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    batch_size: int = 1
    gram_tf32: bool = False
    targets: list[str] | None = None
    ignore: list[str] = field(default_factory=list)
    refine: str = "swaps"
    refit: str = "none"
    onnx: bool = False
    plot: bool = False
    overwrite: bool = False
    progress: bool = True


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


# ------------------------------------------------------------------------------------------------ options
def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` if available else ``cpu``; checks that the device exists (raises PruneInputError)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise PruneInputError(f"--device {name!r} is not a device (use auto, cpu, cuda, cuda:1 …)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PruneInputError(f"--device {name}: CUDA is not available here; use --device cpu")
    return str(dev)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _calib_identity(spec: str) -> tuple[str, str | None]:
    """(the spec as recorded, the text's SHA-256 for files) — raises for a missing file."""
    if spec in ("self", "wikitext2") or spec.startswith(HF_PREFIX):
        if spec == "wikitext2":
            from . import data

            try:
                path = data.wikitext2_path("valid")
            except data.DataNotFoundError as exc:
                raise PruneInputError(
                    f"--calib wikitext2: {exc}. Pass a text file (--calib FILE.txt), --calib self (data-free: "
                    f"samples from the model) or a hub dataset (--calib hf:NAME[:CONFIG[:SPLIT]])"
                ) from exc
            return spec, _file_sha256(path)
        return spec, None
    path = Path(spec).expanduser()
    if not path.is_file():
        raise PruneInputError(
            f"--calib {spec}: no such file. Use a text file, 'wikitext2', 'self' (data-free) or "
            f"hf:NAME[:CONFIG[:SPLIT]]"
        )
    return str(path.resolve()), _file_sha256(path)


def _model_identity(spec: str) -> str:
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def _sparsify_extras(opts: PruneOptions) -> dict[str, Any]:
    """``refine`` / ``refit`` for :func:`swappass.sparsify`, passed only when not the default."""
    extras: dict[str, Any] = {}
    if opts.refine != REFINE_CHOICES[0]:
        extras["refine"] = opts.refine
    if opts.refit != REFIT_CHOICES[0]:
        extras["refit"] = opts.refit
    return extras


def _check_methods(opts: PruneOptions, pattern) -> None:
    """Reject a method combination the pass cannot run (e.g. --refit sparsegpt without SparseGPT's own mask)."""
    from .prune import check_prune_options

    refit = False if opts.refit == REFIT_CHOICES[0] else opts.refit
    try:
        check_prune_options(pattern, opts.warm_start, opts.refine, refit, opts.iters)
    except ValueError as exc:
        flags = f"--warm-start {opts.warm_start} --refine {opts.refine} --refit {opts.refit} --pattern {pattern}"
        raise PruneInputError(f"{flags}: {exc}") from exc


def check_options(opts: PruneOptions) -> dict[str, Any]:
    """Validate the options before any work; returns the run's recipe (what decides the result)."""
    try:
        pattern = parse_pattern(opts.pattern)
    except (ValueError, TypeError) as exc:
        raise PruneInputError(f"--pattern {opts.pattern!r}: {exc}") from exc
    if opts.warm_start not in WARM_START_CHOICES:
        raise PruneInputError(f"--warm-start {opts.warm_start!r}: choose one of {', '.join(WARM_START_CHOICES)}")
    if opts.refine not in REFINE_CHOICES or opts.refit not in REFIT_CHOICES:
        raise PruneInputError(f"--refine must be one of {REFINE_CHOICES} and --refit one of {REFIT_CHOICES}")
    for flag, value, low in (("--nsamples", opts.nsamples, 1), ("--seqlen", opts.seqlen, 2),
                             ("--iters", opts.iters, 0), ("--batch-size", opts.batch_size, 1)):
        if value < low:
            raise PruneInputError(f"{flag} must be at least {low}, got {value}")
    if opts.dtype not in DTYPES:
        raise PruneInputError(f"--dtype {opts.dtype!r}: choose one of {', '.join(DTYPES)}")
    device = resolve_device(opts.device)
    if opts.plot:
        from .plot import PlotError, require_matplotlib

        try:
            require_matplotlib()
        except PlotError as exc:
            raise PruneInputError(f"--plot: {exc}") from exc
    _check_methods(opts, pattern)
    calib, calib_sha = _calib_identity(opts.calib)
    return {
        "model": _model_identity(opts.model),
        "pattern": str(pattern),
        "warm_start": opts.warm_start,
        "iters": opts.iters,
        "refine": opts.refine,
        "refit": opts.refit,
        "calib": calib,
        "calib_sha256": calib_sha,
        "nsamples": opts.nsamples,
        "seqlen": opts.seqlen,
        "seed": opts.seed,
        "batch_size": opts.batch_size,
        "gram_tf32": opts.gram_tf32,
        "device": device,
        "dtype": opts.dtype,
        "targets": list(opts.targets) if opts.targets is not None else None,
        "ignore": list(opts.ignore),
    }


# ------------------------------------------------------------------------------------------------ torchrun
def _start_group(device: str) -> tuple[Any, bool]:
    """(the process group of a torchrun launch, whether this call created it); (None, False) without torchrun.

    gloo when ``--device`` names the CPU, else :func:`swappass.distributed.init_distributed`'s choice (NCCL with
    CUDA, one GPU per rank).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None, False
    created = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    try:
        group = distributed.init_distributed(backend=_backend_for(device), timeout=RANK_WAIT)
    except RuntimeError as exc:
        raise PruneInputError(f"torchrun launch: {exc}") from exc
    return group, created


def _backend_for(device: str) -> str | None:
    """``gloo`` for an explicit CPU device; None (the default backend) otherwise, a bad name included (the option
    check reports it on every rank)."""
    if device == "auto":
        return None
    try:
        return "gloo" if torch.device(device).type == "cpu" else None
    except RuntimeError:
        return None


def _rank_device(device: str, group) -> str:
    """Where this rank works: ``device`` (the recipe's), a torchrun launch's GPU being this rank's own."""
    if group is None or torch.device(device).type == "cpu":
        return device
    if torch.device(device).index is not None:
        raise PruneInputError(f"--device {device}: under torchrun every rank uses its own GPU (LOCAL_RANK); "
                              f"pass --device auto or cuda")
    mine = distributed.rank_device(group)
    if mine.type != "cuda":
        raise PruneInputError(f"--device {device}: the process group ({torch.distributed.get_backend(group)}) "
                              f"does not use GPUs; pass --device cpu")
    return str(mine)


def _is_main(group) -> bool:
    return group is None or torch.distributed.get_rank(group) == 0


def _world(group) -> dict[str, Any]:
    """The record's ``distributed`` entry: world size and backend (None for one process)."""
    if group is None:
        return {"world_size": 1, "backend": None}
    return {"world_size": torch.distributed.get_world_size(group), "backend": str(torch.distributed.get_backend(group))}


def _everywhere(fn: Callable[[], T], group, what: str) -> T:
    """``fn()`` on every rank; if it fails on any rank, every rank raises (another rank's bad input as
    :class:`PruneInputError`)."""
    return _agreed(distributed.run_agreed, fn, group, what)


def _on_main(fn: Callable[[], T], group, what: str) -> T:
    """``fn()`` on rank 0 (writing, printing), its result sent to every rank; a failure fails every rank."""
    return _agreed(distributed.main_process_shared, fn, group, what)


def _agreed(step: Callable[..., T], fn: Callable[[], T], group, what: str) -> T:
    """``fn()`` through ``step`` (a :mod:`swappass.distributed` collective); a peer's bad input re-raised as ours."""
    if group is None:
        return fn()
    try:
        return step(fn, group, what=what)
    except distributed.DistributedError as exc:
        _raise_peer_input_error(exc)
        raise


def _raise_peer_input_error(exc: Exception) -> None:
    """If ``exc`` reports other ranks' bad input only (PruneInputError, or a ValueError of the pass's input
    checks), raise it as a :class:`PruneInputError` with the first one's message, so that every rank exits 2."""
    failures = getattr(exc, "failures", None) or {}
    if failures and all(kind in ("PruneInputError", "ValueError") for kind, _ in failures.values()):
        rank, (_, message) = next(iter(failures.items()))
        raise PruneInputError(f"{message} [reported by rank {rank}]") from exc


# ------------------------------------------------------------------------------------------------ the job
def _say(message: str, group=None) -> None:
    if _is_main(group):
        print(f"swappass: {message}", file=sys.stderr, flush=True)


def _versions() -> dict[str, str]:
    import transformers

    from . import __version__

    return {
        "swappass": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
    }


def _ignore_list(model: torch.nn.Module, extra: Sequence[str]) -> list[str] | None:
    """The CLI's ``--ignore`` adds to the defaults: ``lm_head`` and the model's output projection stay dense."""
    if not extra:
        return None
    from .graph.sites import DEFAULT_IGNORE

    names = list(DEFAULT_IGNORE)
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if head is not None:
        names += [n for n, m in model.named_modules() if m is head and n and n not in names]
    return names + [s for s in extra if s not in names]


def _load(opts: PruneOptions, device: str, group):
    from .models import ModelLoadError, load_model

    _say(f"loading {opts.model} ({opts.dtype})", group)
    try:
        return load_model(opts.model, dtype=DTYPES[opts.dtype], device=device)
    except ModelLoadError as exc:
        raise PruneInputError(str(exc)) from exc


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
                                  seed=opts.seed, progress=opts.progress and _is_main(group))
    except CalibrationError as exc:
        raise PruneInputError(f"--calib {opts.calib}: {exc}") from exc
    return windows, False


def _record(opts: PruneOptions, argv: Sequence[str] | None, recipe: dict, report: SparsifyReport,
            resumed: int, seconds: float, group=None) -> dict[str, Any]:
    import shlex

    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    return {
        "format": RECORD_FORMAT,
        "complete": True,
        "command": shlex.join(["swappass", *argv]) if argv is not None else None,
        "recipe": recipe,
        "options": options,
        "distributed": _world(group),  # this invocation's ranks (not in the recipe: the result is the same)
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
    """Run the whole job. Raises :class:`PruneInputError` for bad input, before the output directory is touched
    (or, for a selection that matches nothing, after removing the little this run had written).

    Under torchrun every rank calls this with the same options; the process group is started here (and ended
    here if started here) and every rank returns the same outcome.
    """
    group, created = _start_group(opts.device)
    together = False  # whether every rank leaves at the same point (a result, or bad input they agreed on)
    try:
        outcome = _run(opts, argv, group)
        together = True
        return outcome
    except PruneInputError:
        together = True
        raise
    finally:
        if created:
            distributed.close_distributed(group, wait=together)


def _run(opts: PruneOptions, argv: Sequence[str] | None, group) -> PruneOutcome:
    t0 = time.perf_counter()
    recipe = _everywhere(lambda: check_options(opts), group, "checking the options")
    device = _everywhere(lambda: _rank_device(recipe["device"], group), group, "choosing the device")
    run = RunDir(opts.out)
    state = _on_main(lambda: _inspect(run, recipe, opts.overwrite), group, f"checking --out {opts.out}")
    if state == "complete":
        record = _on_main(lambda: _reuse(run, recipe, opts.out), group, f"reading {run.run_file}")
        outcome = PruneOutcome(opts.out, state, SparsifyReport.from_dict(record.get("report", {})))
    else:
        outcome, record = _prune(opts, argv, recipe, device, run, state, t0, group)
    outcome.onnx_passed, outcome.plot = _on_main(lambda: _finish(opts, outcome, record, run), group,
                                                 f"finishing {opts.out}")
    return outcome


def _inspect(run: RunDir, recipe: dict, overwrite: bool) -> str:
    try:
        return run.inspect(recipe, overwrite)
    except RunDirError as exc:
        raise PruneInputError(str(exc)) from exc


def _reuse(run: RunDir, recipe: dict, out: Path) -> dict:
    """The finished run's record (the directory already holds this run)."""
    run.claim(recipe)  # clears a checkpoint left by an interrupted clean-up
    record = run.record() or {}
    _say(f"{out} already holds this run (finished {record.get('finished', '?')}); nothing to prune")
    return record


def _finish(opts: PruneOptions, outcome: PruneOutcome, record: dict, run: RunDir) -> tuple[bool | None, Path | None]:
    """Print the report, plot, export to ONNX (rank 0); (ONNX verification passed or None, the plot or None)."""
    print(outcome.report)
    print(_summary(outcome.report, opts.out))
    plot = onnx_passed = None
    if opts.plot:
        from .plot import plot_reduction

        plot = plot_reduction(outcome.report, opts.out / PLOT_FILE)
        _say(f"plot: {plot}")
    if opts.onnx:
        onnx_passed = _export(opts, record)
    if opts.plot or opts.onnx:
        run.write_record(record)
    return onnx_passed, plot


def _prune(opts: PruneOptions, argv, recipe: dict, device: str, run: RunDir, state: str, t0: float,
           group) -> tuple[PruneOutcome, dict]:
    """Load, calibrate, claim the directory, prune with per-level checkpoints, save; (outcome, swappass.json)."""
    ckpt = LevelCheckpoints(run.checkpoint_dir)
    timings, t = {}, time.perf_counter()
    model, tokenizer = _everywhere(lambda: _load(opts, device, group), group, f"loading {opts.model}")
    timings["load"], t = time.perf_counter() - t, time.perf_counter()
    torch.manual_seed(opts.seed)
    windows, cached = _everywhere(lambda: _calibration(opts, ckpt, model, tokenizer, state == "resume", group),
                                  group, "calibration data")
    timings["calibration_data"], t = time.perf_counter() - t, time.perf_counter()
    existed = run.path.exists()
    state = _on_main(lambda: _claim(run, recipe, opts.overwrite, ckpt, None if cached else windows), group,
                     f"preparing {opts.out}")  # from here on the directory holds this run
    resume = _everywhere(ckpt.load_levels, group, f"reading the checkpoint in {ckpt.directory}")
    if resume:
        _say(f"resuming: levels 0–{len(resume) - 1} are done (checkpoint in {ckpt.directory})", group)
    try:
        report = _sparsify(opts, recipe, device, model, windows, ckpt, resume, group)
    except PruneInputError:
        if _is_main(group) and state == "new" and ckpt.finished_levels() == 0:  # nothing done: leave no trace
            ckpt.remove()
            if not existed:
                run.path.rmdir()
        raise
    timings["sparsify"] = time.perf_counter() - t
    record = _record(opts, argv, recipe, report, len(resume), 0.0, group)
    _on_main(lambda: _save(opts, run, ckpt, model, tokenizer, report, record, timings, t0), group,
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
    from .pipeline import sparsify

    def save_level(state) -> None:
        _on_main(lambda: ckpt.save_level(state), group, f"saving the checkpoint of level {state.level}")

    extras = _sparsify_extras(opts)
    try:
        _, report = sparsify(
            model, windows, pattern=recipe["pattern"], warm_start=opts.warm_start, max_iters=opts.iters,
            targets=opts.targets, ignore=_ignore_list(model, opts.ignore), device=device,
            batch_size=opts.batch_size, gram_tf32=opts.gram_tf32, progress=opts.progress and _is_main(group),
            checkpoint=save_level, resume=resume, group=group, **extras,
        )
    except KeyboardInterrupt:
        done = ckpt.finished_levels()
        _say(f"interrupted with {done} level(s) saved; run the same command again to resume", group)
        raise
    except ValueError as exc:  # sparsify's input checks: a selection that matches nothing, …
        raise PruneInputError(str(exc)) from exc
    except RuntimeError as exc:  # e.g. another rank's input check failed while the rows were split
        _raise_peer_input_error(exc)
        raise
    return report


def _export(opts: PruneOptions, record: dict) -> bool:
    """Export ``out/model.onnx`` and verify it (reused when this run's file verified before)."""
    from tqdm.auto import tqdm

    from .onnx_adapter import ExportError
    from .pruned_dir import export_pruned_dir

    path = opts.out / ONNX_FILE
    previous = record.get("onnx") or {}
    if previous.get("passed") and path.is_file() and previous.get("file_bytes") == path.stat().st_size:
        _say(f"{path} was exported and verified before (passed)")
        return True
    bar = tqdm(total=1, desc="ONNX export + verification", unit="step", disable=not opts.progress)
    try:
        report = export_pruned_dir(opts.out, path, verbose=False)
    except ExportError as exc:
        bar.close()
        record["onnx"] = {"path": str(path), "passed": False, "error": str(exc)}
        _say(f"ONNX export failed: {exc}")
        return False
    bar.update(1)
    bar.close()
    print(report)
    record["onnx"] = report.to_dict()
    return report.passed
