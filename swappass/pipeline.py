"""The whole pass: prepare → calibrate → convert (the PT2E shape), and :func:`sparsify`, which drives it.

* :func:`prepare` captures the model, finds and selects its Linear sites and inserts one observer per Gram
  group. The returned :class:`PreparedModel` is callable like the model (one-shot calibration by hand).
* :func:`convert` chooses every observed group's masks with :func:`swappass.prune.prune_weights` (warm start,
  refinement, optional refit) and writes the pruned weights into the user's own parameters; the model object
  needs no swappass to run afterwards.
* :func:`sparsify` does all of it, by default **sequentially**: level by level (see
  :mod:`swappass.graph.stages`), each group calibrated on inputs that already flow through the pruned sites
  upstream of it, with only the values that cross a stage boundary cached per calibration item.
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from torch.utils import _pytree as pytree
from tqdm.auto import tqdm

from .gram import NonFiniteActivationError
from .graph.capture import CapturedGraph, ModelInput, as_call, capture_call, input_signature, move_to, normalize_call
from .graph.instrument import InstrumentedGraph
from .graph.observers import ObserverFactory, SiteObserver, gram_observer_factory
from .graph.sites import GramGroup, Site, Selector, find_sites, select_sites
from .patterns import PatternLike, SparsityPattern, parse_pattern
from .prune import check_prune_options, prune_weights
from .kernels import available_backends
from .report import SiteReport, SparsifyReport

__all__ = ["PreparedModel", "prepare", "convert", "sparsify", "LevelState"]


@dataclass
class LevelState:
    """What one finished level of the sequential pass produced, enough to redo it without pruning again.

    ``rows``: the report rows of the level's sites (status, losses, masks). ``weights``: parameter name ->
    the stored tensor after pruning, only for sites whose kept values the method changed (refit); a site absent
    here is its original weight with the mask applied. ``settings``: report settings known at that point.
    """

    level: int
    rows: list[SiteReport]
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


class PreparedModel:
    """A model with observers on its Linear sites' inputs, callable like the model itself.

    Each distinct input signature (structure, shapes, dtypes) gets its own captured graph on first use; all
    graphs share the observers. ``report`` lists every site from the start (ignored and skipped ones too).
    ``refine`` / ``refit``: the refinement and refit methods the next conversion uses (``refine`` also chose
    the default observers: DSnoT needs per-channel statistics).
    """

    def __init__(
        self,
        model: nn.Module,
        pattern: SparsityPattern,
        targets: Sequence[Selector] | None,
        ignore: Sequence[Selector] | None,
        observer: ObserverFactory,
        sequential: bool,
        method: str,
        *,
        refine: str = "swaps",
        refit: str = "none",
    ) -> None:
        self.model = model
        self.pattern = pattern
        self.targets = list(targets) if targets is not None else None
        self.ignore = list(ignore) if ignore is not None else None
        self.observer_factory = observer
        self.sequential = sequential
        self.method = method
        self.refine = refine
        self.refit = refit
        self.graphs: dict[tuple, InstrumentedGraph] = {}
        self.observers: dict[str, SiteObserver] = {}
        self.converted: set[str] = set()
        self.report = SparsifyReport()
        self._rows: dict[str, SiteReport] = {}

    # -------------------------------------------------------------------- graphs
    def graph_for(self, args: tuple, kwargs: dict) -> InstrumentedGraph:
        """The instrumented graph for a call with these arguments (captured on first use)."""
        sig = input_signature(args, kwargs)
        graph = self.graphs.get(sig)
        if graph is None:
            if self.converted:
                raise RuntimeError("the prepared model was already (partly) converted; it cannot capture new inputs")
            example = move_to((args, kwargs), _model_device(self.model))
            graph = self._instrument(capture_call(self.model, *example, method=self.method))
            self.graphs[sig] = graph
        return graph

    def _instrument(self, captured: CapturedGraph) -> InstrumentedGraph:
        sites = find_sites(captured)
        output_weights = _output_weights(self.model)
        with warnings.catch_warnings():
            if self.graphs:  # selection warnings were given for the first graph already
                warnings.simplefilter("ignore")
            select_sites(sites, self.targets, self.ignore, self.pattern, output_weights)
        graph = InstrumentedGraph(captured, sites, self.observers, self.observer_factory, self.sequential)
        if not self.graphs:
            self._init_report(graph)
        else:
            first = next(iter(self.graphs.values()))
            if first.levels() != graph.levels():
                raise RuntimeError(
                    "the model's graph for this input shape has different Linear sites or dependency levels than "
                    "for the first calibration input; give all calibration inputs the same shape"
                )
        return graph

    def _init_report(self, graph: InstrumentedGraph) -> None:
        level = {s.name: g.level for g in graph.groups for s in g.sites}
        group = {s.name: g.key for g in graph.groups for s in g.sites}
        for s in graph.sites:
            active = s.status == "active"
            row = SiteReport(
                name=s.name, param=s.param_name, module_type=s.module_type, shape=s.shape,
                status="pending" if active else s.status, reason=s.reason, transposed=s.transposed,
                pattern=str(self.pattern) if active else None, level=level.get(s.name), group=group.get(s.name),
            )
            self.report.rows.append(row)
            self._rows[s.name] = row

    @property
    def groups(self) -> list[GramGroup]:
        """The Gram groups (of the first captured graph), in graph order."""
        return next(iter(self.graphs.values())).groups if self.graphs else []

    @property
    def num_levels(self) -> int:
        return max((g.num_levels for g in self.graphs.values()), default=0)

    # -------------------------------------------------------------------- calling
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the model through its instrumented graph (observers record the Linear inputs)."""
        args, kwargs = move_to(normalize_call(self.model, args, kwargs), _model_device(self.model))
        graph = self.graph_for(args, kwargs)
        with torch.no_grad():
            return graph.graph_module(*args, **kwargs)

    def remove_observers(self) -> None:
        for g in self.graphs.values():
            g.remove_observers()


