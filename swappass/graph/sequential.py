"""``sparsify``: the whole pass in one call, by default **sequentially** (DESIGN.md §2).

It captures the model (:mod:`swappass.graph.prepared`), then goes level by level (:mod:`swappass.graph.stages`):
each level's stage runs over every calibration item, so its groups are calibrated on inputs that already flow
through the pruned sites upstream, and the level is pruned right away (:mod:`swappass.graph.conversion`); only the
values that cross a stage boundary are cached per calibration item. Finished levels can be checkpointed and
resumed (:mod:`swappass.graph.levels`).
"""
from __future__ import annotations

import time
import warnings
from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.utils import _pytree as pytree
from tqdm.auto import tqdm

from ..core.digests import state_sha256
from ..core.errors import InputError, NonFiniteActivationError
from ..core.patterns import PatternLike, parse_pattern
from ..core.validate import check_count
from ..kernels.registry import resolve_backend
from ..methods.options import check_prune_options
from .blocks import calibration_order
from .conversion import convert_groups
from .levels import LevelState, check_resume, level_state, restore_level
from .observers import ObserverFactory, gram_observer_factory
from .prepared import PreparedModel, model_device
from .report import SparsifyReport
from .sites import GramGroup, Selector
from .tracing import ModelInput, as_call, input_signature, move_to

__all__ = ["sparsify", "batch_calls", "calibrate_and_convert"]


