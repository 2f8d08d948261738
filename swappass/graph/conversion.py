"""``convert``: choose the masks of every observed group and write the pruned weights into the model.

Each Gram group's statistics go to :func:`swappass.methods.prune_step.prune_weights` (warm start, refinement,
optional refit); the result is checked against its pattern and mask (:func:`swappass.core.masks.check_pruned_weight`)
before it is written into the user's own parameters in place (the model object needs no swappass to run
afterwards) and into the group's report rows; then the group's statistics are freed. A group whose calibration
inputs cannot inform a mask (all zero, or collinear) gets a :class:`~swappass.core.errors.CalibrationWarning` and a
note in its report rows.

An expert that no calibration token reached has no statistics: it keeps the magnitude mask of the pattern (no
refinement, no refit; its losses are 0 on the empty calibration set) and its report row says so. Any other
group without calibration data is an error.
"""
from __future__ import annotations

import time
import warnings
from typing import Sequence

import torch
from tqdm.auto import tqdm

from ..core.errors import CalibrationWarning, InputError, NoCalibrationDataError
from ..core.gram import gram_degeneracy
from ..core.masks import check_pruned_weight, weight_key
from ..core.patterns import SparsityPattern
from ..methods.options import check_prune_options
from ..methods.prune_step import prune_weights
from .prepared import PreparedModel
from .report import SparsifyReport
from .sites import GramGroup, Site

__all__ = ["convert", "convert_groups", "write_back"]


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
    refit_rounds: int = 1,
) -> SparsifyReport:
    """Prune every observed group not pruned yet, write the weights into the model, remove the observers.

    ``warm_start`` / ``refine`` / ``refit`` / ``max_iters`` / ``group`` / ``refit_rounds`` as in
    :func:`swappass.sparsify`
    (``refine=None``: the one given to :func:`swappass.prepare`). Returns the report (``prepared.report``).
    Raises :class:`~swappass.core.errors.NoCalibrationDataError` if some group saw no calibration data.
    """
    t0 = time.perf_counter()
    refine = prepared.refine if refine is None else refine
    prepared.refit = check_prune_options(prepared.pattern, warm_start, refine, refit, max_iters, refit_rounds)
    prepared.refine, prepared.refit_rounds = refine, refit_rounds
    todo = [g for g in prepared.groups if g.key not in prepared.converted]
    if refine == "dsnot":
        _check_channel_stats(prepared, todo)
    convert_groups(prepared, todo, warm_start, max_iters, backend, device, progress, desc="prune",
                   process_group=group)
    prepared.remove_observers()
    prepared.report.seconds += time.perf_counter() - t0
    return prepared.report


def _check_channel_stats(prepared: PreparedModel, groups: Sequence[GramGroup]) -> None:
    missing = [g.key for g in groups if prepared.observers[g.key].tokens
               and "channel_stats" not in prepared.observers[g.key].statistics()]
    if missing:
        raise InputError(
            f"refine='dsnot' needs DSnoT's per-channel statistics, which were not collected for {missing[0]}"
            f"{f' and {len(missing) - 1} more groups' if len(missing) > 1 else ''}: pass refine='dsnot' to prepare() "
            f"(or an observer whose statistics() include 'channel_stats')"
        )


def convert_groups(
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
    """Prune ``groups`` from their observers' statistics, write them back, fill their report rows, free them."""
    bar = tqdm(total=sum(len(g.sites) for g in groups), desc=desc, unit="site", leave=False, disable=not progress)
    for group in groups:
        obs = prepared.observers[group.key]
        on = device if device is not None else group.sites[0].weight.device
        if obs.tokens == 0 and group.expert is None:
            raise NoCalibrationDataError(
                f"{group.key}: no calibration data reached these sites; call the prepared model on calibration "
                f"inputs before convert"
            )
        degenerate = None
        if obs.tokens == 0:
            results, used = _unrouted_expert(group, prepared, on), "magnitude"
            stats = {"tokens": 0}
        else:
            stats, used = obs.statistics(), warm_start
            degenerate = gram_degeneracy(stats["G"])
            if degenerate is not None:
                warnings.warn(f"swappass: {group.key}: {degenerate}; check the calibration data", CalibrationWarning,
                              stacklevel=2)
            results = prune_weights(
                [s.user_weight() for s in group.sites], stats["G"], prepared.pattern,
                warm_start=warm_start, refine=prepared.refine, refit=prepared.refit, max_iters=max_iters,
                backend=backend, device=on, statistics=stats, name=group.key, names=group.names,
                group=process_group, refit_rounds=prepared.refit_rounds,
            )
        for site, res in zip(group.sites, results):
            stored = write_back(site, res.mask, res.weight, prepared.pattern)
            row = prepared.row(site.name)
            row.record(res, used, int(stats["tokens"]), stored)
            if degenerate is not None:
                row.reason = "; ".join(filter(None, (row.reason, f"warning: {degenerate.split(': ')[0]}")))
            prepared.report.settings.setdefault("backend", res.info.get("backend"))
            bar.update(1)
        obs.release()
        prepared.converted.add(group.key)
    bar.close()


UNROUTED_NOTE = "no calibration token was routed to this expert: magnitude mask, not refined"


def _unrouted_expert(group: GramGroup, prepared: PreparedModel, device) -> list:
    """Magnitude masks (no refinement, no refit) for the sites of an expert that saw no token."""
    G = torch.zeros(group.d_in, group.d_in, dtype=torch.float32, device=device)
    results = prune_weights([s.user_weight() for s in group.sites], G, prepared.pattern, warm_start="magnitude",
                            refine="none", refit=False, max_iters=0, device=device, name=group.key,
                            names=group.names)
    for res in results:
        res.note = UNROUTED_NOTE
    return results


@torch.no_grad()
def write_back(site: Site, mask: torch.Tensor, weight: torch.Tensor | None,
               pattern: SparsityPattern | str | None = None) -> torch.Tensor:
    """Write the pruned weight into the user's parameter in place (for an expert site: into its slice of the
    fused parameter); returns the mask as stored (bool, shaped like :meth:`Site.stored`).

    ``mask`` (and ``weight``, the refitted values, or None for mask only) are ``d_out × d_in``. With ``pattern``,
    the mask (and the refitted weight) are checked first (:func:`swappass.core.masks.check_pruned_weight`, raising
    :class:`~swappass.core.errors.PatternViolationError`): nothing is written when they do not hold.
    """
    param = site.stored()
    stored_mask = (mask.T if site.transposed else mask).to(param.device)
    new = None
    if weight is not None:
        new = (weight.T if site.transposed else weight).to(device=param.device, dtype=param.dtype)
        new = new.masked_fill(~stored_mask, 0)
    if pattern is not None:
        check_pruned_weight(new, stored_mask, pattern, weight_key(site.param_name, site.expert), site.transposed)
    if new is None:
        param.masked_fill_(~stored_mask, 0)
    else:
        param.copy_(new)
    return stored_mask
