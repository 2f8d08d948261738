"""Layer errors: the per-row pruning error of a mask, the error of new weights, and their layer totals.

For ``W`` (``d_out × d_in``), the Gram matrix ``G`` (``d_in × d_in``) of the layer's inputs and a mask (True =
keep), row ``i``'s error is ``eᵢᵀ G eᵢ`` with ``eᵢ = (1 − mᵢ) ⊙ wᵢ`` (:func:`layer_loss`); for new weights ``W'``
it is ``(wᵢ − w'ᵢ)ᵀ G (wᵢ − w'ᵢ)`` (:func:`reconstruction_loss`). Both equal ``‖W X − W' X‖²`` row by row.
"""
from __future__ import annotations

import torch

from .errors import InputError
from .rowtiles import row_errors
from .validate import check_layer
from .workspace import work_dtype

__all__ = ["layer_loss", "reconstruction_loss", "relative_reduction", "RowLossTotals"]


def relative_reduction(before: float, after: float) -> float:
    """``(before − after) / before``: the share of an error removed (0 when there was no error)."""
    return 0.0 if before <= 0 else (before - after) / before


class RowLossTotals:
    """Layer totals of the per-row errors ``loss_before`` / ``loss_after`` (each ``(d_out,)``) of a result."""

    loss_before: torch.Tensor
    loss_after: torch.Tensor

    @property
    def total_before(self) -> float:
        return float(self.loss_before.double().sum())

    @property
    def total_after(self) -> float:
        return float(self.loss_after.double().sum())

    @property
    def relative_reduction(self) -> float:
        """``(total_before − total_after) / total_before`` over the whole layer (0 when it had no error)."""
        return relative_reduction(self.total_before, self.total_after)


def layer_loss(
    W: torch.Tensor, G: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Per-row pruning error ``((1 − m) ⊙ w)ᵀ G ((1 − m) ⊙ w)``, shape (d_out,). ``mask``: True = keep.

    Computed in row tiles (:mod:`swappass.core.rowtiles`): a row's value does not depend on the other rows.
    """
    check_layer(W, G, mask)
    dt = work_dtype(W, G, dtype=dtype)
    return row_errors(W.to(dt), mask.to(W.device), G.to(device=W.device, dtype=dt))[1]


def reconstruction_loss(
    W: torch.Tensor, G: torch.Tensor, W_new: torch.Tensor, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Per-row output error ``(w − w')ᵀ G (w − w')`` of new weights ``W_new``, shape (d_out,).

    ``W``, ``W_new``: ``d_out × d_in``; ``G``: ``d_in × d_in``. With ``W_new = W ⊙ mask`` this is
    :func:`layer_loss`.
    """
    check_layer(W, G)
    if tuple(W_new.shape) != tuple(W.shape):
        raise InputError(f"new weights have shape {tuple(W_new.shape)}, W has {tuple(W.shape)}")
    dt = work_dtype(W, G, dtype=dtype)
    E = W.to(dt) - W_new.to(device=W.device, dtype=dt)
    return ((E @ G.to(device=W.device, dtype=dt)) * E).sum(dim=1)
