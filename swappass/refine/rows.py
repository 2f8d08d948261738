"""SparseSwaps with a fixed kept count per row (per-row and N:M patterns): every row refined on its own.

:func:`refine_rows` settles a plan (work device and dtype, backend, rows per batch from the free memory), refines
the rows batch by batch with :mod:`swappass.refine.loop` (or a kernel's fused loop) and recomputes both per-row
errors exactly. Rows are independent and every product runs in row tiles (:mod:`swappass.core.rowtiles`), so the
result does not depend on the batching, nor on how :mod:`swappass.refine.distributed` splits rows over ranks.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..core.errors import InputError
from ..core.patterns import NMSparsity, RowSparsity, SparsityPattern
from ..core.rowtiles import row_errors, row_tile
from ..core.workspace import memory_plan
from ..kernels.registry import make_search, resolve_backend
from ..kernels.torch_search import SearchFn
from . import distributed
from .inputs import work_setup
from .loop import refine_batch, refine_batch_device
from .result import RefineResult

__all__ = ["refine_rows"]


class _Plan(NamedTuple):
    """What refine_rows settles before refining: G as the search uses it (work device and dtype, symmetric),
    the swap tolerance, the backend and its search, the row tile and the rows per batch (whole tiles)."""

    Gw: torch.Tensor
    rtol: float
    backend: str
    search: SearchFn
    tile: int
    rows_per_batch: int


@torch.no_grad()
def refine_rows(
    W: torch.Tensor,
    G: torch.Tensor,
    mask: torch.Tensor,
    pattern: SparsityPattern,
    max_iters: int = 100,
    *,
    rtol: float | None = None,
    resync_every: int = 16,
    batch_rows: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    backend: str = "auto",
    name: str = "layer",
    group: torch.distributed.ProcessGroup | None = None,
    target: torch.Tensor | None = None,
) -> RefineResult:
    """Refine a feasible ``mask`` of ``W`` (d_out × d_in) under a per-row or N:M ``pattern``, row by row.

    The arguments are those of :func:`swappass.refine_mask` (which calls this for those patterns). With a
    ``group``, ``info["distributed"]`` holds the world size, this rank, its rows ``(lo, hi)``, the seconds it
    spent on them and the seconds it then waited for the others and the gather.
    """

    def prepare() -> _Plan:
        return _prepare(W, G, mask, pattern, max_iters, rtol, batch_rows, device, dtype, backend, name, group)

    # with a group, a failure on any rank (bad input, out of memory) makes every rank raise instead of waiting
    plan = prepare() if group is None else distributed.run_agreed(prepare, group, what=f"{name}: preparing")

    residual = None if target is None else _residual(W, target, plan.Gw, name)

    def work(r0: int, r1: int) -> tuple[list[torch.Tensor], int]:
        part = None if residual is None else residual[r0:r1]
        return _refine_slice(W, plan, mask, r0, r1, max_iters, resync_every, part)

    dev, d_out = plan.Gw.device, W.shape[0]
    info = {"backend": plan.backend, "dtype": str(plan.Gw.dtype).replace("torch.", ""),
            "batch_rows": plan.rows_per_batch}
    if group is None:
        (out_mask, swaps, loss_before, loss_after), iters = work(0, d_out)
    else:
        pieces, iters, info["distributed"] = distributed.map_rows(
            d_out, plan.tile, group, work, inputs={"W": W, "G": G, "mask": mask}, name=name
        )
        out_mask, swaps, loss_before, loss_after = (t.to(dev) for t in pieces)
    target = W.device
    return RefineResult(
        mask=out_mask.to(target),
        loss_before=loss_before.to(target),
        loss_after=loss_after.to(target),
        swaps=swaps.to(target),
        iters=iters,
        info=info,
    )


def _prepare(
    W: torch.Tensor,
    G: torch.Tensor,
    mask: torch.Tensor,
    pattern: SparsityPattern,
    max_iters: int,
    rtol: float | None,
    batch_rows: int | None,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
    backend: str,
    name: str,
    group: torch.distributed.ProcessGroup | None,
) -> _Plan:
    """Check refine_rows' inputs and set up its search (for this rank's rows when ``group`` is given)."""
    if not isinstance(pattern, (RowSparsity, NMSparsity)):
        raise InputError(f"{name}: refine_rows handles per-row and N:M patterns, got {pattern}")
    setup = work_setup(W, G, mask, pattern, max_iters, rtol=rtol, device=device, dtype=dtype, name=name)
    backend = resolve_backend(backend, setup.device)
    d_out, d_in = W.shape
    tile = row_tile(setup.device)
    lo, hi = (0, d_out) if group is None else distributed.row_range(d_out, tile, group)
    rows_per_batch, chunk_elems = memory_plan(max(1, hi - lo), d_in, setup.device, setup.G.element_size(),
                                              batch_rows)
    rows_per_batch = -(-rows_per_batch // tile) * tile  # batches start on row tiles
    search = make_search(backend, pattern, setup.G, chunk_elems)
    return _Plan(setup.G, setup.rtol, backend, search, tile, rows_per_batch)


def _residual(W: torch.Tensor, target: torch.Tensor, Gw: torch.Tensor, name: str) -> torch.Tensor:
    """``target − W`` on the work device and dtype (checked: the shape of W, finite)."""
    if not isinstance(target, torch.Tensor) or tuple(target.shape) != tuple(W.shape):
        shape = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
        raise InputError(f"{name}: target must have W's shape {tuple(W.shape)}, got {shape}")
    if not bool(torch.isfinite(target).all()):
        raise InputError(f"{name}: target has a non-finite value")
    return target.to(device=Gw.device, dtype=Gw.dtype) - W.to(device=Gw.device, dtype=Gw.dtype)


def _refine_slice(
    W: torch.Tensor, plan: _Plan, mask: torch.Tensor, r0: int, r1: int, max_iters: int, resync_every: int,
    residual: torch.Tensor | None = None,
) -> tuple[list[torch.Tensor], int]:
    """Refine rows ``r0:r1`` of ``W`` (``r0`` on a row tile) in batches of ``plan.rows_per_batch`` rows.

    Returns ``[mask, swaps, loss_before, loss_after]`` of those rows (on the plan's device, losses in its dtype)
    and the iterations run (0 for no rows).
    """
    Gw = plan.Gw
    w_all = W[r0:r1].to(device=Gw.device, dtype=Gw.dtype)
    warm = mask[r0:r1].to(Gw.device)
    out_mask = warm.clone()
    swaps = torch.zeros(r1 - r0, dtype=torch.long, device=Gw.device)
    iters = 0
    fused = getattr(plan.search, "refine_batch", None) is not None  # a backend's own loop (refine_batch runs it)
    loop = refine_batch_device if getattr(plan.search, "supports_active", False) and not fused else refine_batch
    # The warm start's terms, once: the batches start on row tiles, so their slices are what each batch's loop
    # would compute for itself (row_errors), bit for bit; the loops update c in place.
    c_all, loss_before = row_errors(w_all, warm, Gw, residual=residual)
    for b0 in range(0, r1 - r0, plan.rows_per_batch):
        b1 = min(r1 - r0, b0 + plan.rows_per_batch)
        keep = out_mask[b0:b1].clone()
        part = None if residual is None else residual[b0:b1]
        terms = (c_all[b0:b1], loss_before[b0:b1].clone())
        s, it = loop(w_all[b0:b1], keep, Gw, plan.search, max_iters, plan.rtol, resync_every, residual=part,
                     terms=terms)
        out_mask[b0:b1], swaps[b0:b1] = keep, s
        iters = max(iters, it)
    del c_all
    loss_after = row_errors(w_all, out_mask, Gw, residual=residual)[1]
    return [out_mask, swaps, loss_before, loss_after], iters
