"""The plain reference implementation of SparseSwaps, one row at a time (readable, float64-capable).

Nothing here is fast; everything faster in swappass is tested against it. ``c`` is recomputed from scratch
every iteration (no incremental updates) and every pair's ΔL is materialised as a full ``d × d`` matrix.
"""
from __future__ import annotations

import torch

from ..core.loss import layer_loss
from ..core.patterns import NMSparsity, PatternLike, SparsityPattern, parse_pattern
from .result import RefineResult

__all__ = ["swap_deltas", "best_swap_reference", "refine_row_reference", "refine_mask_reference"]


def _feasible_pairs(keep: torch.Tensor, pattern: SparsityPattern) -> torch.Tensor:
    """(d × d) bool: may kept ``u`` (row index) be swapped with pruned ``p`` (column index)?"""
    pairs = keep[:, None] & ~keep[None, :]
    if isinstance(pattern, NMSparsity):
        block = torch.arange(keep.numel(), device=keep.device) // pattern.m
        pairs &= block[:, None] == block[None, :]
    return pairs


def swap_deltas(w: torch.Tensor, G: torch.Tensor, keep: torch.Tensor, pattern: PatternLike = "0.5") -> torch.Tensor:
    """ΔL(u, p) of Eq. 3 for one row ``w`` (d,), as a ``d × d`` matrix; ``+inf`` for infeasible pairs."""
    pattern = parse_pattern(pattern)
    e = w * ~keep
    c = G @ e
    gd = G.diagonal()
    delta = (
        (2 * w * c + w * w * gd)[:, None]
        + (-2 * w * c + w * w * gd)[None, :]
        - 2 * w[:, None] * w[None, :] * G
    )
    return torch.where(_feasible_pairs(keep, pattern), delta, torch.full_like(delta, float("inf")))


def best_swap_reference(
    w: torch.Tensor, G: torch.Tensor, keep: torch.Tensor, pattern: PatternLike = "0.5"
) -> tuple[float, int, int]:
    """(ΔL, u, p) of the best feasible swap of one row; ties go to the lowest u, then the lowest p."""
    D = swap_deltas(w, G, keep, pattern)
    flat = int(torch.argmin(D.flatten()))  # argmin returns the first minimal index (row-major: u, then p)
    u, p = divmod(flat, D.shape[1])
    return float(D[u, p]), u, p


def refine_row_reference(
    w: torch.Tensor, G: torch.Tensor, keep: torch.Tensor, pattern: PatternLike, max_iters: int = 100, rtol: float = 1e-12
) -> tuple[torch.Tensor, int, int]:
    """Refine one row's mask; returns (new keep, swaps, searches). A swap is taken only if ΔL < −rtol · L_row."""
    pattern = parse_pattern(pattern)
    keep = keep.clone()
    swaps = searches = 0
    for _ in range(max_iters):
        searches += 1
        e = w * ~keep
        loss = float(e @ G @ e)
        delta, u, p = best_swap_reference(w, G, keep, pattern)
        if not delta < -rtol * loss:
            break
        keep[u], keep[p] = False, True
        swaps += 1
    return keep, swaps, searches


def refine_mask_reference(
    W: torch.Tensor, G: torch.Tensor, mask: torch.Tensor, pattern: PatternLike, max_iters: int = 100, rtol: float = 1e-12
) -> RefineResult:
    """Row-by-row reference of :func:`swappass.refine_mask` (use float64 inputs for exactness)."""
    pattern = parse_pattern(pattern)
    pattern.check_mask(mask)
    G = (G + G.T) / 2
    rows, swaps, searches = [], [], []
    for i in range(W.shape[0]):
        keep, s, n = refine_row_reference(W[i], G, mask[i], pattern, max_iters, rtol)
        rows.append(keep)
        swaps.append(s)
        searches.append(n)
    new_mask = torch.stack(rows)
    return RefineResult(
        mask=new_mask,
        loss_before=layer_loss(W, G, mask),
        loss_after=layer_loss(W, G, new_mask),
        swaps=torch.tensor(swaps),
        iters=max(searches, default=0),
    )
