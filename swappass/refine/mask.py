"""``refine_mask``: the one entry point of the 1-swap refinement, for every pattern (DESIGN.md §3)."""
from __future__ import annotations

import torch

from ..core.errors import InputError
from ..core.patterns import PatternLike, UnstructuredSparsity, parse_pattern
from .result import RefineResult
from .rows import refine_rows
from .unstructured import refine_unstructured

__all__ = ["refine_mask"]


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
    target: torch.Tensor | None = None,
) -> RefineResult:
    """Refine a feasible ``mask`` of ``W`` (d_out × d_in) with exact best 1-swaps chosen from ``G`` (d_in × d_in).

    Args:
        mask: bool warm-start mask, True = keep; must satisfy ``pattern``.
        pattern: per-row (``"0.6"``, ``"row:0.6"``) or N:M (``"2:4"``); swaps stay inside M-blocks for N:M
            (:func:`swappass.refine.rows.refine_rows`). An unstructured budget (``"unstructured:0.6"``) is
            refined by :func:`swappass.refine.unstructured.refine_unstructured` (intra-row swaps and cross-row
            moves; ``batch_rows`` and ``group`` do not apply there).
        max_iters: iteration cap per row (the paper's default is 100); 0 returns the warm start.
        rtol: a swap is taken only if ``ΔL < −rtol · L_row``; default 1e-6 (float32) or 1e-12 (float64).
        resync_every: re-derive ``c`` and the row errors exactly every this many iterations.
        batch_rows: rows refined together; default adapts to the memory available on ``device``. Rounded up to
            a multiple of the row tile (:func:`swappass.core.rowtiles.row_tile`); the result does not depend on it.
        device: where the search runs (default: W's device). dtype: float32 (default) or float64.
        backend: ``"auto"`` (fastest available), ``"torch"`` (plain) or a name from
            :func:`swappass.kernels.available_backends`.
        group: a ``torch.distributed`` process group (e.g. ``torch.distributed.group.WORLD``) whose ranks all
            call this with the same arguments: each refines a contiguous slice of the rows and every rank gets
            the whole result, bit for bit the single-process one (see :mod:`swappass.refine.distributed`).
            ``None`` (default): all rows in this process. Unstructured budgets are not split (every rank refines
            all).
        target: the weights (d_out × d_in) whose outputs the layer should reproduce, when ``W`` holds other
            values (e.g. refitted ones on the kept entries): the error minimised is then
            ``(target − M ⊙ W)ᵀ G (target − M ⊙ W)`` per row, and a swap restores an entry at its value in W.
            ``None`` (default): ``target = W``, the mask-only error. Per-row and N:M patterns only.

    Returns a :class:`RefineResult`; the mask is on W's device. Deterministic for fixed inputs and settings.
    """
    pattern = parse_pattern(pattern)
    if isinstance(pattern, UnstructuredSparsity):
        if target is not None:
            raise InputError(f"{name}: a target (refitted weights) is supported for per-row and N:M patterns, "
                             f"not for the layer budget {pattern}")
        return refine_unstructured(
            W, G, mask, pattern, max_iters, rtol=rtol, resync_every=resync_every, device=device, dtype=dtype,
            backend=backend, name=name,
        )
    return refine_rows(
        W, G, mask, pattern, max_iters, rtol=rtol, resync_every=resync_every, batch_rows=batch_rows, device=device,
        dtype=dtype, backend=backend, name=name, group=group, target=target,
    )
