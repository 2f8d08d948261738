"""Dense row products whose values do not depend on which rows are computed together.

The refinement needs, per row, the correlation vector ``c = G((1 − m) ⊙ w)`` and the row error
``((1 − m) ⊙ w)ᵀ c``. Computed for a whole batch at once (``E @ G``), a row's values depend in the last bits on
how many rows share the call: BLAS and cuBLAS choose their kernels, blocking and split-K reductions from the
matrix shape (on this project's CPU, MKL gives a different ``c`` for a row computed alone than for the same row
among 200, and at d_in = 1536 for any count below ~100). Such bits can flip a near-tie between two swaps, so a
row's mask would depend on the batch size, on the set of rows still active, and on how rows are split across
processes (:mod:`swappass.refine.distributed`).

Here every product is computed in **row tiles**: fixed blocks of :func:`row_tile` consecutive rows counted from
row 0 of the layer, each block one fresh matmul. A row's values then depend only on its own tile's contents, so
any batching whose boundaries fall on tile boundaries (refine.py's batches, the ranks' row slices) gives the
same bits. The only assumption is that the same matmul on the same inputs gives the same result on the same
device type with the same settings (thread count, TF32 flag), which BLAS/cuBLAS guarantee run to run.
"""
from __future__ import annotations

from itertools import groupby

import torch

__all__ = ["ROW_TILES", "row_tile", "row_errors", "resync_rows"]

# Rows per tile by device type: large enough for an efficient matmul, small enough that refreshing the tiles of
# a few scattered active rows stays cheap. Part of the numerics: runs that must agree bit for bit use the same.
ROW_TILES = {"cpu": 64, "cuda": 128}
_DEFAULT_TILE = 128


def row_tile(device: torch.device | str) -> int:
    """Rows per tile on ``device`` (by device type)."""
    return ROW_TILES.get(torch.device(device).type, _DEFAULT_TILE)


def _tile_terms(
    w: torch.Tensor, keep: torch.Tensor, G: torch.Tensor, residual: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    e = w * ~keep  # a fresh contiguous tensor: same alignment and shape for the same tile in every run
    if residual is not None:
        e += residual
    c = e @ G
    return c, (e * c).sum(dim=1)


def row_errors(
    w: torch.Tensor, keep: torch.Tensor, G: torch.Tensor, tile: int | None = None,
    residual: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``c = e G`` (R × d) and the row errors ``eᵀ c`` (R,) of ``e = (1 − m) ⊙ w (+ residual)``, tile by tile.

    ``w``: (R, d) rows starting on a tile boundary of the layer; ``keep``: (R, d) bool, True = keep;
    ``G``: (d, d) symmetric. ``tile``: rows per tile (default :func:`row_tile` of w's device). ``residual``
    (R, d): an error the rows have whatever the mask (refitted weights ``w`` against the original ones: their
    difference), None for the mask-only error.
    """
    tile = tile or row_tile(w.device)
    R = w.shape[0]
    c = torch.empty_like(w)
    loss = torch.empty(R, dtype=w.dtype, device=w.device)
    for r0 in range(0, R, tile):
        part = None if residual is None else residual[r0 : r0 + tile]
        c[r0 : r0 + tile], loss[r0 : r0 + tile] = _tile_terms(w[r0 : r0 + tile], keep[r0 : r0 + tile], G, part)
    return c, loss


def resync_rows(
    w: torch.Tensor,
    keep: torch.Tensor,
    G: torch.Tensor,
    c: torch.Tensor,
    loss: torch.Tensor,
    rows: torch.Tensor,
    tile: int | None = None,
    residual: torch.Tensor | None = None,
) -> None:
    """Re-derive ``c`` and ``loss`` of ``rows`` (indices into the batch ``w``) exactly, in place.

    Every tile holding one of ``rows`` is recomputed whole (its other rows keep their values), so the result
    does not depend on which other rows are being re-derived. Same conventions as :func:`row_errors`.
    """
    if rows.numel() == 0:
        return
    tile = tile or row_tile(w.device)
    for t, members in groupby(sorted(rows.tolist()), key=lambda r: r // tile):
        r0 = t * tile
        r1 = min(w.shape[0], r0 + tile)
        ct, lt = _tile_terms(w[r0:r1], keep[r0:r1], G, None if residual is None else residual[r0:r1])
        local = [r - r0 for r in members]
        if len(local) == r1 - r0:
            c[r0:r1], loss[r0:r1] = ct, lt
        else:
            sel = torch.tensor(local, dtype=torch.long, device=w.device)
            c[r0 + sel], loss[r0 + sel] = ct[sel], lt[sel]
