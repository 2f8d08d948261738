"""``prepare``: a model captured as a graph with observers on its Linear sites' inputs (the PT2E shape).

:func:`prepare` captures the model, finds and selects its Linear sites and inserts one observer per Gram group;
the returned :class:`PreparedModel` is callable like the model (one-shot calibration by hand), and
:func:`swappass.convert` then prunes what the observers saw. :func:`swappass.sparsify` drives the same object
level by level.
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch
from torch import nn

from ..core.errors import InputError
from ..core.patterns import PatternLike, SparsityPattern, parse_pattern
from ..methods.options import check_prune_options
from .blocks import calibration_order
from .instrument import InstrumentedGraph
from .observers import ObserverFactory, SiteObserver, gram_observer_factory
from .report import SiteReport, SparsifyReport
from .sites import GramGroup, Selector, Site, find_sites, select_sites
from .tracing import CapturedGraph, ModelInput, as_call, capture_call, input_signature, move_to, normalize_call

__all__ = ["PreparedModel", "prepare", "model_device", "output_weights", "expert_order"]


class PreparedModel:
    """A model with observers on its Linear sites' inputs, callable like the model itself.

    Each distinct input signature (structure, shapes, dtypes) gets its own captured graph on first use; all
    graphs share the observers. ``report`` lists every site from the start (ignored and skipped ones too);
    :meth:`row` finds a site's row. ``refine`` / ``refit``: the refinement and refit methods the next conversion
    uses (``refine`` also chose the default observers: DSnoT needs per-channel statistics).
    """

    def __init__(
        self,
        model: nn.Module,
        pattern: SparsityPattern,
        targets: Sequence[Selector] | None,
        ignore: Sequence[Selector] | None,
        observer: ObserverFactory,
        order: str,
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
        self.order = calibration_order(order)
        self.method = method
        self.refine = refine
        self.refit = refit
        self.refit_rounds = 1
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
                raise InputError("the prepared model was already (partly) converted; it cannot capture new inputs")
            example = move_to((args, kwargs), model_device(self.model))
            graph = self._instrument(capture_call(self.model, *example, method=self.method))
            self.graphs[sig] = graph
        return graph

    def _instrument(self, captured: CapturedGraph) -> InstrumentedGraph:
        sites = find_sites(captured)
        with warnings.catch_warnings():
            if self.graphs:  # selection warnings were given for the first graph already
                warnings.simplefilter("ignore")
            select_sites(sites, self.targets, self.ignore, self.pattern, output_weights(self.model))
        graph = InstrumentedGraph(captured, sites, self.observers, self.observer_factory, self.order)
        if not self.graphs:
            self._init_report(graph)
        else:
            first = next(iter(self.graphs.values()))
            if first.levels() != graph.levels():
                raise InputError(
                    "the model's graph for this input shape has different Linear sites or dependency levels than "
                    "for the first calibration input; give all calibration inputs the same shape"
                )
        return graph

    def _init_report(self, graph: InstrumentedGraph) -> None:
        level = {s.name: g.level for g in graph.groups for s in g.sites}
        group = {s.name: g.key for g in graph.groups for s in g.sites}
        for s in expert_order(graph.sites):
            active = s.status == "active"
            row = SiteReport(
                name=s.name, param=s.param_name, module_type=s.module_type, shape=s.shape,
                status="pending" if active else s.status, reason=s.reason, transposed=s.transposed,
                pattern=str(self.pattern) if active else None, level=level.get(s.name), group=group.get(s.name),
                expert=s.expert, role=s.role,
            )
            self.report.rows.append(row)
            self._rows[s.name] = row

    def row(self, site: str) -> SiteReport:
        """The report row of the site named ``site``."""
        return self._rows[site]

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
        args, kwargs = move_to(normalize_call(self.model, args, kwargs), model_device(self.model))
        graph = self.graph_for(args, kwargs)
        with torch.no_grad():
            return graph.graph_module(*args, **kwargs)

    def remove_observers(self) -> None:
        """Erase the observers from every captured graph (the graphs compute the model again, nothing else)."""
        for g in self.graphs.values():
            g.remove_observers()


def expert_order(sites: Sequence[Site]) -> list[Site]:
    """``sites`` in graph order, except that the expert sites of one MoE block (one module) are grouped per
    expert: expert 0's matrices (gate_up, down …), then expert 1's, at the place of the block's first one."""
    out: list[Site] = []
    blocks: dict[str, list[Site]] = {}
    for s in sites:
        if s.expert is None:
            out.append(s)
            continue
        if s.module not in blocks:
            blocks[s.module] = []
            out.append(s)  # placeholder: where the block starts
        blocks[s.module].append(s)
    ordered: list[Site] = []
    for s in out:
        if s.expert is None:
            ordered.append(s)
        else:
            ordered.extend(sorted(blocks[s.module], key=lambda x: x.expert))  # stable: graph order per expert
    return ordered


def output_weights(model: nn.Module) -> list[nn.Parameter]:
    """The weight of the model's output projection (``get_output_embeddings()``), if it has one."""
    get = getattr(model, "get_output_embeddings", None)
    try:
        out = get() if callable(get) else None
    except (NotImplementedError, AttributeError):
        out = None
    w = getattr(out, "weight", None)
    return [w] if isinstance(w, nn.Parameter) else []


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def prepare(
    model: nn.Module,
    example_inputs: ModelInput,
    *,
    pattern: PatternLike = "0.6",
    targets: Sequence[Selector] | None = None,
    ignore: Sequence[Selector] | None = None,
    sequential: bool | str = False,
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
        sequential: the calibration order :func:`sparsify` will follow (``"level"`` / True, ``"block"``, or
            ``"none"`` / False, see :mod:`swappass.graph.blocks`); calling the prepared model directly always
            calibrates one-shot (every site sees the dense model).
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
    prepared = PreparedModel(model, parse_pattern(pattern), targets, ignore, factory, calibration_order(sequential),
                             method,
                             refine=refine)
    prepared.graph_for(*as_call(model, example_inputs))
    return prepared