def _output_weights(model: nn.Module) -> list[nn.Parameter]:
    get = getattr(model, "get_output_embeddings", None)
    try:
        out = get() if callable(get) else None
    except (NotImplementedError, AttributeError):
        out = None
    w = getattr(out, "weight", None)
    return [w] if isinstance(w, nn.Parameter) else []


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


# ------------------------------------------------------------------------------------------------ prepare
def prepare(
    model: nn.Module,
    example_inputs: ModelInput,
    *,
    pattern: PatternLike = "0.6",
    targets: Sequence[Selector] | None = None,
    ignore: Sequence[Selector] | None = None,
    sequential: bool = False,
    observer: ObserverFactory | None = None,
    gram_device: torch.device | str | None = None,
    gram_dtype: torch.dtype = torch.float32,
    method: str = "auto",
    refine: str = "swaps",
    gram_tf32: bool = False,
) -> PreparedModel:
    """Capture ``model`` for inputs like ``example_inputs`` and put observers on its selected Linear sites.

    Args:
        pattern: sparsity pattern; sites whose shape cannot take it are skipped (warning, listed in the report).
        targets / ignore: site selectors (names, dotted suffixes such as ``"q_proj"``, class names,
            ``"re:<regex>"``). ``ignore=None`` means ``["lm_head"]`` plus the model's output projection;
            weights tied to an embedding are always ignored.
        sequential: give groups dependency levels (used by :func:`sparsify`); calling the prepared model
            directly always calibrates one-shot (every site sees the dense model).
        observer: ``factory(name, d_in) -> SiteObserver``; default :class:`swappass.graph.GramObserver`
            (:class:`swappass.graph.GramChannelObserver` with ``refine="dsnot"``).
        gram_device / gram_dtype: where and in which dtype the default observer keeps G; gram_tf32: its products
            of fp16/bf16 activations on TF32 tensor cores (faster, less precise; :class:`swappass.GramAccumulator`).
        method: capture method (see :func:`swappass.capture`).
        refine: the refinement :func:`convert` will run by default (``"dsnot"`` collects DSnoT's statistics).

    Calibrate by calling the result like the model, then call :func:`convert`.
    """
    check_prune_options(pattern, "wanda", refine)  # an unknown refine, or DSnoT under a layer budget, raises here
    factory = observer or gram_observer_factory(gram_dtype, gram_device, channel_stats=refine == "dsnot",
                                                tf32=gram_tf32)
    prepared = PreparedModel(model, parse_pattern(pattern), targets, ignore, factory, sequential, method,
                             refine=refine)
    prepared.graph_for(*as_call(model, example_inputs))
    return prepared


