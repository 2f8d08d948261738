"""The 1-swap iteration over a batch of rows (DESIGN.md §1): search, accept, update ``c`` incrementally, resync.

Each iteration applies, in every still-active row, the single best feasible swap (prune one kept weight, restore
one pruned weight) if it lowers the row error by more than ``rtol · L_row``; a row whose best swap does not stops
for good (it is 1-swap optimal). The correlation vector ``c = G((1 − m) ⊙ w)`` is updated incrementally (Eq. 4)
and re-derived exactly every ``resync_every`` iterations so that round-off cannot drift. Two loops run it: on the
host (:func:`refine_batch`, with the active rows gathered) and on the device (:func:`refine_batch_device`, for
searches that take an ``active`` row flag: no host synchronisation per iteration).
"""
from __future__ import annotations

import torch

from ..core.rowtiles import resync_rows, row_errors
from ..kernels.torch_search import SearchFn, SwapChoice

__all__ = ["swap_step", "refine_batch", "refine_batch_device"]


def swap_step(
    w: torch.Tensor,
    c: torch.Tensor,
    keep: torch.Tensor,
    loss: torch.Tensor,
    rows: torch.Tensor,
    G: torch.Tensor,
    search: SearchFn,
    rtol: float,
) -> tuple[torch.Tensor, SwapChoice]:
    """One iteration for ``rows`` (indices into the batch): each applies its best swap if ``ΔL < −rtol·L_row``.

    ``w, c, keep`` (R, d), ``loss`` (R,): updated in place (``keep``, ``c`` by Eq. 4, ``loss``). Returns the rows
    that swapped and their swaps.
    """
    choice = search(w[rows], c[rows], keep[rows])
    ok = choice.delta < -rtol * loss[rows]
    rows, u, p = rows[ok], choice.u[ok], choice.p[ok]
    if rows.numel():
        keep[rows, u] = False
        keep[rows, p] = True
        wa = w[rows]
        c[rows] += wa.gather(1, u[:, None]) * G[u] - wa.gather(1, p[:, None]) * G[p]
        loss[rows] += choice.delta[ok]
    return rows, SwapChoice(choice.delta[ok], u, p)


def refine_batch(
    w: torch.Tensor,
    keep: torch.Tensor,
    G: torch.Tensor,
    search: SearchFn,
    max_iters: int,
    rtol: float,
    resync_every: int,
    residual: torch.Tensor | None = None,
    terms: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, int]:
    """Refine the rows ``w`` (R, d) with mask ``keep`` (R, d, modified in place). Returns (swaps (R,), iters).

    ``residual`` (R, d): the rows' error offset (:func:`swappass.core.rowtiles.row_errors`), None: mask only.
    ``terms``: ``(c, loss)`` of ``keep`` as :func:`swappass.core.rowtiles.row_errors` gives them (the caller
    computed them already; both are then updated in place), else they are computed here. A search with a
    ``refine_batch`` method (a kernel backend's fused loop, tested against this one) runs it.
    """
    fused = getattr(search, "refine_batch", None)
    if fused is not None:
        return fused(w, keep, G, max_iters, rtol, resync_every, residual=residual, terms=terms)
    R = w.shape[0]
    c, loss = row_errors(w, keep, G, residual=residual) if terms is None else terms
    swaps = torch.zeros(R, dtype=torch.long, device=w.device)
    active = torch.arange(R, device=w.device)
    it = 0
    while it < max_iters and active.numel() > 0:
        it += 1
        active, _ = swap_step(w, c, keep, loss, active, G, search, rtol)
        if active.numel() == 0:
            break
        swaps[active] += 1
        if resync_every and it % resync_every == 0:
            resync_rows(w, keep, G, c, loss, active, residual=residual)
    return swaps, it


def refine_batch_device(
    w: torch.Tensor,
    keep: torch.Tensor,
    G: torch.Tensor,
    search: SearchFn,
    max_iters: int,
    rtol: float,
    resync_every: int,
    check_every: int = 8,
    residual: torch.Tensor | None = None,
    terms: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, int]:
    """Same iteration as :func:`refine_batch`, kept on the device: no host synchronisation per iteration.

    All rows stay in place; ``search`` skips inactive rows. The host checks for convergence every
    ``check_every`` iterations only. ``residual``, ``terms``: as for :func:`refine_batch`.
    """
    R = w.shape[0]
    rows = torch.arange(R, device=w.device)
    swaps = torch.zeros(R, dtype=torch.long, device=w.device)
    active = torch.ones(R, dtype=torch.bool, device=w.device)
    last = torch.zeros((), dtype=torch.long, device=w.device)
    c, loss = row_errors(w, keep, G, residual=residual) if terms is None else terms
    for it in range(1, max_iters + 1):
        choice = search(w, c, keep, active=active)
        ok = active & (choice.delta < -rtol * loss)
        u, p = choice.u, choice.p
        keep[rows, u] = keep[rows, u] & ~ok
        keep[rows, p] = keep[rows, p] | ok
        okw = ok.to(w.dtype)[:, None]
        c += okw * (w.gather(1, u[:, None]) * G[u] - w.gather(1, p[:, None]) * G[p])
        loss += torch.where(ok, choice.delta, torch.zeros_like(choice.delta))
        swaps += ok
        active = ok
        last = torch.where(ok.any(), it, last)
        if resync_every and it % resync_every == 0:
            c, loss = row_errors(w, keep, G, residual=residual)
        if it % check_every == 0 and not bool(active.any()):
            break
    return swaps, min(max_iters, int(last) + 1) if max_iters else 0
