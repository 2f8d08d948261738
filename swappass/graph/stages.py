"""Sequential calibration schedule: dependency levels of the sites and per-level stage subgraphs.

**Levels.** The level of a Gram group is the longest path, counted in active sites, from the model inputs to
its input: 0 for groups no active site feeds, ``1 + max`` over the levels of the active sites upstream
otherwise. In a LLaMA block: q/k/v → o_proj → gate/up → down_proj are four consecutive levels.

**Stages.** Level ``k`` is calibrated by stage ``k``: the nodes needed to compute the inputs of the level-k
observers that were not computed before. A site's own Linear node is placed after the level that prunes it, so
everything downstream of a site sees its pruned weight. Every node runs once, in the latest stage that can
hold it (this keeps the values alive across stage boundaries few), and only nodes that lead to an observer
run at all (``lm_head`` and the logits never do). Each stage is an ``fx.GraphModule``
``stage(*boundary_inputs) -> boundary_outputs``; per calibration sample, only the values that cross a stage
boundary are cached, so the whole calibration costs one pass over the model in total, however deep it is.

**vmap regions.** ``torch.export`` records a ``torch.vmap`` call (Hugging Face builds some attention masks with
one, e.g. Gemma3's bidirectional image-token mask) as a region between ``_vmap_increment_nesting`` and
``_vmap_decrement_nesting`` whose nodes only work under that nesting. Such a region runs whole or not at all, in
one stage: if any of its nodes is needed, all are, and they share the stage of the latest one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch.fx as fx
from torch import nn

from ..core.errors import InputError

__all__ = ["SequentialOrderError", "assign_levels", "Stage", "StagePlan", "plan_stages"]


class SequentialOrderError(InputError):
    """A weight is used at several depths of the graph, so sequential calibration has no order for it."""


def assign_levels(
    graph: fx.Graph, site_inputs: Mapping[str, Iterable[fx.Node]], site_ops: Mapping[str, Iterable[fx.Node]]
) -> dict[str, int]:
    """Level of every group: ``{group key: level}``.

    Args:
        site_inputs: group key -> the graph values the group's observer reads (for expert groups also the
            routing tensor: the experts of a block come after a pruned router).
        site_ops: group key -> the Linear nodes of the group's (active) sites; one node may belong to several
            groups (the experts of one fused matmul).
    """
    op_groups: dict[fx.Node, list[str]] = {}
    for key, ops in site_ops.items():
        for op in dict.fromkeys(ops):
            op_groups.setdefault(op, []).append(key)
    inputs_of = {key: list(nodes) for key, nodes in site_inputs.items()}
    depth: dict[fx.Node, int] = {}  # highest level of an active site at or upstream of the node; -1: none
    level: dict[str, int] = {}
    for node in graph.nodes:
        d = max((depth[a] for a in node.all_input_nodes), default=-1)
        for key in op_groups.get(node, ()):
            if key not in level:
                pending = [x for x in inputs_of[key] if x not in depth]
                if pending:
                    raise SequentialOrderError(
                        f"{key}: the weight is applied at several depths of the graph (its input {pending[0].name} "
                        f"is computed after an earlier use of the weight), so it has no place in a sequential "
                        f"order; pass sequential=False"
                    )
                level[key] = 1 + max(depth[x] for x in inputs_of[key])
            d = max(d, level[key])
        depth[node] = d
    for key in site_inputs:
        level.setdefault(key, 1 + max(depth.get(x, -1) for x in inputs_of[key]))
    return level


@dataclass
class Stage:
    """One stage subgraph: reads ``inputs`` from a sample's cache, writes ``outputs``, then drops ``drops``."""

    index: int
    module: fx.GraphModule
    inputs: list[str]
    outputs: list[str]
    drops: list[str]
    nodes: int = 0

    def run(self, cache: dict[str, Any], drop: bool = True) -> None:
        """Compute the stage from ``cache`` and store its outputs there; ``drop``: then forget the values no later
        stage reads (False when the stage will run again, as in the ``"block"`` calibration order)."""
        out = self.module(*[cache[name] for name in self.inputs])
        for name, value in zip(self.outputs, out):
            cache[name] = value
        if drop:
            for name in self.drops:
                cache.pop(name, None)


@dataclass
class StagePlan:
    """The stages of one captured graph; ``placeholders`` are the graph inputs the stages read."""

    stages: list[Stage]
    placeholders: list[str] = field(default_factory=list)

    def initial_cache(self, flat_inputs: Mapping[str, Any]) -> dict[str, Any]:
        return {name: flat_inputs[name] for name in self.placeholders}


_VMAP_ENTER = "_vmap_increment_nesting"
_VMAP_EXIT = "_vmap_decrement_nesting"


