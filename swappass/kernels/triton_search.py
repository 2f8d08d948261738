"""Fused Triton kernels for the exact best-1-swap search (CUDA; also runs under ``TRITON_INTERPRET=1``).

Per-row patterns (:func:`row_search`): the grid is (row block, u-tile). A program holds ``BR`` rows × ``BU``
candidate prunes ``u`` and streams the restore candidates ``p`` in tiles of ``BP``: each G tile
``G[u-tile, p-tile]`` is loaded once and reused by all ``BR`` rows, scores
``b_p + (−2 w_u G_up) w_p`` live only in registers, and a running per-(row, u) minimum remembers the first
p-tile that reached it. After the sweep, ``a_u`` is added, the row's best ``u`` in the tile is taken (lowest
index on ties) and its best ``p`` is recovered by re-evaluating that one p-tile. A tiny torch reduction over
u-tiles then gives, per row, the minimum with ties to the lowest u, then the lowest p — the contract of
:func:`swappass.kernels.torch_search.search_rows_torch`.

N:M patterns (:func:`nm_search`): each program takes ``BR`` rows × ``BB`` blocks and evaluates every in-block
pair ``(i, j)`` of the ``M × M`` block, in (block, i, j) order, i.e. lowest u, then lowest p on ties.

Rows can be passed in any order with an ``active`` flag: rows sorted active-first let programs whose first row
is inactive exit at once, so converged rows cost nothing in later iterations (no host synchronisation needed).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .torch_search import SwapChoice, swap_terms

__all__ = ["row_search", "nm_search", "search_inputs", "DEFAULT_ROW_CONFIG"]

INF = tl.constexpr(float("inf"))  # kernels may only read constexpr globals


@triton.jit
def _finish_rows(W, B, G, OUT_VAL, OUT_U, OUT_P, best, best_p0, a_u, v_u, rows, row_ok, row_off, pid_u, D, n_utiles,
                 BU: tl.constexpr, BP: tl.constexpr):
    """Add a_u, pick each row's best u of the tile, recover its p by re-evaluating its best p-tile, store."""
    total = best + a_u
    val, iu = tl.min(total, axis=1, return_indices=True, return_indices_tie_break_left=True)
    pick = tl.arange(0, BU)[None, :] == iu[:, None]
    u_best = pid_u * BU + iu
    v_best = tl.sum(tl.where(pick, v_u, 0.0), axis=1)
    p0_best = tl.sum(tl.where(pick, best_p0, 0), axis=1)
    ps = p0_best[:, None] + tl.arange(0, BP)[None, :]
    rp_mask = row_ok[:, None] & (ps < D)
    w_p = tl.load(W + row_off[:, None] + ps, mask=rp_mask, other=0.0)
    b_p = tl.load(B + row_off[:, None] + ps, mask=rp_mask, other=INF)
    g = tl.load(G + u_best.to(tl.int64)[:, None] * D + ps, mask=rp_mask & (u_best < D)[:, None], other=0.0)
    s = (g * v_best[:, None]) * w_p + b_p
    _, ip = tl.min(s, axis=1, return_indices=True, return_indices_tie_break_left=True)
    out = rows.to(tl.int64) * n_utiles + pid_u
    tl.store(OUT_VAL + out, val, mask=row_ok)
    tl.store(OUT_U + out, u_best, mask=row_ok)
    tl.store(OUT_P + out, p0_best + ip, mask=row_ok)


@triton.jit
def _row_search_kernel(
    W, A, B, G, ORDER, ACTIVE, OUT_VAL, OUT_U, OUT_P,
    R, D, n_utiles,
    BR: tl.constexpr, BU: tl.constexpr, BP: tl.constexpr,
):
    pid_r = tl.program_id(0)
    pid_u = tl.program_id(1)
    slots = pid_r * BR + tl.arange(0, BR)
    slot_ok = slots < R
    rows = tl.load(ORDER + slots, mask=slot_ok, other=0)
    first_active = tl.load(ACTIVE + tl.load(ORDER + pid_r * BR))
    if first_active != 0:  # rows are sorted active-first: an inactive first row means the block is done
        row_ok = slot_ok & (tl.load(ACTIVE + rows, mask=slot_ok, other=0) != 0)
        row_off = rows.to(tl.int64) * D
        us = pid_u * BU + tl.arange(0, BU)
        u_ok = us < D
        ru_mask = row_ok[:, None] & u_ok[None, :]
        a_u = tl.load(A + row_off[:, None] + us[None, :], mask=ru_mask, other=INF)
        v_u = -2.0 * tl.load(W + row_off[:, None] + us[None, :], mask=ru_mask, other=0.0)
        g_row = us.to(tl.int64) * D
        best = tl.full([BR, BU], INF, tl.float32)
        best_p0 = tl.zeros([BR, BU], tl.int32)
        for p0 in range(0, D, BP):
            ps = p0 + tl.arange(0, BP)
            p_ok = ps < D
            rp_mask = row_ok[:, None] & p_ok[None, :]
            w_p = tl.load(W + row_off[:, None] + ps[None, :], mask=rp_mask, other=0.0)
            b_p = tl.load(B + row_off[:, None] + ps[None, :], mask=rp_mask, other=INF)
            g = tl.load(G + g_row[:, None] + ps[None, :], mask=u_ok[:, None] & p_ok[None, :], other=0.0)
            s = (g[None, :, :] * v_u[:, :, None]) * w_p[:, None, :] + b_p[:, None, :]
            m = tl.min(s, axis=2)
            better = m < best
            best = tl.where(better, m, best)
            best_p0 = tl.where(better, p0, best_p0)
        _finish_rows(W, B, G, OUT_VAL, OUT_U, OUT_P, best, best_p0, a_u, v_u, rows, row_ok, row_off, pid_u, D, n_utiles, BU, BP)


