"""Calibration orders of the sequential pass, and the decoder blocks the ``"block"`` order needs.

* ``"level"`` (swappass's own order): every Gram group is calibrated on inputs that already flow through every
  pruned site upstream of it, inside its block too (q/k/v → o_proj → gate/up → down_proj are four levels).
* ``"block"`` (Wanda's and SparseGPT's order): every site of a block is calibrated on the block's inputs from the
  pruned blocks before it, with the block itself still dense; then the whole block is pruned and its outputs are
  recomputed through the pruned weights for the next block.
* ``"none"``: one-shot, every site sees the dense model.

A **block** is found from the model's module tree and the graph, not from attribute names: it is the outermost
module above a site that is one of several modules of the same class in one container (``model.layers.3``,
``transformer.h.3``, ``encoder.layer.3``, ``decoder.block.3``). Sites outside such a repeated unit (a head, a
pooler) each form a block of their own. Blocks are ordered by the earliest dependency level of their sites.
"""
from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

from torch import nn

from ..core.errors import InputError
from .sites import GramGroup

__all__ = ["CALIBRATION_ORDERS", "calibration_order", "repeated_units", "block_of", "block_levels"]

CALIBRATION_ORDERS = ("level", "block", "none")


def calibration_order(sequential: bool | str) -> str:
    """``"level"``, ``"block"`` or ``"none"`` for the accepted spellings (``True`` = level, ``False`` = none)."""
    if sequential is True:
        return "level"
    if sequential is False:
        return "none"
    if sequential in CALIBRATION_ORDERS:
        return sequential
    raise InputError(
        f"unknown calibration order {sequential!r}; choose 'level' (every site through the pruned sites upstream, "
        f"default), 'block' (every site of a block on the block's inputs, Wanda's order) or 'none' (one-shot)"
    )


def repeated_units(model: nn.Module) -> set[str]:
    """Dotted names of the modules that are one of several children of the same class in one container."""
    units = set()
    for parent_name, parent in model.named_modules():
        children = list(parent.named_children())
        counts = Counter(type(child) for _, child in children)
        for name, child in children:
            if counts[type(child)] >= 2 and any(True for _ in child.parameters()):
                units.add(f"{parent_name}.{name}" if parent_name else name)
    return units


def block_of(module: str, units: set[str]) -> str | None:
    """The outermost repeated unit containing the module ``module`` (dotted path), or None."""
    parts = module.split(".") if module else []
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if prefix in units:
            return prefix
    return None


def block_levels(groups: Sequence[GramGroup], levels: Mapping[str, int], model: nn.Module) -> dict[str, int]:
    """Group key -> block index: every group of a block gets the block's index; blocks ordered by the smallest
    dependency level (``levels``, from :func:`swappass.graph.stages.assign_levels`) among their groups."""
    units = repeated_units(model)
    block: dict[str, str] = {}
    for g in groups:
        homes = {block_of(s.module, units) for s in g.sites}
        home = next(iter(homes)) if len(homes) == 1 else None
        block[g.key] = home if home is not None else f"<group {g.key}>"
    first: dict[str, int] = {}
    for g in groups:
        first[block[g.key]] = min(first.get(block[g.key], levels[g.key]), levels[g.key])
    order = sorted(first, key=lambda b: (first[b], min(i for i, g in enumerate(groups) if block[g.key] == b)))
    index = {b: i for i, b in enumerate(order)}
    return {g.key: index[block[g.key]] for g in groups}