def sparsify(
    model: nn.Module,
    calib: Iterable[ModelInput],
    pattern: PatternLike = "0.6",
    warm_start: str = "wanda",
    max_iters: int = 100,
    targets: Sequence[Selector] | None = None,
    ignore: Sequence[Selector] | None = None,
    sequential: bool | str = True,
    device: torch.device | str | None = None,
    backend: str = "auto",
    *,
    refine: str = "swaps",
    refit: bool | str = False,
    batch_size: int = 1,
    gram_device: torch.device | str | None = None,
    gram_dtype: torch.dtype = torch.float32,
    gram_tf32: bool = False,
    observer: ObserverFactory | None = None,
    method: str = "auto",
    progress: bool = True,
    checkpoint: Callable[[LevelState], None] | None = None,
    resume: Sequence[LevelState] = (),
    group: torch.distributed.ProcessGroup | None = None,
    refit_rounds: int = 1,
) -> tuple[nn.Module, SparsifyReport]:
    """Prune the Linear layers of ``model`` in place: warm start, mask refinement (exact 1-swaps), optional refit.

    Args:
        model: the model to prune (its own parameters receive the pruned weights).
        calib: calibration inputs, each one model call: a tensor, a tuple of positional arguments or a dict
            of keywords (``{"input_ids": ids}``); Hugging Face models get ``use_cache=False``. Items of
            different shapes are fine (each shape is captured once) but cost a capture each.
        pattern: ``"0.6"`` (60% per row), ``"2:4"``, … (see :func:`swappass.parse_pattern`).
        warm_start: ``"wanda"`` (default), ``"magnitude"``, ``"ria"`` or ``"sparsegpt"`` (its mask, projected to
            the pattern).
        max_iters: 1-swap iterations per row (the paper's default 100; 0 = warm start only).
        refine: ``"swaps"`` (SparseSwaps, default), ``"dsnot"`` (the DSnoT baseline with the reference's defaults;
            attention sites only, ``skip_layer="mlp"``; per-row and N:M patterns) or ``"none"`` (the warm start).
        refit: ``False`` (mask only, default); ``True`` / ``"lstsq"``: re-solve the kept weights of every row by
            damped least squares on G after the mask is final; ``"sparsegpt"``: SparseGPT's own updated weights
            (the SparseGPT baseline: ``warm_start="sparsegpt"``, ``refine="none"``, N:M or unstructured pattern).
            Either refit writes new weights (zero exactly where pruned); the report has both layer errors.
        targets / ignore: which sites to prune (see :func:`prepare`).
        sequential: the calibration order (:mod:`swappass.graph.blocks`): ``"level"`` / ``True`` (default): every
            site on inputs through all the pruned sites upstream of it; ``"block"``: every site of a decoder block
            on the block's inputs from the pruned blocks before it, the block itself dense (Wanda's and SparseGPT's
            order); ``"none"`` / ``False``: one-shot, every site sees the dense model.
        device: where calibration and refinement run; the model is moved there (default: where it is).
        backend: swap-search backend (see :func:`swappass.refine_mask`).
        batch_size: consecutive calibration items of one shape are concatenated along dim 0 up to this many.
        gram_device: ``"cpu"`` keeps Gram matrices off the accelerator (worth it in one-shot mode on large
            models); gram_dtype: float32 (default) or float64; gram_tf32: products of fp16/bf16 activations on
            TF32 tensor cores (4.4-5.2x faster Gram products on an H100, 10-40x larger error; off by default).
        observer: custom observer factory (see :mod:`swappass.graph.observers`).
        method: capture method (``"auto"``, ``"export"``, ``"symbolic_trace"``).
        progress: show tqdm progress bars (levels, calibration items, sites).
        checkpoint: called with a :class:`LevelState` after each level is pruned (e.g. to save it to disk); the
            state records the digest of the dense model's state (:func:`swappass.core.digests.state_sha256`).
        resume: the states of the first levels of an earlier, interrupted run with the same model, calibration
            data and options: those levels are not pruned again; their weights are restored and, where later
            levels need them, their activations recomputed through the restored weights. The result is the
            same as an uninterrupted run. A state made from other dense weights (its recorded digest differs),
            for other sites, or with a mask that breaks its pattern is refused (:class:`~swappass.InputError`).
        group: a ``torch.distributed`` process group (e.g. from :func:`swappass.init_distributed`):
            every rank runs this same call (same model, calibration data, settings) and each refines a slice of
            every site's rows; all ranks end with the same pruned model, bit for bit the single-process one.
            ``report.settings["world_size"]`` records the number of ranks (1 without a group).
        refit_rounds: with ``refit="lstsq"``: 1 (default) = swaps, then the refit; R > 1 alternates refits and
            swaps that account for the refitted values (:mod:`swappass.methods.alternation`).

    Returns ``(model, report)``. Raises :class:`~swappass.InputError` for bad options or an empty calibration set,
    :class:`swappass.NonFiniteActivationError` (naming the sites) for NaN/Inf activations and
    :class:`swappass.CaptureError` for untraceable models. On an error in sequential mode, the levels
    before it are already pruned.
    """
    t0 = time.perf_counter()
    pattern = parse_pattern(pattern)
    order = calibration_order(sequential)
    refit = check_prune_options(pattern, warm_start, refine, refit, max_iters, refit_rounds)
    check_count(batch_size, "batch_size", minimum=1)
    resume = list(resume)
    dense_sha256 = state_sha256(model) if checkpoint is not None or resume else None
    if device is not None:
        model.to(device)
    dev = model_device(model)
    resolve_backend(backend, torch.device(device) if device is not None else dev)
    calls = [as_call(model, item) for item in calib]
    if not calls:
        raise InputError("the calibration set is empty: sparsify needs at least one model input in calib")
    calls = batch_calls(calls, batch_size)

    was_training = model.training
    model.eval()
    try:
        factory = observer or gram_observer_factory(gram_dtype, gram_device, channel_stats=refine == "dsnot",
                                                    tf32=gram_tf32)
        prepared = PreparedModel(model, pattern, targets, ignore, factory, order, method, refine=refine,
                                 refit=refit)
        prepared.refit_rounds = refit_rounds
        _capture_all(prepared, calls)
        calibrate_and_convert(prepared, calls, dev, warm_start, max_iters, backend, device, progress,
                               checkpoint, resume, group=group, model_sha256=dense_sha256)
        prepared.remove_observers()
    finally:
        model.train(was_training)

    report = prepared.report
    report.settings.update(
        pattern=str(pattern), warm_start=warm_start, max_iters=max_iters, sequential=order != "none",
        calibration_order=order,
        refine=refine, refit=refit, refit_rounds=refit_rounds,
        calibration_items=len(calls), batch_size=batch_size, device=str(dev), gram_dtype=str(gram_dtype),
        gram_tf32=gram_tf32, world_size=1 if group is None else torch.distributed.get_world_size(group),
        gram_device=str(gram_device) if gram_device is not None else str(dev), levels=prepared.num_levels,
        captures=len(prepared.graphs), capture_method=next(iter(prepared.graphs.values())).captured.method,
    )
    report.seconds = time.perf_counter() - t0
    return model, report


def _capture_all(prepared: PreparedModel, calls: Sequence[tuple[tuple, dict]]) -> None:
    """Capture a graph for every distinct call signature (warning when there are many)."""
    for args, kwargs in calls:
        prepared.graph_for(args, kwargs)
    if len(prepared.graphs) > 4:
        warnings.warn(
            f"swappass: the calibration items have {len(prepared.graphs)} different shapes, each captured "
            f"separately; cut them to one length (e.g. swappass.lm.data.calibration_windows) to save time",
            stacklevel=3,
        )


