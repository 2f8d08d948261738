"""SparseSwaps: exact, optimal 1-swap refinement of a pruning mask, row by row (DESIGN.md §1).

Each iteration applies, in every still-active row, the single best feasible swap (prune one kept weight,
restore one pruned weight) if it lowers the row error by more than a tiny relative tolerance; a row whose best
swap does not stops for good (it is 1-swap optimal). The correlation vector ``c = G((1 − m) ⊙ w)`` is updated
incrementally (Eq. 4) and re-derived exactly every ``resync_every`` iterations so that round-off cannot drift.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import torch

from . import kernels
from .patterns import NMSparsity, PatternLike, RowSparsity, SparsityPattern, UnstructuredSparsity, parse_pattern
from .rowtiles import resync_rows, row_errors, row_tile
from .search import SwapChoice, nm_diag_blocks, search_nm_torch, search_rows_torch
from .validate import check_layer

__all__ = ["RefineResult", "refine_mask", "layer_loss"]



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


@dataclass
class RefineResult(RowLossTotals):
    """Outcome of :func:`refine_mask`.

    ``mask``: bool (d_out × d_in), True = keep. ``loss_before`` / ``loss_after``: per-row error (d_out,),
    recomputed exactly from the masks. ``swaps``: accepted swaps per row (d_out,). ``iters``: iterations run
    (the most any row needed, at most ``max_iters``).
    """

    mask: torch.Tensor
    loss_before: torch.Tensor
    loss_after: torch.Tensor
    swaps: torch.Tensor
    iters: int
    info: dict = field(default_factory=dict)


def _work_dtype(*tensors: torch.Tensor | None, dtype: torch.dtype | None = None) -> torch.dtype:
    if dtype is not None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"refinement dtype must be float32 or float64, got {dtype}")
        return dtype
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def layer_loss(
    W: torch.Tensor, G: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Per-row pruning error ``((1 − m) ⊙ w)ᵀ G ((1 − m) ⊙ w)``, shape (d_out,). ``mask``: True = keep.

    Computed in row tiles (:mod:`swappass.rowtiles`): a row's value does not depend on the other rows.
    """
    check_layer(W, G, mask)
    dt = _work_dtype(W, G, dtype=dtype)
    return row_errors(W.to(dt), mask.to(W.device), G.to(device=W.device, dtype=dt))[1]


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def _memory_plan(d_out: int, d_in: int, device: torch.device, itemsize: int, batch_rows: int | None) -> tuple[int, int]:
    """Rows per refinement batch and the score-chunk budget (elements) from the memory available now."""
    avail = _available_bytes(device)
    budget = max(64 << 20, min(avail // 4, (1 << 30) if device.type == "cpu" else (8 << 30)))
    chunk_elems = max(d_in * 8, budget // (3 * itemsize))
    if batch_rows is None:
        arrays = 4 if device.type == "cpu" else 3  # w, c, scratch (+ the CPU loop's bound state)
        per_row = d_in * (arrays * itemsize + 2)  # + mask
        batch_rows = max(1, min(d_out, budget // per_row))
    return int(batch_rows), int(chunk_elems)


def _resolve_backend(backend: str, device: torch.device) -> str:
    fast = kernels.available_backends(device)
    if backend == "auto":
        return fast[0] if fast else "torch"
    if backend != "torch" and backend not in fast:
        raise ValueError(
            f"unknown or unavailable refinement backend {backend!r} on {device}; choose 'auto', 'torch' or one of {fast}"
        )
    return backend


def _make_search(
    backend: str, pattern: SparsityPattern, G: torch.Tensor, chunk_elems: int
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], SwapChoice]:
    if backend != "torch":
        return kernels.make_search(backend, pattern, G)
    gdiag = G.diagonal().contiguous()
    if isinstance(pattern, NMSparsity):
        m = pattern.m
        blocks = nm_diag_blocks(G, m)
        return lambda w, c, keep: search_nm_torch(w, c, keep, blocks, gdiag, m, chunk_elems)
    return lambda w, c, keep: search_rows_torch(w, c, keep, G, gdiag, chunk_elems)


def _swap_step(
    w: torch.Tensor,
    c: torch.Tensor,
    keep: torch.Tensor,
    loss: torch.Tensor,
    rows: torch.Tensor,
    G: torch.Tensor,
    search: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], SwapChoice],
    rtol: float,
) -> tuple[torch.Tensor, SwapChoice]:
    """One iteration for ``rows`` (indices into the batch): each applies its best swap if ``ΔL < −rtol·L_row``.

    Updates ``keep``, ``c`` (Eq. 4) and ``loss`` in place. Returns the rows that swapped and their swaps.
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


def _resync(
    w: torch.Tensor, keep: torch.Tensor, G: torch.Tensor, c: torch.Tensor, loss: torch.Tensor, rows: torch.Tensor
) -> None:
    """Re-derive ``c`` and the row errors of ``rows`` exactly (no incremental drift), in row tiles."""
    resync_rows(w, keep, G, c, loss, rows)


def _refine_batch(
    w: torch.Tensor,
    keep: torch.Tensor,
    G: torch.Tensor,
    search: Callable[..., SwapChoice],
    max_iters: int,
    rtol: float,
    resync_every: int,
) -> tuple[torch.Tensor, int]:
    """Refine the rows ``w`` (R, d) with mask ``keep`` (R, d, modified in place). Returns (swaps, iters)."""
    fused = getattr(search, "refine_batch", None)
    if fused is not None:  # a kernel backend that runs this same loop itself (tested against it)
        return fused(w, keep, G, max_iters, rtol, resync_every)
    R = w.shape[0]
    c, loss = row_errors(w, keep, G)
    swaps = torch.zeros(R, dtype=torch.long, device=w.device)
    active = torch.arange(R, device=w.device)
    it = 0
    while it < max_iters and active.numel() > 0:
        it += 1
        active, _ = _swap_step(w, c, keep, loss, active, G, search, rtol)
        if active.numel() == 0:
            break
        swaps[active] += 1
        if resync_every and it % resync_every == 0:
            _resync(w, keep, G, c, loss, active)
    return swaps, it


def _refine_batch_device(
    w: torch.Tensor,
    keep: torch.Tensor,
    G: torch.Tensor,
    search: Callable[..., SwapChoice],
    max_iters: int,
    rtol: float,
    resync_every: int,
    check_every: int = 8,
) -> tuple[torch.Tensor, int]:
    """Same iteration as :func:`_refine_batch`, kept on the device: no host synchronisation per iteration.

    All rows stay in place; ``search`` skips inactive rows. The host checks for convergence every
    ``check_every`` iterations only.
    """
    R = w.shape[0]
    rows = torch.arange(R, device=w.device)
    c, loss = row_errors(w, keep, G)
    swaps = torch.zeros(R, dtype=torch.long, device=w.device)
    active = torch.ones(R, dtype=torch.bool, device=w.device)
    last = torch.zeros((), dtype=torch.long, device=w.device)
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
            c, loss = row_errors(w, keep, G)
        if it % check_every == 0 and not bool(active.any()):
            break
    return swaps, min(max_iters, int(last) + 1) if max_iters else 0


@torch.no_grad()
def refine_mask(
    W: torch.Tensor,
    G: torch.Tensor,
    mask: torch.Tensor,
    pattern: PatternLike,
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
) -> RefineResult:
    """Refine a feasible ``mask`` of ``W`` (d_out × d_in) with exact best 1-swaps chosen from ``G`` (d_in × d_in).

    Args:
        mask: bool warm-start mask, True = keep; must satisfy ``pattern``.
        pattern: per-row (``"0.6"``, ``"row:0.6"``) or N:M (``"2:4"``); swaps stay inside M-blocks for N:M.
            An unstructured budget (``"unstructured:0.6"``) is refined by
            :func:`swappass.unstructured.refine_unstructured` (intra-row swaps and cross-row moves; ``batch_rows``
            does not apply there).
        max_iters: iteration cap per row (the paper's default is 100); 0 returns the warm start.
        rtol: a swap is taken only if ``ΔL < −rtol · L_row``; default 1e-6 (float32) or 1e-12 (float64).
        resync_every: re-derive ``c`` and the row errors exactly every this many iterations.
        batch_rows: rows refined together; default adapts to the memory available on ``device``. Rounded up to
            a multiple of the row tile (:func:`swappass.rowtiles.row_tile`); the result does not depend on it.
        device: where the search runs (default: W's device). dtype: float32 (default) or float64.
        backend: ``"auto"`` (fastest available), ``"torch"`` (plain) or a name from
            :func:`swappass.kernels.available_backends`.
        group: a ``torch.distributed`` process group (e.g. ``torch.distributed.group.WORLD``) whose ranks all
            call this with the same arguments: each refines a contiguous slice of the rows and every rank gets
            the whole result, bit for bit the single-process one (see :mod:`swappass.distributed`). ``None``
            (default): all rows in this process. Unstructured budgets are not split (every rank refines all).

    Returns a :class:`RefineResult`; the mask is on W's device. Deterministic for fixed inputs and settings.
    With a group, ``info["distributed"]`` holds the world size, this rank, its rows ``(lo, hi)``, the seconds it
    spent on them and the seconds it then waited for the others and the gather.
    """
    pattern = parse_pattern(pattern)
    if isinstance(pattern, UnstructuredSparsity):
        from .unstructured import refine_unstructured

        return refine_unstructured(
            W, G, mask, pattern, max_iters, rtol=rtol, resync_every=resync_every, device=device, dtype=dtype,
            backend=backend, name=name,
        )

    def prepare() -> _Plan:
        return _prepare(W, G, mask, pattern, max_iters, rtol, batch_rows, device, dtype, backend, name, group)

    # with a group, a failure on any rank (bad input, out of memory) makes every rank raise instead of waiting
    plan = prepare() if group is None else _distributed().run_agreed(prepare, group, what=f"{name}: preparing")

    def work(r0: int, r1: int) -> tuple[list[torch.Tensor], int]:
        return _refine_rows(W, plan.Gw, mask, r0, r1, plan.search, plan.rows_per_batch, max_iters, plan.rtol,
                            resync_every)

    dev, d_out = plan.Gw.device, W.shape[0]
    info = {"backend": plan.backend, "dtype": str(plan.Gw.dtype).replace("torch.", ""),
            "batch_rows": plan.rows_per_batch}
    if group is None:
        (out_mask, swaps, loss_before, loss_after), iters = work(0, d_out)
    else:
        pieces, iters, info["distributed"] = _distributed().map_rows(
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


class _Plan(NamedTuple):
    """What refine_mask settles before refining: G as the search uses it (work device and dtype, symmetric),
    the swap tolerance, the backend and its search, the row tile and the rows per batch (whole tiles)."""

    Gw: torch.Tensor
    rtol: float
    backend: str
    search: Callable[..., SwapChoice]
    tile: int
    rows_per_batch: int


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
    """Check refine_mask's inputs and set up its search (for this rank's rows when ``group`` is given)."""
    if not isinstance(pattern, (RowSparsity, NMSparsity)):
        raise TypeError(f"{name}: refine_mask handles per-row, N:M and unstructured patterns, got {pattern}")
    check_layer(W, G, mask, pattern, name=name)
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 0:
        raise ValueError(f"{name}: max_iters must be a non-negative integer, got {max_iters!r}")
    dev = torch.device(device) if device is not None else W.device
    dt = _work_dtype(W, G, dtype=dtype)
    rtol = (1e-6 if dt == torch.float32 else 1e-12) if rtol is None else float(rtol)
    backend = _resolve_backend(backend, dev)

    Gw = G.to(device=dev, dtype=dt)
    Gw = (Gw + Gw.T) / 2  # exact symmetry: rows of G serve as its columns in the c update
    d_out, d_in = W.shape
    tile = row_tile(dev)
    lo, hi = (0, d_out) if group is None else _distributed().row_range(d_out, tile, group)
    rows_per_batch, chunk_elems = _memory_plan(max(1, hi - lo), d_in, dev, Gw.element_size(), batch_rows)
    rows_per_batch = -(-rows_per_batch // tile) * tile  # batches start on row tiles
    return _Plan(Gw, rtol, backend, _make_search(backend, pattern, Gw, chunk_elems), tile, rows_per_batch)


def _refine_rows(
    W: torch.Tensor,
    Gw: torch.Tensor,
    mask: torch.Tensor,
    r0: int,
    r1: int,
    search: Callable[..., SwapChoice],
    rows_per_batch: int,
    max_iters: int,
    rtol: float,
    resync_every: int,
) -> tuple[list[torch.Tensor], int]:
    """Refine rows ``r0:r1`` of ``W`` (``r0`` on a row tile) in batches of ``rows_per_batch`` rows.

    Returns ``[mask, swaps, loss_before, loss_after]`` of those rows (on Gw's device, losses in Gw's dtype)
    and the iterations run (0 for no rows).
    """
    dev, dt = Gw.device, Gw.dtype
    w_all = W[r0:r1].to(device=dev, dtype=dt)
    warm = mask[r0:r1].to(dev)
    out_mask = warm.clone()
    swaps = torch.zeros(r1 - r0, dtype=torch.long, device=dev)
    iters = 0
    loop = _refine_batch_device if getattr(search, "supports_active", False) else _refine_batch
    for b0 in range(0, r1 - r0, rows_per_batch):
        b1 = min(r1 - r0, b0 + rows_per_batch)
        keep = out_mask[b0:b1].clone()
        s, it = loop(w_all[b0:b1], keep, Gw, search, max_iters, rtol, resync_every)
        out_mask[b0:b1], swaps[b0:b1] = keep, s
        iters = max(iters, it)
    loss_before = row_errors(w_all, warm, Gw)[1]
    loss_after = row_errors(w_all, out_mask, Gw)[1]
    return [out_mask, swaps, loss_before, loss_after], iters


def _distributed():
    from . import distributed  # torch.distributed loads only when rows are split

    return distributed