# ------------------------------------------------------------------------------------------------ convert
def convert(
    prepared: PreparedModel,
    *,
    warm_start: str = "wanda",
    max_iters: int = 100,
    backend: str = "auto",
    device: torch.device | str | None = None,
    progress: bool = True,
    refine: str | None = None,
    refit: bool | str = False,
    group: torch.distributed.ProcessGroup | None = None,
) -> SparsifyReport:
    """Prune every observed group not pruned yet, write the weights into the model, remove the observers.

    ``warm_start`` / ``refine`` / ``refit`` / ``max_iters`` / ``group`` as in :func:`sparsify` (``refine=None``: the
    one given to :func:`prepare`). Returns the report (``prepared.report``). Raises if some group saw no calibration
    data.
    """
    t0 = time.perf_counter()
    refine = prepared.refine if refine is None else refine
    prepared.refit = _check_method(warm_start, max_iters, refine, refit, prepared.pattern)
    prepared.refine = refine
    todo = [g for g in prepared.groups if g.key not in prepared.converted]
    if refine == "dsnot":
        _check_channel_stats(prepared, todo)
    _convert_groups(prepared, todo, warm_start, max_iters, backend, device, progress, desc="prune",
                    process_group=group)
    prepared.remove_observers()
    prepared.report.seconds += time.perf_counter() - t0
    return prepared.report


def _check_method(
    warm_start: str, max_iters: int, refine: str = "swaps", refit: bool | str = False, pattern: PatternLike = "0.6"
) -> str:
    """Validate the pruning options before any work; returns the refit method's name."""
    return check_prune_options(pattern, warm_start, refine, refit, max_iters)


def _check_channel_stats(prepared: PreparedModel, groups: Sequence[GramGroup]) -> None:
    missing = [g.key for g in groups if prepared.observers[g.key].tokens
               and "channel_stats" not in prepared.observers[g.key].statistics()]
    if missing:
        raise ValueError(
            f"refine='dsnot' needs DSnoT's per-channel statistics, which were not collected for {missing[0]}"
            f"{f' and {len(missing) - 1} more groups' if len(missing) > 1 else ''}: pass refine='dsnot' to prepare() "
            f"(or an observer whose statistics() include 'channel_stats')"
        )


def _check_backend(backend: str, device: torch.device) -> None:
    fast = available_backends(device)
    if backend not in ("auto", "torch", *fast):
        raise ValueError(f"swap-search backend {backend!r} is not available on {device}; use 'auto', 'torch' or {fast}")


def _convert_groups(
    prepared: PreparedModel,
    groups: Sequence[GramGroup],
    warm_start: str,
    max_iters: int,
    backend: str,
    device: torch.device | str | None,
    progress: bool,
    desc: str,
    process_group: torch.distributed.ProcessGroup | None = None,
) -> None:
    bar = tqdm(total=sum(len(g.sites) for g in groups), desc=desc, unit="site", leave=False, disable=not progress)
    for group in groups:
        obs = prepared.observers[group.key]
        if obs.tokens == 0:
            raise RuntimeError(
                f"{group.key}: no calibration data reached these sites; call the prepared model on calibration "
                f"inputs before convert"
            )
        stats = obs.statistics()
        results = prune_weights(
            [s.user_weight() for s in group.sites], stats["G"], prepared.pattern,
            warm_start=warm_start, refine=prepared.refine, refit=prepared.refit, max_iters=max_iters,
            backend=backend, device=device if device is not None else group.sites[0].weight.device,
            statistics=stats, name=group.key, names=group.names, group=process_group,
        )
        for site, res in zip(group.sites, results):
            stored = _write_back(site, res.mask, res.weight)
            row = prepared._rows[site.name]
            row.status, row.warm_start, row.tokens = "pruned", warm_start, int(stats["tokens"])
            row.refine, row.refit, row.reason = res.refine, res.refit, res.note
            row.loss_warm, row.loss_final, row.loss_refit = res.loss_warm, res.loss_final, res.loss_refit
            row.swaps, row.iters, row.seconds = res.swaps, res.iters, res.seconds
            row.cross_moves = int(res.info.get("cross_moves", 0))
            row.set_mask(stored)
            prepared.report.settings.setdefault("backend", res.info.get("backend"))
            bar.update(1)
        obs.release()
        prepared.converted.add(group.key)
    bar.close()


