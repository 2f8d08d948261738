"""Finished levels of the sequential pass as :class:`LevelState` objects: what a checkpoint holds and resume restores.

:func:`swappass.sparsify` hands every finished level to its ``checkpoint`` callback (:func:`level_state`) and,
given ``resume=[states …]``, restores those levels instead of pruning them again (:func:`restore_level`), after
checking that they belong to this model and site selection (:func:`check_resume`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch

from ..core.errors import InputError
from ..core.masks import weight_key
from .prepared import PreparedModel
from .report import SiteReport
from .sites import GramGroup

__all__ = ["LevelState", "level_state", "check_resume", "restore_level"]


@dataclass
class LevelState:
    """What one finished level of the sequential pass produced, enough to redo it without pruning again.

    ``rows``: the report rows of the level's sites (status, losses, masks). ``weights``: weight key (the
    parameter name, ``NAME[e]`` for one expert of a fused parameter) -> the stored tensor after pruning, only for
    sites whose kept values the method changed (refit); a site absent here is its original weight with the mask
    applied. ``settings``: report settings known at that point.
    """

    level: int
    rows: list[SiteReport]
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


def level_state(
    prepared: PreparedModel, level: int, groups: Sequence[GramGroup], before: dict[str, torch.Tensor]
) -> LevelState:
    """The state of a level just pruned; ``before``: the sites' stored weights before pruning (by site name)."""
    rows, weights = [], {}
    for s in (s for g in groups for s in g.sites):
        row = prepared.row(s.name)
        rows.append(replace(row))
        masked = before[s.name].masked_fill(~row.mask().to(before[s.name].device), 0)
        if not torch.equal(s.stored(), masked):  # the method changed kept values: keep them
            weights[weight_key(s.param_name, s.expert)] = s.stored().to("cpu", copy=True)
    settings = {k: v for k, v in prepared.report.settings.items() if k == "backend"}
    return LevelState(level, rows, weights, settings)


def check_resume(resume: Sequence[LevelState], groups: Sequence[GramGroup], n_levels: int) -> None:
    """Raise :class:`InputError` unless ``resume`` holds the first levels of this model's ``groups``."""
    if len(resume) > n_levels:
        raise InputError(f"resume holds {len(resume)} levels but the model has {n_levels}: it is from another model")
    for k, state in enumerate(resume):
        expected = [s.name for g in groups if g.level == k for s in g.sites]
        saved = [r.name for r in state.rows]
        if state.level != k or saved != expected:
            raise InputError(
                f"resume state {k} (level {state.level}: {saved[:3]}…) does not match level {k} of this model "
                f"({expected[:3]}…): it is from another model, pattern or site selection"
            )


@torch.no_grad()
def restore_level(prepared: PreparedModel, groups: Sequence[GramGroup], state: LevelState) -> None:
    """Write a finished level's weights and report rows back, as if it had just been pruned."""
    saved = {r.name: r for r in state.rows}
    for group in groups:
        for site in group.sites:
            row = saved[site.name]
            mask = row.mask()
            param, key = site.stored(), weight_key(site.param_name, site.expert)
            if mask is None or tuple(mask.shape) != tuple(param.shape):
                raise InputError(f"resume state for {site.name} has no mask of shape {tuple(param.shape)}")
            if key in state.weights:
                param.copy_(state.weights[key].to(device=param.device, dtype=param.dtype))
            else:
                param.masked_fill_(~mask.to(param.device), 0)
            prepared.row(site.name).assign(row)
        prepared.observers[group.key].release()
        prepared.converted.add(group.key)
    for key, value in state.settings.items():
        prepared.report.settings.setdefault(key, value)
