"""Swaps that know about the refit: refit and 1-swap refinement alternated for a few rounds.

Swaps-then-refit chooses the mask for the *mask-only* error and re-solves the kept weights once, at the end. With
``rounds = R > 1``, after the first swaps the kept weights are refitted, and the mask is refined again for the
error the layer has *with those refitted values* (``refine_mask(V, G, M, target=W)``: ``(w − m ⊙ v)ᵀ G (w −
m ⊙ v)`` per row, a restored weight coming back at its value in ``v``), R − 1 times; the caller refits once more
on the final mask. Each refit lowers the error of the kept support (``refit_weights``) and each swap round lowers
it further for fixed values, so the error of the written weights never exceeds that of swaps-then-refit's first
refit — whether the last refit then ends lower is what ``tools/bench_quality.py``'s ``refit-rounds`` rows
measure.
"""
from __future__ import annotations

import torch

from ..core.patterns import SparsityPattern
from ..refine.mask import refine_mask
from ..refine.result import RefineResult
from .refit import refit_weights

__all__ = ["swaps_between_refits"]


def swaps_between_refits(
    W: torch.Tensor,
    G: torch.Tensor,
    first: RefineResult,
    pattern: SparsityPattern,
    rounds: int,
    max_iters: int,
    damping: float,
    *,
    backend: str = "auto",
    name: str = "layer",
    group: torch.distributed.ProcessGroup | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Rounds 2..``rounds`` after the first swap refinement ``first`` of ``W`` (d_out × d_in, independent rows).

    Returns the final mask (bool, True = keep), the swaps per row over all rounds (the first included) and the
    iterations of the longest round. The caller refits the weights on the returned mask.
    """
    mask, swaps, iters = first.mask, first.swaps.clone(), first.iters
    for _ in range(rounds - 1):
        values = refit_weights(W, G, mask, damping=damping, name=name).weight
        values = torch.where(mask, values, W)  # pruned entries come back at their original value
        res = refine_mask(values, G, mask, pattern, max_iters, backend=backend, name=name, group=group, target=W)
        mask, iters = res.mask, max(iters, res.iters)
        swaps += res.swaps
        if int(res.swaps.sum()) == 0:
            break  # nothing changed: the next refit would give the same weights
    return mask, swaps, iters
