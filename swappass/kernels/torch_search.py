"""Best 1-swap search for a batch of rows: the plain, chunked torch implementation.

For one row ``w`` with mask ``keep`` (True = keep) and ``c = G((1 − m) ⊙ w)``, pruning the kept ``u`` and
restoring the pruned ``p`` changes the row error by (DESIGN.md §1, Eq. 3)

    ΔL(u, p) = a_u + b_p − 2 w_u w_p G_up,   a_u = w_u (2 c_u + w_u G_uu),   b_p = w_p (w_p G_pp − 2 c_p).

A search returns, per row, the smallest ΔL over the feasible pairs and its ``(u, p)``; ties go to the lowest
``u``, then the lowest ``p``. Infeasible rows (nothing kept or nothing pruned) return ``+inf``.
The fast kernels in :mod:`swappass.kernels` implement the same contract and are tested against this one.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from ..core.patterns import NMSparsity, SparsityPattern

__all__ = ["SwapChoice", "SearchFn", "swap_terms", "nm_diag_blocks", "search_rows_torch", "search_nm_torch",
           "make_torch_search", "DEFAULT_BUDGET_ELEMS"]

DEFAULT_BUDGET_ELEMS = 1 << 24  # score entries materialised at a time


class SwapChoice(NamedTuple):
    """Per-row best swap: ``delta`` (R,), ``u`` (R,) the kept index to prune, ``p`` (R,) the pruned to restore."""

    delta: torch.Tensor
    u: torch.Tensor
    p: torch.Tensor


SearchFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], SwapChoice]
"""``search(w, c, keep) -> SwapChoice`` over a fixed G: the contract of every backend."""


def swap_terms(w: torch.Tensor, c: torch.Tensor, keep: torch.Tensor, gdiag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One-sided terms ``a`` (prune u; +inf where u is pruned) and ``b`` (restore p; +inf where p is kept)."""
    inf = torch.tensor(float("inf"), dtype=w.dtype, device=w.device)
    wg = w * gdiag
    a = torch.where(keep, w * (2 * c + wg), inf)
    b = torch.where(keep, inf, w * (wg - 2 * c))
    return a, b


def nm_diag_blocks(G: torch.Tensor, m: int) -> torch.Tensor:
    """The ``d/m`` diagonal ``m × m`` blocks of G, shape ``(d/m, m, m)``."""
    nb = G.shape[0] // m
    return G.reshape(nb, m, nb, m).diagonal(dim1=0, dim2=2).permute(2, 0, 1).contiguous()


def _chunk_sizes(R: int, d: int, budget_elems: int) -> tuple[int, int]:
    """Rows per chunk and u-columns per chunk so that one score chunk has about ``budget_elems`` entries."""
    if d * d <= budget_elems:
        return max(1, min(R, budget_elems // (d * d))), d
    return 1, max(1, min(d, budget_elems // d))


def search_rows_torch(
    w: torch.Tensor,
    c: torch.Tensor,
    keep: torch.Tensor,
    G: torch.Tensor,
    gdiag: torch.Tensor,
    budget_elems: int = DEFAULT_BUDGET_ELEMS,
) -> SwapChoice:
    """Exhaustive search over kept × pruned pairs of each row (per-row patterns).

    ``w, c, keep``: (R, d); ``G``: (d, d) symmetric; ``gdiag``: (d,). Scores are materialised chunk by chunk,
    at most ``budget_elems`` at a time, never for the whole batch.
    """
    R, d = w.shape
    a, b = swap_terms(w, c, keep, gdiag)
    v = -2 * w
    best = torch.full((R,), float("inf"), dtype=w.dtype, device=w.device)
    best_u = torch.zeros(R, dtype=torch.long, device=w.device)
    best_p = torch.zeros(R, dtype=torch.long, device=w.device)
    rb, cu = _chunk_sizes(R, d, budget_elems)
    for r0 in range(0, R, rb):
        r1 = min(R, r0 + rb)
        for u0 in range(0, d, cu):
            u1 = min(d, u0 + cu)
            S = G[None, u0:u1, :] * w[r0:r1, None, :]
            S.mul_(v[r0:r1, u0:u1, None]).add_(b[r0:r1, None, :]).add_(a[r0:r1, u0:u1, None])
            val, idx = S.reshape(r1 - r0, -1).min(dim=1)
            better = val < best[r0:r1]  # strict: an earlier u chunk wins ties
            best[r0:r1] = torch.where(better, val, best[r0:r1])
            best_u[r0:r1] = torch.where(better, idx // d + u0, best_u[r0:r1])
            best_p[r0:r1] = torch.where(better, idx % d, best_p[r0:r1])
    return SwapChoice(best, best_u, best_p)


def search_nm_torch(
    w: torch.Tensor,
    c: torch.Tensor,
    keep: torch.Tensor,
    G_blocks: torch.Tensor,
    gdiag: torch.Tensor,
    m: int,
    budget_elems: int = DEFAULT_BUDGET_ELEMS,
) -> SwapChoice:
    """Search over pairs inside each M-block (N:M patterns). ``G_blocks``: (d/m, m, m) from :func:`nm_diag_blocks`."""
    R, d = w.shape
    nb = d // m
    a, b = swap_terms(w, c, keep, gdiag)
    best = torch.empty(R, dtype=w.dtype, device=w.device)
    best_idx = torch.empty(R, dtype=torch.long, device=w.device)
    rb = max(1, budget_elems // (d * m))
    for r0 in range(0, R, rb):
        r1 = min(R, r0 + rb)
        n = r1 - r0
        wb = w[r0:r1].reshape(n, nb, m)
        S = G_blocks[None] * wb[:, :, None, :]
        S.mul_((-2 * wb)[:, :, :, None])
        S.add_(b[r0:r1].reshape(n, nb, 1, m)).add_(a[r0:r1].reshape(n, nb, m, 1))
        best[r0:r1], best_idx[r0:r1] = S.reshape(n, -1).min(dim=1)
    blk = best_idx // (m * m)
    return SwapChoice(best, blk * m + (best_idx // m) % m, blk * m + best_idx % m)


def make_torch_search(pattern: SparsityPattern, G: torch.Tensor, budget_elems: int = DEFAULT_BUDGET_ELEMS) -> SearchFn:
    """The plain search over the symmetric ``G`` (``d × d``) for a per-row (or unstructured) or N:M pattern."""
    gdiag = G.diagonal().contiguous()
    if isinstance(pattern, NMSparsity):
        m = pattern.m
        blocks = nm_diag_blocks(G, m)
        return lambda w, c, keep: search_nm_torch(w, c, keep, blocks, gdiag, m, budget_elems)
    return lambda w, c, keep: search_rows_torch(w, c, keep, G, gdiag, budget_elems)