def batch_calls(calls: list[tuple[tuple, dict]], batch_size: int) -> list[tuple[tuple, dict]]:
    """Concatenate runs of up to ``batch_size`` consecutive same-signature calls along dim 0."""
    if batch_size == 1:
        return calls
    out, run = [], []
    for call in calls + [None]:
        if run and (call is None or len(run) == batch_size or input_signature(*call) != input_signature(*run[0])):
            flat = [pytree.tree_flatten(c)[0] for c in run]
            spec = pytree.tree_flatten(run[0])[1]
            merged = [
                torch.cat(vals) if isinstance(vals[0], torch.Tensor) and vals[0].dim() > 0 else vals[0]
                for vals in zip(*flat)
            ]
            out.append(pytree.tree_unflatten(merged, spec))
            run = []
        if call is not None:
            run.append(call)
    return out


@torch.no_grad()
def calibrate_and_convert(
    prepared: PreparedModel,
    calls: list[tuple[tuple, dict]],
    inputs_device: torch.device,
    warm_start: str,
    max_iters: int,
    backend: str,
    device: torch.device | str | None,
    progress: bool,
    checkpoint: Callable[[LevelState], None] | None = None,
    resume: Sequence[LevelState] = (),
    group: torch.distributed.ProcessGroup | None = None,
    model_sha256: str | None = None,
) -> None:
    """Stage by stage over all calibration items, pruning each level's groups right after its stage.

    The first ``len(resume)`` levels are restored from ``resume`` instead of pruned; their stages run only if a
    later level still has to be calibrated. In the ``"block"`` order a level is a block, calibrated dense: its
    stage runs again once it is pruned, so that later blocks read its pruned outputs. ``model_sha256``: the dense
    model's state digest, checked against the resume states' and recorded in the new ones.
    """
    work = [[prepared.graph_for(args, kwargs), (args, kwargs)] for args, kwargs in calls]
    n_levels = prepared.num_levels
    groups = prepared.groups
    check_resume(resume, groups, n_levels, model_sha256)
    done = len(resume)
    dense_stages = prepared.order == "block"
    level_bar = tqdm(range(n_levels), desc="swappass levels", unit="level", disable=not progress or n_levels < 2)
    for k in level_bar:
        level_groups = [g for g in groups if g.level == k]
        if k < done and done == n_levels:  # nothing left to calibrate: restore only
            restore_level(prepared, level_groups, resume[k])
            continue
        if k < done:  # replay: the restored weights' outputs feed the next levels
            if dense_stages:
                restore_level(prepared, level_groups, resume[k])
                _set_observers(prepared, level_groups, enabled=False)
            _run_stage(work, k, inputs_device, progress, "replay", drop=True)
            if not dense_stages:
                restore_level(prepared, level_groups, resume[k])
            continue
        _run_stage(work, k, inputs_device, progress, "calibrate", drop=not dense_stages)
        before = {s.name: s.stored().clone() for g in level_groups for s in g.sites}
        convert_groups(prepared, level_groups, warm_start, max_iters, backend, device, progress,
                       desc=f"prune level {k}", process_group=group)
        if checkpoint is not None:
            checkpoint(level_state(prepared, k, level_groups, before, model_sha256))
        if dense_stages:
            _set_observers(prepared, level_groups, enabled=False)
            _run_stage(work, k, inputs_device, progress, "recompute", drop=True)


def _run_stage(work: list[list], k: int, inputs_device: torch.device, progress: bool, what: str, drop: bool) -> None:
    """Run stage ``k`` for every calibration item (``[graph, cache or call]``, the cache made at stage 0)."""
    for i, item in enumerate(tqdm(work, desc=f"{what} level {k}", unit="item", leave=False, disable=not progress)):
        graph, state = item
        plan = graph.plan()
        if k == 0 and isinstance(state, tuple):
            args, kwargs = state
            flat = graph.captured.flatten(*move_to((args, kwargs), inputs_device))
            state = plan.initial_cache({p.name: v for p, v in zip(graph.captured.placeholders, flat)})
        try:
            plan.stages[k].run(state, drop=drop)
        except NonFiniteActivationError as exc:
            raise NonFiniteActivationError(f"{exc} [calibration item {i}, level {k}]") from exc
        item[1] = state


def _set_observers(prepared: PreparedModel, groups: Sequence[GramGroup], enabled: bool) -> None:
    for g in groups:
        prepared.observers[g.key].enabled = enabled
