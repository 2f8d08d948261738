"""Instrumentation: observer nodes in a captured graph (inserted by prepare, removed by convert)."""
from __future__ import annotations

from typing import Mapping, MutableMapping, Sequence

import torch.fx as fx

from .blocks import block_levels
from .observers import ExpertDispatch, ObserverFactory, SiteObserver
from .sites import GramGroup, Site, gram_groups
from .stages import SequentialOrderError, StagePlan, assign_levels, plan_stages
from .tracing import CapturedGraph

__all__ = ["InstrumentedGraph", "OBSERVER_PREFIX"]

OBSERVER_PREFIX = "swappass_observer_"


class InstrumentedGraph:
    """A :class:`CapturedGraph` whose active Gram groups each have an observer node on their input(s).

    Observers are shared through ``observers`` (group key -> module), so graphs captured for several input
    shapes accumulate into the same statistics. ``order`` (:mod:`swappass.graph.blocks`) decides the groups'
    levels: their dependency levels (``"level"``, :func:`swappass.graph.stages.assign_levels`), the index of their
    block (``"block"``, :func:`swappass.graph.blocks.block_levels`), or 0 for all (``"none"``, one-shot). The
    experts of one fused matmul share one :class:`~swappass.graph.observers.ExpertDispatch` node, which feeds each
    expert's own observer.
    """

    def __init__(
        self,
        captured: CapturedGraph,
        sites: Sequence[Site],
        observers: MutableMapping[str, SiteObserver],
        observer_factory: ObserverFactory,
        order: str,
    ) -> None:
        self.captured = captured
        self.sites = list(sites)
        self.order = order
        self.groups: list[GramGroup] = gram_groups(self.sites)
        if order != "none":
            levels = assign_levels(
                captured.graph_module.graph,
                {g.key: g.inputs + g.routes for g in self.groups},
                {g.key: [op for s in g.sites for op in s.ops] for g in self.groups},
            )
            if order == "block":
                levels = block_levels(self.groups, levels, captured.model)
            for g in self.groups:
                g.level = levels[g.key]
        self.observer_nodes: dict[str, list[fx.Node]] = {}
        self._plan: StagePlan | None = None
        self._insert_observers(observers, observer_factory)

    @property
    def graph_module(self) -> fx.GraphModule:
        return self.captured.graph_module

    @property
    def num_levels(self) -> int:
        return 1 + max((g.level for g in self.groups), default=-1)

    def _insert_observers(self, observers: MutableMapping[str, SiteObserver], factory: ObserverFactory) -> None:
        gm = self.graph_module
        graph = gm.graph
        position = {n: i for i, n in enumerate(graph.nodes)}
        last_placeholder = max((n for n in graph.nodes if n.op == "placeholder"), key=position.get, default=None)
        routed: dict[tuple, list[GramGroup]] = {}
        for i, group in enumerate(self.groups):
            obs = observers.get(group.key)
            if obs is None:
                obs = observers[group.key] = factory(group.key, group.d_in)
            if group.expert is not None:
                routed.setdefault((tuple(group.inputs), tuple(group.routes), group.layout), []).append(group)
                continue
            target = f"{OBSERVER_PREFIX}{i}"
            gm.add_submodule(target, obs)
            nodes = []
            for x in group.inputs:
                anchor = last_placeholder if x.op == "placeholder" else x
                with graph.inserting_after(anchor):
                    nodes.append(graph.call_module(target, (x,)))
            self.observer_nodes[group.key] = nodes
        for j, ((inputs, routes, layout), groups) in enumerate(routed.items()):
            slots: list[SiteObserver | None] = [None] * int(groups[0].num_experts)
            for g in groups:
                slots[g.expert] = observers[g.key]
            target = f"{OBSERVER_PREFIX}experts_{j}"
            gm.add_submodule(target, ExpertDispatch(groups[0].sites[0].param_name, slots, layout))
            nodes = []
            for x, route in zip(inputs, routes):
                anchor = max((x, route), key=position.get)
                with graph.inserting_after(last_placeholder if anchor.op == "placeholder" else anchor):
                    nodes.append(graph.call_module(target, (x, route)))
            for g in groups:
                self.observer_nodes[g.key] = nodes
        gm.recompile()

    def plan(self) -> StagePlan:
        """The stage subgraphs of this graph (one per level; a single one in one-shot mode). Built once.

        With the ``"block"`` order a block's own Linear ops may run in its stage (dense, for its calibration);
        the stage is run again after the block is pruned (:func:`swappass.graph.sequential.sparsify`).
        """
        if self._plan is None:
            gm = self.graph_module
            group_of = {g.key: g for g in self.groups}
            observer_levels = {n: group_of[k].level for k, ns in self.observer_nodes.items() for n in ns}
            op_levels = {op: g.level for g in self.groups for s in g.sites for op in s.ops}
            try:
                self._plan = plan_stages(gm, gm.graph, observer_levels, op_levels, sequential=self.order != "none",
                                         dense_within_level=self.order == "block")
            except SequentialOrderError as exc:
                raise SequentialOrderError(f"{exc}; the {self.order!r} calibration order does not fit this graph: "
                                           f"use sequential='level'") from exc
        return self._plan

    def remove_observers(self) -> None:
        """Erase the observer nodes and modules: the graph computes the model again, nothing else."""
        gm = self.graph_module
        for n in dict.fromkeys(n for nodes in self.observer_nodes.values() for n in nodes):
            gm.graph.erase_node(n)
        for name in [n for n, _ in gm.named_children() if n.startswith(OBSERVER_PREFIX)]:
            delattr(gm, name)
        self.observer_nodes.clear()
        self._plan = None
        gm.recompile()

    def levels(self) -> Mapping[str, int]:
        return {g.key: g.level for g in self.groups}