@torch.no_grad()
def _write_back(site: Site, mask: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Write the pruned weight into the user's parameter in place; returns the mask as stored (bool)."""
    param = site.weight
    stored_mask = (mask.T if site.transposed else mask).to(param.device)
    if weight is None:
        param.masked_fill_(~stored_mask, 0)
    else:
        new = (weight.T if site.transposed else weight).to(device=param.device, dtype=param.dtype)
        param.copy_(new.masked_fill(~stored_mask, 0))
    return stored_mask


# ------------------------------------------------------------------------------------------------ sparsify
def sparsify(
    model: nn.Module,
    calib: Iterable[ModelInput],
    pattern: PatternLike = "0.6",
    warm_start: str = "wanda",
    max_iters: int = 100,
    targets: Sequence[Selector] | None = None,
    ignore: Sequence[Selector] | None = None,
    sequential: bool = True,
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
        sequential: calibrate each site on inputs through the already pruned sites upstream (default);
            False = one-shot: every site sees the dense model.
        device: where calibration and refinement run; the model is moved there (default: where it is).
        backend: swap-search backend (see :func:`swappass.refine_mask`).
        batch_size: consecutive calibration items of one shape are concatenated along dim 0 up to this many.
        gram_device: ``"cpu"`` keeps Gram matrices off the accelerator (worth it in one-shot mode on large
            models); gram_dtype: float32 (default) or float64; gram_tf32: products of fp16/bf16 activations on
            TF32 tensor cores (4.4-5.2x faster Gram products on an H100, 10-40x larger error; off by default).
        observer: custom observer factory (see :mod:`swappass.graph.observers`).
        method: capture method (``"auto"``, ``"export"``, ``"symbolic_trace"``).
        progress: show tqdm progress bars (levels, calibration items, sites).
        checkpoint: called with a :class:`LevelState` after each level is pruned (e.g. to save it to disk).
        resume: the states of the first levels of an earlier, interrupted run with the same model, calibration
            data and options: those levels are not pruned again; their weights are restored and, where later
            levels need them, their activations recomputed through the restored weights. The result is the
            same as an uninterrupted run.
        group: a ``torch.distributed`` process group (e.g. from :func:`swappass.distributed.init_distributed`):
            every rank runs this same call (same model, calibration data, settings) and each refines a slice of
            every site's rows; all ranks end with the same pruned model, bit for bit the single-process one.
            ``report.settings["world_size"]`` records the number of ranks (1 without a group).

    Returns ``(model, report)``. Raises ``ValueError`` for an empty calibration set,
    :class:`swappass.NonFiniteActivationError` (naming the sites) for NaN/Inf activations and
    :class:`swappass.CaptureError` for untraceable models. On an error in sequential mode, the levels
    before it are already pruned.
    """
    t0 = time.perf_counter()
    pattern = parse_pattern(pattern)
    refit = _check_method(warm_start, max_iters, refine, refit, pattern)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if device is not None:
        model.to(device)
    dev = _model_device(model)
    _check_backend(backend, torch.device(device) if device is not None else dev)
    calls = [as_call(model, item) for item in calib]
    if not calls:
        raise ValueError("the calibration set is empty: sparsify needs at least one model input in calib")
    calls = _batch_calls(calls, batch_size)

    was_training = model.training
    model.eval()
    try:
        factory = observer or gram_observer_factory(gram_dtype, gram_device, channel_stats=refine == "dsnot",
                                                    tf32=gram_tf32)
        prepared = PreparedModel(model, pattern, targets, ignore, factory, sequential, method, refine=refine,
                                 refit=refit)
        for args, kwargs in calls:
            prepared.graph_for(args, kwargs)
        if len(prepared.graphs) > 4:
            warnings.warn(
                f"swappass: the calibration items have {len(prepared.graphs)} different shapes, each captured "
                f"separately; cut them to one length (e.g. swappass.data.calibration_windows) to save time",
                stacklevel=2,
            )
        _calibrate_and_convert(prepared, calls, dev, warm_start, max_iters, backend, device, progress,
                               checkpoint, list(resume), group=group)
        prepared.remove_observers()
    finally:
        model.train(was_training)

    report = prepared.report
    report.settings.update(
        pattern=str(pattern), warm_start=warm_start, max_iters=max_iters, sequential=sequential,
        refine=refine, refit=refit,
        calibration_items=len(calls), batch_size=batch_size, device=str(dev), gram_dtype=str(gram_dtype),
        gram_tf32=gram_tf32, world_size=1 if group is None else torch.distributed.get_world_size(group),
        gram_device=str(gram_device) if gram_device is not None else str(dev), levels=prepared.num_levels,
        captures=len(prepared.graphs), capture_method=next(iter(prepared.graphs.values())).captured.method,
    )
    report.seconds = time.perf_counter() - t0
    return model, report


def _batch_calls(calls: list[tuple[tuple, dict]], batch_size: int) -> list[tuple[tuple, dict]]:
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
def _calibrate_and_convert(
    prepared: PreparedModel,
    calls: list[tuple[tuple, dict]],
    model_device: torch.device,
    warm_start: str,
    max_iters: int,
    backend: str,
    device: torch.device | str | None,
    progress: bool,
    checkpoint: Callable[[LevelState], None] | None = None,
    resume: Sequence[LevelState] = (),
    group: torch.distributed.ProcessGroup | None = None,
) -> None:
    """Stage by stage over all calibration items, pruning each level's groups right after its stage.

    The first ``len(resume)`` levels are restored from ``resume`` instead of pruned; their stages run only if a
    later level still has to be calibrated.
    """
    work = []  # (plan, per-item cache or the call itself until stage 0 turns it into one)
    for args, kwargs in calls:
        graph = prepared.graph_for(args, kwargs)
        work.append([graph, (args, kwargs)])
    n_levels = prepared.num_levels
    groups = prepared.groups
    _check_resume(resume, groups, n_levels)
    done = len(resume)
    level_bar = tqdm(range(n_levels), desc="swappass levels", unit="level", disable=not progress or n_levels < 2)
    for k in level_bar:
        level_groups = [g for g in groups if g.level == k]
        if k < done and done == n_levels:  # nothing left to calibrate: restore only
            _restore_level(prepared, level_groups, resume[k])
            continue
        replay = k < done
        for i, item in enumerate(tqdm(work, desc=f"{'replay' if replay else 'calibrate'} level {k}", unit="item",
                                      leave=False, disable=not progress)):
            graph, state = item
            plan = graph.plan()
            if k == 0:
                args, kwargs = state
                flat = graph.captured.flatten(*move_to((args, kwargs), model_device))
                state = plan.initial_cache({p.name: v for p, v in zip(graph.captured.placeholders, flat)})
            try:
                plan.stages[k].run(state)
            except NonFiniteActivationError as exc:
                raise NonFiniteActivationError(f"{exc} [calibration item {i}, level {k}]") from exc
            item[1] = state
        if replay:
            _restore_level(prepared, level_groups, resume[k])
            continue
        before = {s.name: s.weight.detach().clone() for g in level_groups for s in g.sites}
        _convert_groups(prepared, level_groups, warm_start, max_iters, backend, device, progress,
                        desc=f"prune level {k}", process_group=group)
        if checkpoint is not None:
            checkpoint(_level_state(prepared, k, level_groups, before))


def _level_state(
    prepared: PreparedModel, level: int, groups: Sequence[GramGroup], before: dict[str, torch.Tensor]
) -> LevelState:
    """The state of a level just pruned; ``before``: the sites' stored weights before pruning."""
    rows, weights = [], {}
    for s in (s for g in groups for s in g.sites):
        row = prepared._rows[s.name]
        rows.append(dataclasses.replace(row))
        masked = before[s.name].masked_fill(~row.mask().to(before[s.name].device), 0)
        if not torch.equal(s.weight.detach(), masked):  # the method changed kept values: keep them
            weights[s.param_name] = s.weight.detach().to("cpu", copy=True)
    settings = {k: v for k, v in prepared.report.settings.items() if k == "backend"}
    return LevelState(level, rows, weights, settings)


def _check_resume(resume: Sequence[LevelState], groups: Sequence[GramGroup], n_levels: int) -> None:
    if len(resume) > n_levels:
        raise ValueError(f"resume holds {len(resume)} levels but the model has {n_levels}: it is from another model")
    for k, state in enumerate(resume):
        expected = [s.name for g in groups if g.level == k for s in g.sites]
        saved = [r.name for r in state.rows]
        if state.level != k or saved != expected:
            raise ValueError(
                f"resume state {k} (level {state.level}: {saved[:3]}…) does not match level {k} of this model "
                f"({expected[:3]}…): it is from another model, pattern or site selection"
            )


@torch.no_grad()
def _restore_level(prepared: PreparedModel, groups: Sequence[GramGroup], state: LevelState) -> None:
    """Write a finished level's weights and report rows back, as if it had just been pruned."""
    saved = {r.name: r for r in state.rows}
    for group in groups:
        for site in group.sites:
            row = saved[site.name]
            mask = row.mask()
            if mask is None or tuple(mask.shape) != tuple(site.weight.shape):
                raise ValueError(f"resume state for {site.name} has no mask of shape {tuple(site.weight.shape)}")
            param = site.weight
            if site.param_name in state.weights:
                param.copy_(state.weights[site.param_name].to(device=param.device, dtype=param.dtype))
            else:
                param.masked_fill_(~mask.to(param.device), 0)
            target = prepared._rows[site.name]
            for f in dataclasses.fields(SiteReport):
                setattr(target, f.name, getattr(row, f.name))
        prepared.observers[group.key].release()
        prepared.converted.add(group.key)
    for key, value in state.settings.items():
        prepared.report.settings.setdefault(key, value)