@triton.jit
def _nm_search_kernel(
    W, A, B, GB, ACTIVE, OUT_VAL, OUT_IDX,
    R, D, n_chunks,
    M: tl.constexpr, BR: tl.constexpr, BB: tl.constexpr,
):
    pid_r = tl.program_id(0)
    pid_c = tl.program_id(1)
    rows = pid_r * BR + tl.arange(0, BR)
    row_ok = (rows < R) & (tl.load(ACTIVE + rows, mask=rows < R, other=0) != 0)
    row_off = rows.to(tl.int64) * D
    q = tl.arange(0, BB * M * M)  # flattened (block, i, j)
    blk = pid_c * BB + q // (M * M)
    i = (q // M) % M
    j = q % M
    u = blk * M + i
    p = blk * M + j
    q_ok = u < D
    mask = row_ok[:, None] & q_ok[None, :]
    g = tl.load(GB + blk.to(tl.int64) * (M * M) + i * M + j, mask=q_ok, other=0.0)
    w_u = tl.load(W + row_off[:, None] + u[None, :], mask=mask, other=0.0)
    w_p = tl.load(W + row_off[:, None] + p[None, :], mask=mask, other=0.0)
    a_u = tl.load(A + row_off[:, None] + u[None, :], mask=mask, other=INF)
    b_p = tl.load(B + row_off[:, None] + p[None, :], mask=mask, other=INF)
    s = (g[None, :] * (-2.0 * w_u)) * w_p + b_p + a_u
    val, idx = tl.min(s, axis=1, return_indices=True, return_indices_tie_break_left=True)
    out = rows.to(tl.int64) * n_chunks + pid_c
    tl.store(OUT_VAL + out, val, mask=rows < R)
    tl.store(OUT_IDX + out, (pid_c * BB * M * M + idx).to(tl.int64), mask=rows < R)


DEFAULT_ROW_CONFIG = (16, 32, 16, 8)


def search_inputs(
    w: torch.Tensor, c: torch.Tensor, keep: torch.Tensor, gdiag: torch.Tensor, active: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What both GPU kernels read: float32 contiguous ``w`` and one-sided terms ``a``, ``b`` (R, d), and the
    ``active`` row flag as int8 (all rows when None)."""
    w = w.contiguous().float()
    a, b = swap_terms(w, c.float(), keep, gdiag)
    if active is None:
        active = torch.ones(w.shape[0], dtype=torch.bool, device=w.device)
    return w, a.contiguous(), b.contiguous(), active.to(torch.int8).contiguous()


def row_search(
    w: torch.Tensor,
    c: torch.Tensor,
    keep: torch.Tensor,
    G: torch.Tensor,
    gdiag: torch.Tensor,
    active: torch.Tensor | None = None,
    config: tuple[int, int, int, int] = DEFAULT_ROW_CONFIG,
) -> SwapChoice:
    """Best swap per row over kept × pruned pairs (float32). Inactive rows return ``+inf``.

    ``config`` = (BR rows, BU prune candidates, BP restore candidates per tile, num_warps).
    """
    R, D = w.shape
    BR, BU, BP, warps = config
    w, a, b, act = search_inputs(w, c, keep, gdiag, active)
    order = torch.argsort(act == 0, stable=True).to(torch.int32)  # active rows first, no host sync
    n_utiles = triton.cdiv(D, BU)
    val = torch.full((R, n_utiles), float("inf"), dtype=torch.float32, device=w.device)
    us = torch.zeros((R, n_utiles), dtype=torch.int32, device=w.device)
    ps = torch.zeros((R, n_utiles), dtype=torch.int32, device=w.device)
    grid = (triton.cdiv(R, BR), n_utiles)
    _row_search_kernel[grid](
        w, a, b, G.contiguous().float(), order, act, val, us, ps, R, D, n_utiles,
        BR=BR, BU=BU, BP=BP, num_warps=warps,
    )
    best, tile = val.min(dim=1)  # first minimal u-tile: lowest u on ties
    return SwapChoice(best, us.gather(1, tile[:, None])[:, 0].long(), ps.gather(1, tile[:, None])[:, 0].long())


def nm_search(
    w: torch.Tensor,
    c: torch.Tensor,
    keep: torch.Tensor,
    G_blocks: torch.Tensor,
    gdiag: torch.Tensor,
    m: int,
    active: torch.Tensor | None = None,
    BR: int = 16,
    BB: int | None = None,
) -> SwapChoice:
    """Best in-block swap per row for N:M patterns; ``G_blocks``: (d/m, m, m). Inactive rows return ``+inf``."""
    R, D = w.shape
    if m & (m - 1):
        raise ValueError(f"the Triton N:M kernel needs M to be a power of two, got M = {m}")
    BB = BB or max(1, 256 // (m * m))
    w, a, b, act = search_inputs(w, c, keep, gdiag, active)
    n_chunks = triton.cdiv(D // m, BB)
    val = torch.full((R, n_chunks), float("inf"), dtype=torch.float32, device=w.device)
    idx = torch.zeros((R, n_chunks), dtype=torch.int64, device=w.device)
    grid = (triton.cdiv(R, BR), n_chunks)
    _nm_search_kernel[grid](w, a, b, G_blocks.contiguous().float(), act, val, idx, R, D, n_chunks, M=m, BR=BR, BB=BB)
    best, chunk = val.min(dim=1)
    flat = idx.gather(1, chunk[:, None])[:, 0]
    blk = flat // (m * m)
    return SwapChoice(best, blk * m + (flat // m) % m, blk * m + flat % m)