def _vmap_regions(graph: fx.Graph) -> list[list[fx.Node]]:
    """The outermost vmap regions of ``graph``: every node from an increment of the vmap nesting to its
    decrement, in graph order (inner regions are part of their outer one)."""
    regions, depth, current = [], 0, []
    for node in graph.nodes:
        name = getattr(node.target, "__name__", "") if node.op == "call_function" else ""
        if name == _VMAP_ENTER:
            depth += 1
        if depth:
            current.append(node)
        if name == _VMAP_EXIT and depth:
            depth -= 1
            if depth == 0:
                regions.append(current)
                current = []
    return regions


def _needed(graph: fx.Graph, roots: Iterable[fx.Node], regions: list[list[fx.Node]] = ()) -> set[fx.Node]:
    region_of = {n: i for i, region in enumerate(regions) for n in region}
    seen: set[fx.Node] = set()
    stack = list(roots)
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        stack.extend(a for a in n.all_input_nodes if a.op != "get_attr")
        if n in region_of:  # a vmap region runs whole
            stack.extend(regions[region_of.pop(n)])
    return seen


def plan_stages(
    root: nn.Module,
    graph: fx.Graph,
    observer_levels: Mapping[fx.Node, int],
    site_op_levels: Mapping[fx.Node, int],
    sequential: bool = True,
    dense_within_level: bool = False,
) -> StagePlan:
    """Split ``graph`` into one stage per level (a single stage when ``sequential`` is False).

    Args:
        root: the module owning the graph (parameters and observers are shared with it, not copied).
        observer_levels: observer ``call_module`` node -> level of its group.
        site_op_levels: Linear node of an active site -> level of its group (ignored when not sequential).
        dense_within_level: a site's Linear op may run in its own level's stage (before it is pruned) instead of
            only after it; the caller re-runs the stage after pruning (the ``"block"`` order).

    Raises :class:`SequentialOrderError` if an observer reads a value its level's stage cannot compute.
    """
    regions = _vmap_regions(graph)
    needed = _needed(graph, observer_levels, regions)
    order = [n for n in graph.nodes if n in needed]
    placeholders = [n for n in order if n.op == "placeholder"]
    body = [n for n in order if n.op != "placeholder"]
    n_stages = (max(observer_levels.values(), default=0) + 1) if sequential else 1

    earliest: dict[fx.Node, int] = {p: -1 for p in placeholders}
    for n in body:
        e = max((earliest[a] for a in n.all_input_nodes if a in needed), default=0)
        if sequential and n in site_op_levels:
            e = max(e, site_op_levels[n] + (0 if dense_within_level else 1))
        if n in observer_levels:
            lvl = observer_levels[n] if sequential else 0
            if e > lvl:
                raise SequentialOrderError(
                    f"observer {n.name} at level {lvl} reads a value only available at stage {e}")
            e = lvl
        earliest[n] = max(e, 0)
    stage: dict[fx.Node, int] = {p: -1 for p in placeholders}
    for n in reversed(body):
        if n in observer_levels:
            stage[n] = earliest[n]
            continue
        users = [stage[u] for u in n.users if u in needed]
        stage[n] = max(earliest[n], min(users, default=earliest[n]))
    for region in (r for r in regions if r[0] in needed):
        _one_stage(region, stage, earliest, needed)
    last_use = {n: max((stage[u] for u in n.users if u in needed), default=stage[n]) for n in order}

    stages = []
    for k in range(n_stages):
        members = [n for n in body if stage[n] == k]
        member_set = set(members)
        inputs = list(dict.fromkeys(
            a for n in members for a in n.all_input_nodes if a in needed and stage[a] < k
        ))
        outputs = [n for n in members if last_use[n] > k]
        drops = [n.name for n in order if stage[n] < k and last_use[n] == k]
        stages.append(Stage(k, _stage_module(root, members, inputs, outputs, member_set), [a.name for a in inputs],
                            [n.name for n in outputs], drops, len(members)))
    return StagePlan(stages, [p.name for p in placeholders])


def _one_stage(region: list[fx.Node], stage: dict[fx.Node, int], earliest: dict[fx.Node, int],
               needed: set[fx.Node]) -> None:
    """Put a vmap region in one stage: the earliest that every member can run in (no later than any user)."""
    k = max(earliest[n] for n in region)
    members = set(region)
    users = [stage[u] for n in region for u in n.users if u in needed and u not in members]
    if users and min(users) < k:
        raise AssertionError(f"vmap region at {region[0].name} feeds stage {min(users)} but needs stage {k}")
    for n in region:
        stage[n] = k


def _stage_module(
    root: nn.Module, members: list[fx.Node], inputs: list[fx.Node], outputs: list[fx.Node], member_set: set[fx.Node]
) -> fx.GraphModule:
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {a: g.placeholder(a.name) for a in inputs}

    def arg(a: fx.Node) -> fx.Node:
        if a not in env:
            if a.op != "get_attr":
                raise AssertionError(f"stage input {a.name} is neither cached nor an attribute")
            env[a] = g.get_attr(a.target)
        return env[a]

    for n in members:
        env[n] = g.node_copy(n, arg)
    g.output(tuple(env[n] for n in outputs))
    return fx.GraphModule(root, g)
