"""Finished levels of the sequential pass as :class:`LevelState` objects: what a checkpoint holds and resume restores.

:func:`swappass.sparsify` hands every finished level to its ``checkpoint`` callback (:func:`level_state`) and,
given ``resume=[states …]``, restores those levels instead of pruning them again (:func:`restore_level`), after
checking that they belong to this model and site selection (:func:`check_resume`): the same sites level by level,
and, where the state records one, the same dense weights (``model_sha256``, :func:`swappass.core.digests.state_sha256`).
A restored mask that breaks its pattern is refused before anything is written.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch

from ..core.errors import InputError, PatternViolationError
from ..core.masks import check_pruned_weight, weight_key
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
    applied. ``settings``: report settings known at that point. ``model_sha256``: the digest of the dense model's
    state the pass started from (None: not recorded).
    """

    level: int
    rows: list[SiteReport]
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    model_sha256: str | None = None


def level_state(
    prepared: PreparedModel, level: int, groups: Sequence[GramGroup], before: dict[str, torch.Tensor],
    model_sha256: str | None = None,
) -> LevelState:
    """The state of a level just pruned; ``before``: the sites' stored weights before pruning (by site name);
    ``model_sha256``: the dense model's state digest, recorded in the state."""
    rows, weights = [], {}
    for s in (s for g in groups for s in g.sites):
        row = prepared.row(s.name)
        rows.append(replace(row))
        masked = before[s.name].masked_fill(~row.mask().to(before[s.name].device), 0)
        if not torch.equal(s.stored(), masked):  # the method changed kept values: keep them
            weights[weight_key(s.param_name, s.expert)] = s.stored().to("cpu", copy=True)
    settings = {k: v for k, v in prepared.report.settings.items() if k == "backend"}
    return LevelState(level, rows, weights, settings, model_sha256)


def check_resume(resume: Sequence[LevelState], groups: Sequence[GramGroup], n_levels: int,
                 model_sha256: str | None = None) -> None:
    """Raise :class:`InputError` unless ``resume`` holds the first levels of this model's ``groups`` and, where a
    state and ``model_sha256`` (this model's dense state digest) both record one, the same dense weights."""
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
    for k, state in enumerate(resume):
        if model_sha256 is not None and state.model_sha256 is not None and state.model_sha256 != model_sha256:
            raise InputError(
                f"resume state {k} was made from a model with other weights (state SHA-256 {state.model_sha256[:12]}… "
                f"there, {model_sha256[:12]}… here): resume with the same dense model the interrupted run started "
                f"from (not one pruned already, e.g. by the interrupted call itself)"
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
            saved_weight = state.weights.get(key)
            if saved_weight is not None:
                saved_weight = saved_weight.to(device=param.device, dtype=param.dtype)
            try:
                check_pruned_weight(saved_weight, mask.to(param.device), row.pattern or prepared.pattern, key,
                                    site.transposed)
            except PatternViolationError as exc:
                raise InputError(f"resume state of level {state.level} is damaged or from another run: {exc}") from exc
            if saved_weight is not None:
                param.copy_(saved_weight)
            else:
                param.masked_fill_(~mask.to(param.device), 0)
            prepared.row(site.name).assign(row)
        prepared.observers[group.key].release()
        prepared.converted.add(group.key)
    for key, value in state.settings.items():
        prepared.report.settings.setdefault(key, value)
