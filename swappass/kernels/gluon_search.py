"""Register-tiled swap search written in Gluon (Triton's explicit-layout dialect) for NVIDIA GPUs.

Same contract and outputs as :func:`swappass.kernels.triton_search.row_search`; the difference is the layout.
Each thread owns an ``RT × UT × BP`` block of (row, prune candidate u, restore candidate p) scores with the whole
p-extent in its registers, so the minimum over p needs no shuffles, every G value is reused by ``RT`` rows and
every ``w_p``/``b_p`` value by ``UT`` candidates straight from registers (the register tiling of an SGEMM, applied
to the three-operand score ``b_p + (−2 w_u G_up) w_p``). Plain Triton picks its own layout for such a 3-D
broadcast and spreads p over lanes, which costs shuffles on every tile.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from ..search import SwapChoice
from .triton_search import _prepare

__all__ = ["row_search_gluon", "DEFAULT_GLUON_CONFIG", "DEFAULT_ACC_CONFIG", "DEFAULT_T_CONFIG"]

INF = gl.constexpr(float("inf"))

# (RT, UT, BP, TR, TU, WR, WU): per-thread rows / candidates / p-extent, lanes over rows / candidates,
# warps over rows / candidates. Tile = (RT·TR·WR rows) × (UT·TU·WU candidates u), streamed over p.
DEFAULT_GLUON_CONFIG = (4, 4, 8, 8, 4, 2, 2)
DEFAULT_ACC_CONFIG = (4, 4, 4, 8, 4, 2, 2)
DEFAULT_T_CONFIG = (4, 8, 8, 8, 4, 1, 4)  # best of tools/tune_triton.py on an H100 (docs/BENCHMARKS.md)
DEFAULT_T_PREFETCH = True
if os.environ.get("SWAPPASS_TILE_T_CONFIG"):  # "RT,UT,BP,TR,TU,WR,WU[,prefetch]" from a tile sweep on another card
    _cfg = [int(x) for x in os.environ["SWAPPASS_TILE_T_CONFIG"].split(",")]
    DEFAULT_T_CONFIG, DEFAULT_T_PREFETCH = tuple(_cfg[:7]), bool(_cfg[7]) if len(_cfg) > 7 else False


@gluon.jit
def _row_search_gluon_kernel(
    W, A, B, G, ORDER, ACTIVE, OUT_VAL, OUT_U, OUT_P,
    R, D, n_utiles,
    RT: gl.constexpr, UT: gl.constexpr, BP: gl.constexpr,
    TR: gl.constexpr, TU: gl.constexpr, WR: gl.constexpr, WU: gl.constexpr, EVEN_D: gl.constexpr,
):
    BR: gl.constexpr = RT * TR * WR
    BU: gl.constexpr = UT * TU * WU
    L3: gl.constexpr = gl.BlockedLayout([RT, UT, BP], [TR, TU, 1], [WR, WU, 1], [2, 1, 0])
    L_ru: gl.constexpr = gl.SliceLayout(2, L3)  # [BR, BU]
    L_rp: gl.constexpr = gl.SliceLayout(1, L3)  # [BR, BP]
    L_up: gl.constexpr = gl.SliceLayout(0, L3)  # [BU, BP]

    pid_r = gl.program_id(0)
    pid_u = gl.program_id(1)
    first_active = gl.load(ACTIVE + gl.load(ORDER + pid_r * BR))
    if first_active != 0:
        # row indices in the two row-carrying layouts
        slots_ru = pid_r * BR + gl.arange(0, BR, layout=gl.SliceLayout(1, L_ru))
        slots_rp = pid_r * BR + gl.arange(0, BR, layout=gl.SliceLayout(1, L_rp))
        rows_ru = gl.load(ORDER + slots_ru, mask=slots_ru < R, other=gl.load(ORDER))
        rows_rp = gl.load(ORDER + slots_rp, mask=slots_rp < R, other=gl.load(ORDER))
        ok_ru = (slots_ru < R) & (gl.load(ACTIVE + rows_ru, mask=slots_ru < R, other=0) != 0)
        off_ru = rows_ru.to(gl.int64) * D
        off_rp = rows_rp.to(gl.int64) * D

        us_ru = pid_u * BU + gl.arange(0, BU, layout=gl.SliceLayout(0, L_ru))
        us_up = pid_u * BU + gl.arange(0, BU, layout=gl.SliceLayout(1, L_up))
        # out-of-range rows/candidates read valid memory (row ORDER[0], column D-1) and are masked at the end
        ru_off = gl.expand_dims(off_ru, 1) + gl.expand_dims(gl.minimum(us_ru, D - 1), 0)
        ru_mask = gl.expand_dims(ok_ru, 1) & gl.expand_dims(us_ru < D, 0)
        v3 = gl.expand_dims(-2.0 * gl.load(W + ru_off), 2)

        p_rp = gl.arange(0, BP, layout=gl.SliceLayout(0, L_rp))
        p_up = gl.arange(0, BP, layout=gl.SliceLayout(0, L_up))
        rp_base = gl.expand_dims(off_rp, 1) + gl.expand_dims(p_rp, 0)
        up_base = gl.expand_dims(gl.minimum(us_up, D - 1).to(gl.int64) * D, 1) + gl.expand_dims(p_up, 0)

        best = gl.full([BR, BU], float("inf"), gl.float32, layout=L_ru)
        best_p0 = gl.full([BR, BU], 0, gl.int32, layout=L_ru)
        for p0 in range(0, D, BP):
            if EVEN_D:
                w_p = gl.load(W + rp_base + p0)
                b_p = gl.load(B + rp_base + p0)
                g = gl.load(G + up_base + p0)
            else:
                w_p = gl.load(W + rp_base + p0, mask=gl.expand_dims(p0 + p_rp < D, 0), other=0.0)
                b_p = gl.load(B + rp_base + p0, mask=gl.expand_dims(p0 + p_rp < D, 0), other=INF)
                g = gl.load(G + up_base + p0, mask=gl.expand_dims(p0 + p_up < D, 0), other=0.0)
            s = (gl.expand_dims(g, 0) * v3) * gl.expand_dims(w_p, 1) + gl.expand_dims(b_p, 1)
            m = gl.min(s, axis=2)
            better = m < best
            best = gl.where(better, m, best)
            best_p0 = gl.where(better, p0, best_p0)
        v_u = gl.sum(v3, axis=2)

        a_u = gl.load(A + ru_off, mask=ru_mask, other=INF)
        total = best + a_u
        val = gl.min(total, axis=1)
        cols = gl.expand_dims(gl.arange(0, BU, layout=gl.SliceLayout(0, L_ru)), 0)
        iu = gl.min(gl.where(total == gl.expand_dims(val, 1), cols, BU), axis=1)  # lowest u among the minima
        pick = cols == gl.expand_dims(iu, 1)
        v_best = gl.sum(gl.where(pick, v_u, 0.0), axis=1)
        p0_best = gl.sum(gl.where(pick, best_p0, 0), axis=1)
        u_best = pid_u * BU + iu

        # recover p: re-evaluate the winning u's best p-tile in the [rows, p] layout
        L_fin: gl.constexpr = gl.BlockedLayout([1, BP], [32, 1], [WR * WU, 1], [1, 0])
        rows_f = gl.convert_layout(rows_ru, gl.SliceLayout(1, L_fin))
        ok_f = gl.convert_layout(ok_ru, gl.SliceLayout(1, L_fin))
        u_f = gl.convert_layout(u_best, gl.SliceLayout(1, L_fin))
        v_f = gl.convert_layout(v_best, gl.SliceLayout(1, L_fin))
        p0_f = gl.convert_layout(p0_best, gl.SliceLayout(1, L_fin))
        ps = gl.expand_dims(p0_f, 1) + gl.expand_dims(gl.arange(0, BP, layout=gl.SliceLayout(0, L_fin)), 0)
        fmask = gl.expand_dims(ok_f, 1) & (ps < D)
        roff = gl.expand_dims(rows_f.to(gl.int64) * D, 1)
        w_p = gl.load(W + roff + ps, mask=fmask, other=0.0)
        b_p = gl.load(B + roff + ps, mask=fmask, other=INF)
        g = gl.load(G + gl.expand_dims(u_f.to(gl.int64) * D, 1) + ps, mask=fmask & gl.expand_dims(u_f < D, 1), other=0.0)
        s = (g * gl.expand_dims(v_f, 1)) * w_p + b_p
        s_min = gl.min(s, axis=1)
        pcols = gl.expand_dims(gl.arange(0, BP, layout=gl.SliceLayout(0, L_fin)), 0)
        ip = gl.min(gl.where(s == gl.expand_dims(s_min, 1), pcols, BP), axis=1)  # lowest p among the minima

        val_f = gl.convert_layout(val, gl.SliceLayout(1, L_fin))
        out = rows_f.to(gl.int64) * n_utiles + pid_u
        gl.store(OUT_VAL + out, val_f, mask=ok_f)
        gl.store(OUT_U + out, u_f, mask=ok_f)
        gl.store(OUT_P + out, p0_f + ip, mask=ok_f)


@gluon.jit
def _row_search_gluon_acc_kernel(
    W, A, B, G, ORDER, ACTIVE, OUT_VAL, OUT_U, OUT_M,
    R, D, n_utiles,
    RT: gl.constexpr, UT: gl.constexpr, BP: gl.constexpr,
    TR: gl.constexpr, TU: gl.constexpr, WR: gl.constexpr, WU: gl.constexpr,
):
    """Variant 2: an elementwise running minimum over p (no per-tile reduction or bookkeeping: exactly one
    FMUL, FFMA and FMNMX per score) and the next p-tile prefetched into registers while the current one is
    computed. Needs D % BP == 0. Writes per (row, u-tile) the best value and u; p is recovered afterwards."""
    BR: gl.constexpr = RT * TR * WR
    BU: gl.constexpr = UT * TU * WU
    L3: gl.constexpr = gl.BlockedLayout([RT, UT, BP], [TR, TU, 1], [WR, WU, 1], [2, 1, 0])
    L_ru: gl.constexpr = gl.SliceLayout(2, L3)
    L_rp: gl.constexpr = gl.SliceLayout(1, L3)
    L_up: gl.constexpr = gl.SliceLayout(0, L3)

    pid_r = gl.program_id(0)
    pid_u = gl.program_id(1)
    first_active = gl.load(ACTIVE + gl.load(ORDER + pid_r * BR))
    if first_active != 0:
        slots_ru = pid_r * BR + gl.arange(0, BR, layout=gl.SliceLayout(1, L_ru))
        slots_rp = pid_r * BR + gl.arange(0, BR, layout=gl.SliceLayout(1, L_rp))
        rows_ru = gl.load(ORDER + slots_ru, mask=slots_ru < R, other=gl.load(ORDER))
        rows_rp = gl.load(ORDER + slots_rp, mask=slots_rp < R, other=gl.load(ORDER))
        ok_ru = (slots_ru < R) & (gl.load(ACTIVE + rows_ru, mask=slots_ru < R, other=0) != 0)
        off_ru = rows_ru.to(gl.int64) * D
        off_rp = rows_rp.to(gl.int64) * D
        us_ru = pid_u * BU + gl.arange(0, BU, layout=gl.SliceLayout(0, L_ru))
        us_up = pid_u * BU + gl.arange(0, BU, layout=gl.SliceLayout(1, L_up))
        ru_off = gl.expand_dims(off_ru, 1) + gl.expand_dims(gl.minimum(us_ru, D - 1), 0)
        ru_mask = gl.expand_dims(ok_ru, 1) & gl.expand_dims(us_ru < D, 0)
        v3 = gl.expand_dims(-2.0 * gl.load(W + ru_off), 2)
        rp_base = gl.expand_dims(off_rp, 1) + gl.expand_dims(gl.arange(0, BP, layout=gl.SliceLayout(0, L_rp)), 0)
        up_base = gl.expand_dims(gl.minimum(us_up, D - 1).to(gl.int64) * D, 1) + gl.expand_dims(
            gl.arange(0, BP, layout=gl.SliceLayout(0, L_up)), 0)

        acc = gl.full([BR, BU, BP], float("inf"), gl.float32, layout=L3)
        w_n = gl.load(W + rp_base)
        b_n = gl.load(B + rp_base)
        g_n = gl.load(G + up_base)
        for p0 in range(0, D, BP):
            w_p = w_n
            b_p = b_n
            g = g_n
            pn = gl.minimum(p0 + BP, D - BP)  # the last prefetch re-reads a valid tile
            w_n = gl.load(W + rp_base + pn)
            b_n = gl.load(B + rp_base + pn)
            g_n = gl.load(G + up_base + pn)
            s = gl.fma(gl.expand_dims(g, 0) * v3, gl.expand_dims(w_p, 1), gl.expand_dims(b_p, 1))
            acc = gl.minimum(acc, s)

        a_u = gl.load(A + ru_off, mask=ru_mask, other=INF)
        m_u = gl.min(acc, axis=2)  # min over p of the p-part, per (row, u)
        total = m_u + a_u
        val = gl.min(total, axis=1)
        cols = gl.expand_dims(gl.arange(0, BU, layout=gl.SliceLayout(0, L_ru)), 0)
        iu = gl.min(gl.where(total == gl.expand_dims(val, 1), cols, BU), axis=1)
        m_best = gl.sum(gl.where(cols == gl.expand_dims(iu, 1), m_u, 0.0), axis=1)
        out = rows_ru.to(gl.int64) * n_utiles + pid_u
        gl.store(OUT_VAL + out, val, mask=ok_ru)
        gl.store(OUT_U + out, pid_u * BU + iu, mask=ok_ru)
        gl.store(OUT_M + out, m_best, mask=ok_ru)


@gluon.jit
def _row_search_gluon_t_kernel(
    WT, AT, BT, G, ACTIVE, OUT_VAL, OUT_U, OUT_P,
    n_utiles,
    RP: gl.constexpr, D: gl.constexpr,
    RT: gl.constexpr, UT: gl.constexpr, BP: gl.constexpr,
    TR: gl.constexpr, TU: gl.constexpr, WR: gl.constexpr, WU: gl.constexpr, PREFETCH: gl.constexpr,
):
    """Variant 3 ("tile_t"): the "tile" kernel on transposed operands. ``WT``, ``AT``, ``BT`` are (D, RP):
    rows are the contiguous axis, so the RT rows a thread owns are one 16-byte load and the rows of a warp
    one cache line; G is read as G[p, u] (symmetric) with u contiguous. Rows are already permuted
    active-first and padded to a multiple of the row block (RP); outputs are indexed by that slot order.
    RP and D are compile-time constants, so the p-offsets inside a tile become immediate address offsets.
    Needs D % BP == 0 and D % BU == 0."""
    BR: gl.constexpr = RT * TR * WR
    BU: gl.constexpr = UT * TU * WU
    L3: gl.constexpr = gl.BlockedLayout([RT, UT, BP], [TR, TU, 1], [WR, WU, 1], [0, 1, 2])
    L_ru: gl.constexpr = gl.SliceLayout(2, L3)  # [BR, BU]
    L_rp: gl.constexpr = gl.SliceLayout(1, L3)  # [BR, BP]
    L_up: gl.constexpr = gl.SliceLayout(0, L3)  # [BU, BP]

    pid_r = gl.program_id(0)
    pid_u = gl.program_id(1)
    if gl.load(ACTIVE + pid_r * BR) != 0:  # slots are sorted active-first
        r_ru = pid_r * BR + gl.arange(0, BR, layout=gl.SliceLayout(1, L_ru))
        r_rp = pid_r * BR + gl.arange(0, BR, layout=gl.SliceLayout(1, L_rp))
        us_ru = pid_u * BU + gl.arange(0, BU, layout=gl.SliceLayout(0, L_ru))
        us_up = pid_u * BU + gl.arange(0, BU, layout=gl.SliceLayout(1, L_up))
        ru_off = gl.expand_dims(r_ru, 1) + gl.expand_dims(us_ru.to(gl.int64) * RP, 0)
        v_u = -2.0 * gl.load(WT + ru_off)
        v3 = gl.expand_dims(v_u, 2)
        p_rp = gl.arange(0, BP, layout=gl.SliceLayout(0, L_rp))
        p_up = gl.arange(0, BP, layout=gl.SliceLayout(0, L_up))
        rp_base = gl.expand_dims(r_rp, 1) + gl.expand_dims(p_rp.to(gl.int64) * RP, 0)
        up_base = gl.expand_dims(us_up, 1) + gl.expand_dims(p_up.to(gl.int64) * D, 0)

        best = gl.full([BR, BU], float("inf"), gl.float32, layout=L_ru)
        best_p0 = gl.full([BR, BU], 0, gl.int32, layout=L_ru)
        w_n = gl.load(WT + rp_base)
        b_n = gl.load(BT + rp_base)
        g_n = gl.load(G + up_base)
        for p0 in range(0, D, BP):
            if PREFETCH:  # issue the next tile's loads before computing this one
                w_p = w_n
                b_p = b_n
                g = g_n
                pn = gl.minimum(p0 + BP, D - BP)
                w_n = gl.load(WT + rp_base + pn * RP)
                b_n = gl.load(BT + rp_base + pn * RP)
                g_n = gl.load(G + up_base + pn * D)
            else:
                w_p = gl.load(WT + rp_base + p0 * RP)
                b_p = gl.load(BT + rp_base + p0 * RP)
                g = gl.load(G + up_base + p0 * D)
            s = gl.fma(gl.expand_dims(g, 0) * v3, gl.expand_dims(w_p, 1), gl.expand_dims(b_p, 1))
            m = gl.min(s, axis=2)
            better = m < best
            best = gl.where(better, m, best)
            best_p0 = gl.where(better, p0, best_p0)

        total = best + gl.load(AT + ru_off)
        val = gl.min(total, axis=1)
        cols = gl.expand_dims(gl.arange(0, BU, layout=gl.SliceLayout(0, L_ru)), 0)
        iu = gl.min(gl.where(total == gl.expand_dims(val, 1), cols, BU), axis=1)
        pick = cols == gl.expand_dims(iu, 1)
        v_best = gl.sum(gl.where(pick, v_u, 0.0), axis=1)
        p0_best = gl.sum(gl.where(pick, best_p0, 0), axis=1)
        u_best = pid_u * BU + iu

        # recover p: re-evaluate the winning u's best p-tile with the same fma
        L_fin: gl.constexpr = gl.BlockedLayout([1, BP], [32, 1], [WR * WU, 1], [1, 0])
        r_f = pid_r * BR + gl.arange(0, BR, layout=gl.SliceLayout(1, L_fin))
        u_f = gl.convert_layout(u_best, gl.SliceLayout(1, L_fin))
        v_f = gl.convert_layout(v_best, gl.SliceLayout(1, L_fin))
        p0_f = gl.convert_layout(p0_best, gl.SliceLayout(1, L_fin))
        ps = gl.expand_dims(p0_f, 1) + gl.expand_dims(gl.arange(0, BP, layout=gl.SliceLayout(0, L_fin)), 0)
        fofs = gl.expand_dims(r_f, 1) + ps.to(gl.int64) * RP
        w_p = gl.load(WT + fofs)
        b_p = gl.load(BT + fofs)
        g = gl.load(G + gl.expand_dims(u_f, 1) + ps.to(gl.int64) * D)
        s = gl.fma(g * gl.expand_dims(v_f, 1), w_p, b_p)
        s_min = gl.min(s, axis=1)
        pcols = gl.expand_dims(gl.arange(0, BP, layout=gl.SliceLayout(0, L_fin)), 0)
        ip = gl.min(gl.where(s == gl.expand_dims(s_min, 1), pcols, BP), axis=1)

        out = r_f.to(gl.int64) * n_utiles + pid_u
        gl.store(OUT_VAL + out, gl.convert_layout(val, gl.SliceLayout(1, L_fin)))
        gl.store(OUT_U + out, pid_u * BU + gl.convert_layout(iu, gl.SliceLayout(1, L_fin)))
        gl.store(OUT_P + out, p0_f + ip)


@triton.jit
def _recover_p_kernel(W, B, G, U, M, OUT_P, D, BLOCK: tl.constexpr):
    """Per row: the lowest p whose p-part score for the chosen u equals its minimum ``M`` (same fma as the
    search kernel, so the values agree bit for bit; D is written where none does)."""
    r = tl.program_id(0)
    target = tl.load(M + r)
    if target < float("inf"):
        u = tl.load(U + r)
        off = r.to(tl.int64) * D
        v = -2.0 * tl.load(W + off + u)
        first = D
        for p0 in range(0, D, BLOCK):
            ps = p0 + tl.arange(0, BLOCK)
            m = ps < D
            g = tl.load(G + u.to(tl.int64) * D + ps, mask=m, other=0.0)
            s = tl.fma(g * v, tl.load(W + off + ps, mask=m, other=0.0), tl.load(B + off + ps, mask=m, other=float("inf")))
            first = tl.minimum(first, tl.min(tl.where(s <= target, ps, D), axis=0))
        tl.store(OUT_P + r, first)


def row_search_gluon(
    w: torch.Tensor,
    c: torch.Tensor,
    keep: torch.Tensor,
    G: torch.Tensor,
    gdiag: torch.Tensor,
    active: torch.Tensor | None = None,
    config: tuple[int, ...] | None = None,
    variant: str = "tile_t",
    prefetch: bool | None = None,
) -> SwapChoice:
    """Best swap per row over kept × pruned pairs (float32, CUDA). Inactive rows return ``+inf``.

    ``variant``: ``"tile_t"`` (default: per-tile minimum on transposed, fully coalesced operands), ``"tile"``
    (the same on row-major operands) or ``"acc"`` (elementwise running minimum with register prefetch).
    """
    R, D = w.shape
    cfg_t = config or DEFAULT_T_CONFIG
    if variant == "tile_t" and D % cfg_t[2] == 0 and D % (cfg_t[1] * cfg_t[4] * cfg_t[6]) == 0:
        return _row_search_transposed(w, c, keep, G, gdiag, active, cfg_t,
                                      DEFAULT_T_PREFETCH if prefetch is None else prefetch)
    if variant == "tile_t":  # shapes the transposed kernel does not tile exactly
        variant, config = "tile", None
    if variant == "acc" and D % (config or DEFAULT_ACC_CONFIG)[2] == 0:
        return _row_search_acc(w, c, keep, G, gdiag, active, config or DEFAULT_ACC_CONFIG)
    config = config or DEFAULT_GLUON_CONFIG
    RT, UT, BP, TR, TU, WR, WU = config
    if TR * TU != 32:
        raise ValueError(f"gluon config {config}: lanes over rows × candidates must be 32, got {TR}×{TU}")
    BR, BU = RT * TR * WR, UT * TU * WU
    w, a, b, act = _prepare(w, c, keep, gdiag, active)
    order = torch.argsort(act == 0, stable=True).to(torch.int32)
    n_utiles = triton.cdiv(D, BU)
    val = torch.full((R, n_utiles), float("inf"), dtype=torch.float32, device=w.device)
    us = torch.zeros((R, n_utiles), dtype=torch.int32, device=w.device)
    ps = torch.zeros((R, n_utiles), dtype=torch.int32, device=w.device)
    grid = (triton.cdiv(R, BR), n_utiles)
    _row_search_gluon_kernel[grid](
        w, a, b, G.contiguous().float(), order, act, val, us, ps, R, D, n_utiles,
        RT=RT, UT=UT, BP=BP, TR=TR, TU=TU, WR=WR, WU=WU, EVEN_D=D % BP == 0, num_warps=WR * WU,
    )
    best, tile = val.min(dim=1)
    return SwapChoice(best, us.gather(1, tile[:, None])[:, 0].long(), ps.gather(1, tile[:, None])[:, 0].long())


def _row_search_acc(w, c, keep, G, gdiag, active, config) -> SwapChoice:
    R, D = w.shape
    RT, UT, BP, TR, TU, WR, WU = config
    BR, BU = RT * TR * WR, UT * TU * WU
    w, a, b, act = _prepare(w, c, keep, gdiag, active)
    G = G.contiguous().float()
    order = torch.argsort(act == 0, stable=True).to(torch.int32)
    n_utiles = triton.cdiv(D, BU)
    val = torch.full((R, n_utiles), float("inf"), dtype=torch.float32, device=w.device)
    us = torch.zeros((R, n_utiles), dtype=torch.int32, device=w.device)
    ms = torch.full((R, n_utiles), float("inf"), dtype=torch.float32, device=w.device)
    _row_search_gluon_acc_kernel[(triton.cdiv(R, BR), n_utiles)](
        w, a, b, G, order, act, val, us, ms, R, D, n_utiles,
        RT=RT, UT=UT, BP=BP, TR=TR, TU=TU, WR=WR, WU=WU, num_warps=WR * WU,
    )
    best, tile = val.min(dim=1)  # first minimal u-tile: lowest u on ties
    u = us.gather(1, tile[:, None])[:, 0].contiguous()
    m = ms.gather(1, tile[:, None])[:, 0].contiguous()
    p = torch.zeros(R, dtype=torch.int32, device=w.device)
    _recover_p_kernel[(R,)](w, b, G, u, m, p, D, BLOCK=1024)
    lost = p == D  # cannot happen when both kernels round alike; never apply a swap we cannot name
    best = torch.where(lost, torch.full_like(best, float("inf")), best)
    return SwapChoice(best, u.long(), torch.where(lost, 0, p).long())


def _row_search_transposed(w, c, keep, G, gdiag, active, config, prefetch: bool = False) -> SwapChoice:
    R, D = w.shape
    RT, UT, BP, TR, TU, WR, WU = config
    BR, BU = RT * TR * WR, UT * TU * WU
    w, a, b, act = _prepare(w, c, keep, gdiag, active)
    order = torch.argsort(act == 0, stable=True)  # slot -> row, active rows first (no host sync)
    RP = triton.cdiv(R, BR) * BR

    def slots_t(x: torch.Tensor, fill: float) -> torch.Tensor:
        out = torch.full((D, RP), fill, dtype=torch.float32, device=w.device)
        out[:, :R] = x[order].T
        return out

    wt, at, bt = slots_t(w, 0.0), slots_t(a, float("inf")), slots_t(b, float("inf"))
    act_slots = torch.zeros(RP, dtype=torch.int8, device=w.device)
    act_slots[:R] = act[order]
    n_utiles = triton.cdiv(D, BU)
    val = torch.empty((RP, n_utiles), dtype=torch.float32, device=w.device)
    us = torch.empty((RP, n_utiles), dtype=torch.int32, device=w.device)
    ps = torch.empty((RP, n_utiles), dtype=torch.int32, device=w.device)
    val.fill_(float("inf"))
    us.zero_()
    ps.zero_()
    _row_search_gluon_t_kernel[(RP // BR, n_utiles)](
        wt, at, bt, G.contiguous().float(), act_slots, val, us, ps, n_utiles,
        RP=RP, D=D, RT=RT, UT=UT, BP=BP, TR=TR, TU=TU, WR=WR, WU=WU, PREFETCH=prefetch, num_warps=WR * WU,
    )
    val = torch.where(act_slots[:, None] != 0, val, torch.full_like(val, float("inf")))
    best, tile = val[:R].min(dim=1)  # first minimal u-tile: lowest u on ties
    u = us[:R].gather(1, tile[:, None])[:, 0].long()
    p = ps[:R].gather(1, tile[:, None])[:, 0].long()
    out_best, out_u, out_p = torch.empty_like(best), torch.empty_like(u), torch.empty_like(p)
    out_best[order], out_u[order], out_p[order] = best, u, p
    return SwapChoice(out_best, out_u, out_p)
