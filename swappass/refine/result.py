"""The outcome of a mask refinement (SparseSwaps, cross-row moves, DSnoT): the mask, per-row errors, swaps."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.loss import RowLossTotals

__all__ = ["RefineResult"]


@dataclass
class RefineResult(RowLossTotals):
    """Outcome of :func:`swappass.refine_mask` (and the other refinements).

    ``mask``: bool (d_out × d_in), True = keep. ``loss_before`` / ``loss_after``: per-row error (d_out,),
    recomputed exactly from the masks. ``swaps``: accepted swaps per row (d_out,). ``iters``: iterations run
    (the most any row needed, at most ``max_iters``). ``info``: backend, dtype and what the method reports.
    """

    mask: torch.Tensor
    loss_before: torch.Tensor
    loss_after: torch.Tensor
    swaps: torch.Tensor
    iters: int
    info: dict = field(default_factory=dict)
