"""Register-tiled swap search written in Gluon (Triton's explicit-layout dialect) for NVIDIA GPUs.

Same contract and outputs as :func:`swappass.kernels.triton_search.row_search` (the portable kernel, which the
Triton interpreter can run on a CPU); the difference is the layout.
Each thread owns an ``RT × UT × BP`` block of (row, prune candidate u, restore candidate p) scores with the whole
p-extent in its registers, so the minimum over p needs no shuffles, every G value is reused by ``RT`` rows and
every ``w_p``/``b_p`` value by ``UT`` candidates straight from registers (the register tiling of an SGEMM, applied
to the three-operand score ``b_p + (−2 w_u G_up) w_p``). Plain Triton picks its own layout for such a 3-D
broadcast and spreads p over lanes, which costs shuffles on every tile.
"""
from __future__ import annotations

import math
import os

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from .torch_search import SwapChoice
from .triton_search import search_inputs

__all__ = ["row_search_gluon", "DEFAULT_T_CONFIG"]

INF = gl.constexpr(float("inf"))

# (RT, UT, BP, TR, TU, WR, WU): per-thread rows / candidates / p-extent, lanes over rows / candidates,
# warps over rows / candidates. Tile = (RT·TR·WR rows) × (UT·TU·WU candidates u), streamed over p.
DEFAULT_T_CONFIG = (4, 8, 8, 8, 4, 1, 4)  # best of tools/tune_triton.py on an H100 (docs/BENCHMARKS.md)
DEFAULT_T_PREFETCH = True
if os.environ.get("SWAPPASS_GLUON_CONFIG"):  # "RT,UT,BP,TR,TU,WR,WU[,prefetch]" from a tile sweep on another card
    _cfg = [int(x) for x in os.environ["SWAPPASS_GLUON_CONFIG"].split(",")]
    DEFAULT_T_CONFIG, DEFAULT_T_PREFETCH = tuple(_cfg[:7]), bool(_cfg[7]) if len(_cfg) > 7 else False


@gluon.jit
def _row_search_kernel(
    WT, AT, BT, G, ACTIVE, OUT_VAL, OUT_U, OUT_P,
    n_utiles,
    RP: gl.constexpr, D: gl.constexpr,
    RT: gl.constexpr, UT: gl.constexpr, BP: gl.constexpr,
    TR: gl.constexpr, TU: gl.constexpr, WR: gl.constexpr, WU: gl.constexpr, PREFETCH: gl.constexpr,
):
    """One program: BR rows × BU prune candidates, sweeping all restore candidates p in tiles of BP.

    ``WT``, ``AT``, ``BT`` are (D, RP): rows are the contiguous axis, so the RT rows a thread owns are one
    16-byte load and the rows of a warp one cache line; G is read as G[p, u] (symmetric) with u contiguous.
    Rows are already permuted active-first and padded to a multiple of the row block (RP); outputs are
    indexed by that slot order. RP and D are compile-time constants, so the p-offsets inside a tile become
    immediate address offsets. D must be a multiple of BP and BU (the host pads)."""
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


def row_search_gluon(
    w: torch.Tensor,
    c: torch.Tensor,
    keep: torch.Tensor,
    G: torch.Tensor,
    gdiag: torch.Tensor,
    active: torch.Tensor | None = None,
    config: tuple[int, ...] | None = None,
    prefetch: bool | None = None,
) -> SwapChoice:
    """Best swap per row over kept × pruned pairs (float32, CUDA). Inactive rows return ``+inf``.

    ``w, c, keep``: (R, d). ``G``: (d, d), or already zero-padded to (D, D) with D a multiple of the tile
    (see :func:`pad_gram`; pass it padded when calling repeatedly). ``config`` = (RT, UT, BP, TR, TU, WR, WU).
    """
    config = tuple(config or DEFAULT_T_CONFIG)
    prefetch = DEFAULT_T_PREFETCH if prefetch is None else prefetch
    RT, UT, BP, TR, TU, WR, WU = config
    if TR * TU != 32:
        raise ValueError(f"gluon config {config}: lanes over rows × candidates must be 32, got {TR}×{TU}")
    R, d = w.shape
    BR, BU = RT * TR * WR, UT * TU * WU
    G = pad_gram(G, config)
    D = G.shape[0]
    w, a, b, act = search_inputs(w, c, keep, gdiag, active)
    order = torch.argsort(act == 0, stable=True)  # slot -> row, active rows first (no host sync)
    RP = triton.cdiv(R, BR) * BR

    def slots_t(x: torch.Tensor, fill: float) -> torch.Tensor:  # (D, RP): padded inputs never win
        out = torch.full((D, RP), fill, dtype=torch.float32, device=w.device)
        out[:d, :R] = x[order].T
        return out

    wt, at, bt = slots_t(w, 0.0), slots_t(a, float("inf")), slots_t(b, float("inf"))
    act_slots = torch.zeros(RP, dtype=torch.int8, device=w.device)
    act_slots[:R] = act[order]
    n_utiles = D // BU
    val = torch.full((RP, n_utiles), float("inf"), dtype=torch.float32, device=w.device)
    us = torch.zeros((RP, n_utiles), dtype=torch.int32, device=w.device)
    ps = torch.zeros((RP, n_utiles), dtype=torch.int32, device=w.device)
    _row_search_kernel[(RP // BR, n_utiles)](
        wt, at, bt, G, act_slots, val, us, ps, n_utiles,
        RP=RP, D=D, RT=RT, UT=UT, BP=BP, TR=TR, TU=TU, WR=WR, WU=WU, PREFETCH=prefetch, num_warps=WR * WU,
    )
    val = torch.where(act_slots[:, None] != 0, val, torch.full_like(val, float("inf")))
    best, tile = val[:R].min(dim=1)  # first minimal u-tile: lowest u on ties
    u = us[:R].gather(1, tile[:, None])[:, 0].long().clamp_(max=d - 1)  # rows with no swap may point at padding
    p = ps[:R].gather(1, tile[:, None])[:, 0].long().clamp_(max=d - 1)
    out_best, out_u, out_p = torch.empty_like(best), torch.empty_like(u), torch.empty_like(p)
    out_best[order], out_u[order], out_p[order] = best, u, p
    return SwapChoice(out_best, out_u, out_p)


def pad_gram(G: torch.Tensor, config: tuple[int, ...] | None = None) -> torch.Tensor:
    """G as contiguous float32, zero-padded to a multiple of the kernel's tiles (no copy when it already is)."""
    RT, UT, BP, TR, TU, WR, WU = tuple(config or DEFAULT_T_CONFIG)
    step = UT * TU * WU * BP // math.gcd(UT * TU * WU, BP)
    D = triton.cdiv(G.shape[0], step) * step
    if D == G.shape[0] and G.dtype == torch.float32 and G.is_contiguous():
        return G
    out = torch.zeros((D, D), dtype=torch.float32, device=G.device)
    out[: G.shape[0], : G.shape[0]] = G
    return out
