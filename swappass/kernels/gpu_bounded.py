"""The bound-pruned exact refinement loop on the GPU (per-row patterns): the CPU loop's μ bound, on device.

The score of pruning kept ``u`` and restoring pruned ``p`` in a row is ``a_u + b_p + t_up`` with
``t_up = (G_up · (−2 w_u)) · w_p`` (:mod:`swappass.kernels.torch_search`). ``t`` depends on W and G alone, so per
row and kept ``u`` the loop keeps ``μ_u ≤ min_{p ∈ P} t_up``, a lower bound that stays valid as the mask changes:
when ``u*`` is pruned it joins P and ``μ_u ← min(μ_u, t_{u,u*})``; when ``p*`` is restored it leaves P, which can
only raise the true minimum (the old ``μ_u`` stays a bound; a full recomputation tightens it again when the share of
pairs scored has grown well above what it was after the last one: :data:`REFRESH_GROWTH`); the restored ``p*`` gets
a fresh ``μ``. Then ``lb_u = a_u + min_p b_p + μ_u`` (less a tiny
relative slack that covers rounding) bounds every score of ``u``, and only the kept ``u`` with
``lb_u ≤ ub`` are scored exactly, where ``ub`` is the exact score of the ``u`` with the smallest bound.

The exact scores are the dense Gluon kernel's own arithmetic, ``fma(G_up · (−2 w_u), w_p, b_p) + a_u``, with the
same ties (lowest ``u``, then lowest ``p``), so the loop takes the same swaps as the dense device loop
(:func:`swappass.refine.loop.refine_batch_device` around the same backend), bit for bit; it only skips pairs that
cannot win. On random 8B-shaped weights and real layers alike, most kept weights of a row have bounds far above
the row's best swap (docs/BENCHMARKS.md measures the fraction scored).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..core.rowtiles import row_errors
from .torch_search import swap_terms

__all__ = ["BoundedRowLoop", "bound_minima", "score_candidates", "BOUND_SLACK", "REFRESH_GROWTH", "REFRESH_FLOOR"]

BOUND_SLACK = 1e-5  # relative: far above fp32 rounding of a few operations, far below the gaps that matter
# Recompute the minima (a dense pass) once the share of kept pairs scored exceeds this many times its value right
# after the last computation and REFRESH_FLOOR: the bounds loosen slowly, and a recomputation costs about one
# dense search.
REFRESH_GROWTH, REFRESH_FLOOR = 4.0, 0.02
INF = tl.constexpr(float("inf"))


@triton.jit
def _minima_kernel(W, PRUNED, G, MU, R, D, BR: tl.constexpr, BU: tl.constexpr, BP: tl.constexpr):
    """MU[r, u] = min over pruned p of (G[u, p] · (−2 W[r, u])) · W[r, p] (+inf with nothing pruned)."""
    pid_r = tl.program_id(0)
    pid_u = tl.program_id(1)
    rows = pid_r * BR + tl.arange(0, BR)
    us = pid_u * BU + tl.arange(0, BU)
    row_ok = rows < R
    u_ok = us < D
    row_off = rows.to(tl.int64) * D
    ru_mask = row_ok[:, None] & u_ok[None, :]
    v_u = -2.0 * tl.load(W + row_off[:, None] + us[None, :], mask=ru_mask, other=0.0)
    best = tl.full([BR, BU], INF, tl.float32)
    for p0 in range(0, D, BP):
        ps = p0 + tl.arange(0, BP)
        rp_mask = row_ok[:, None] & (ps < D)[None, :]
        w_p = tl.load(W + row_off[:, None] + ps[None, :], mask=rp_mask, other=0.0)
        pruned = tl.load(PRUNED + row_off[:, None] + ps[None, :], mask=rp_mask, other=0) != 0
        g = tl.load(G + us.to(tl.int64)[:, None] * D + ps[None, :], mask=u_ok[:, None] & (ps < D)[None, :],
                    other=0.0)
        t = (g[None, :, :] * v_u[:, :, None]) * w_p[:, None, :]
        t = tl.where(pruned[:, None, :], t, INF)
        best = tl.minimum(best, tl.min(t, axis=2))
    tl.store(MU + row_off[:, None] + us[None, :], best, mask=ru_mask)


@triton.jit
def _candidate_kernel(W, A, B, G, ROWS, US, OUT_VAL, OUT_P, n, D, BN: tl.constexpr, BP: tl.constexpr):
    """For pairs i < n: OUT_VAL[i] = min_p fma(G[u, p] · (−2 W[r, u]), W[r, p], B[r, p]) + A[r, u], OUT_P its
    lowest minimising p (r = ROWS[i], u = US[i])."""
    pid = tl.program_id(0)
    idx = pid * BN + tl.arange(0, BN)
    ok = idx < n
    r = tl.load(ROWS + idx, mask=ok, other=0).to(tl.int64)
    u = tl.load(US + idx, mask=ok, other=0).to(tl.int64)
    v = -2.0 * tl.load(W + r * D + u, mask=ok, other=0.0)
    best = tl.full([BN], INF, tl.float32)
    best_p = tl.zeros([BN], tl.int32)
    for p0 in range(0, D, BP):
        ps = p0 + tl.arange(0, BP)
        m = ok[:, None] & (ps < D)[None, :]
        g = tl.load(G + u[:, None] * D + ps[None, :], mask=m, other=0.0)
        w_p = tl.load(W + r[:, None] * D + ps[None, :], mask=m, other=0.0)
        b_p = tl.load(B + r[:, None] * D + ps[None, :], mask=m, other=INF)
        s = tl.fma(g * v[:, None], w_p, b_p)
        val, ip = tl.min(s, axis=1, return_indices=True, return_indices_tie_break_left=True)
        better = val < best  # strict: an earlier p-tile keeps a tie (lowest p)
        best = tl.where(better, val, best)
        best_p = tl.where(better, p0 + ip, best_p)
    total = best + tl.load(A + r * D + u, mask=ok, other=INF)
    tl.store(OUT_VAL + idx, total, mask=ok)
    tl.store(OUT_P + idx, best_p, mask=ok)


def bound_minima(w: torch.Tensor, keep: torch.Tensor, G: torch.Tensor, tiles: tuple[int, int, int] = (16, 32, 16)
                 ) -> torch.Tensor:
    """``μ`` (R, d) float32: per row and input u the minimum over the pruned p of ``(G_up · (−2 w_u)) · w_p``."""
    R, d = w.shape
    BR, BU, BP = tiles
    mu = torch.empty(R, d, dtype=torch.float32, device=w.device)
    pruned = (~keep).to(torch.int8).contiguous()
    _minima_kernel[(triton.cdiv(R, BR), triton.cdiv(d, BU))](w, pruned, G, mu, R, d, BR=BR, BU=BU, BP=BP,
                                                              num_warps=8)
    return mu


def score_candidates(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, G: torch.Tensor, rows: torch.Tensor,
                     us: torch.Tensor, BN: int = 32, BP: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact best score and its p for each (row, u) pair (``rows``, ``us``: (n,) int32), the dense kernel's math."""
    n, d = rows.numel(), w.shape[1]
    val = torch.empty(n, dtype=torch.float32, device=w.device)
    p = torch.empty(n, dtype=torch.int32, device=w.device)
    if n:
        _candidate_kernel[(triton.cdiv(n, BN),)](w, a, b, G, rows, us, val, p, n, d, BN=BN, BP=BP)
    return val, p


def _lower_bounds(a: torch.Tensor, b: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """``a_u + min_p b_p + μ_u`` minus the slack (inf where u is pruned)."""
    minb = b.min(dim=1, keepdim=True).values
    raw = a + minb + mu
    return torch.where(torch.isfinite(raw), raw - BOUND_SLACK * (a.abs() + minb.abs() + mu.abs()), raw)


class BoundedRowLoop:
    """The bound-pruned loop over a fixed ``G`` (d × d, float32, CUDA or CPU under ``TRITON_INTERPRET``).

    ``refine_batch(w, keep, G, max_iters, rtol, resync_every)`` has the contract of
    :func:`swappass.refine.loop.refine_batch`; ``scored`` then holds the (row, u) pairs scored exactly per
    iteration, ``kept`` the kept entries per iteration (their ratio: the work left), ``refreshes`` the
    recomputations of the minima after the first.
    """

    def __init__(self, G: torch.Tensor) -> None:
        self.G = G.contiguous().float()
        self.gdiag = self.G.diagonal().contiguous()
        self.scored: list[int] = []
        self.kept: list[int] = []
        self.refreshes = 0

    def _best(self, w, keep, a, b, mu, active) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per row: the best score and its (u, p) over kept × pruned pairs, +inf for inactive rows."""
        R, d = w.shape
        lb = torch.where(active[:, None] & keep, _lower_bounds(a, b, mu), torch.full_like(a, float("inf")))
        u0 = lb.argmin(dim=1)
        rows = torch.arange(R, device=w.device)
        ub, _ = score_candidates(w, a, b, self.G, rows.int(), u0.int())
        ub = ub + BOUND_SLACK * ub.abs()
        cand = (lb <= ub[:, None]) & keep & active[:, None]
        cand[rows, u0] |= active & torch.isfinite(ub)  # the row's own bound holder always competes
        r_idx, u_idx = cand.nonzero(as_tuple=True)  # row-major: rows, then u ascending
        self.scored.append(int(r_idx.numel()))
        self.kept.append(int((keep & active[:, None]).sum()))
        val, p = score_candidates(w, a, b, self.G, r_idx.int(), u_idx.int())
        best = torch.full((R,), float("inf"), device=w.device).scatter_reduce(0, r_idx, val, "amin")
        at_best = val == best[r_idx]
        big = torch.iinfo(torch.long).max
        u_best = torch.full((R,), big, dtype=torch.long, device=w.device).scatter_reduce(
            0, r_idx, torch.where(at_best, u_idx, big), "amin")
        pick = at_best & (u_idx == u_best[r_idx])  # exactly one pair per row with a finite best
        p_best = torch.zeros(R, dtype=torch.long, device=w.device)
        p_best[r_idx[pick]] = p[pick].long()
        return best, u_best.clamp_(max=d - 1), p_best

    def _update_minima(self, w, keep, mu, rows, u, p) -> None:
        """After rows pruned ``u`` and restored ``p``: u joins P (a new term), p gets a fresh bound, u none."""
        if rows.numel() == 0:
            return
        G, wr = self.G, w[rows]
        v = -2.0 * wr
        mu[rows] = torch.minimum(mu[rows], (G[u] * v) * wr.gather(1, u[:, None]))  # t_{x,u} for every x
        t_p = (G[p] * v.gather(1, p[:, None])) * wr  # t_{p,x} for every x
        fresh = torch.where(keep[rows], torch.full_like(t_p, float("inf")), t_p).min(dim=1).values
        mu[rows, p] = fresh
        mu[rows, u] = float("inf")

    def refine_batch(self, w: torch.Tensor, keep: torch.Tensor, G: torch.Tensor, max_iters: int, rtol: float,
                     resync_every: int, residual: torch.Tensor | None = None,
                     terms: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, int]:
        """Refine rows ``w`` (R, d, float32) with mask ``keep`` (modified in place); returns (swaps, iters).
        ``residual``, ``terms``: as for :func:`swappass.refine.loop.refine_batch`."""
        R = w.shape[0]
        w = w.contiguous().float()
        c, loss = row_errors(w, keep, G, residual=residual) if terms is None else terms
        swaps = torch.zeros(R, dtype=torch.long, device=w.device)
        active = torch.ones(R, dtype=torch.bool, device=w.device)
        mu = bound_minima(w, keep, self.G) if max_iters else None
        rows_all = torch.arange(R, device=w.device)
        base = None  # the share of pairs scored just after the minima were computed
        it = 0
        while it < max_iters and bool(active.any()):
            it += 1
            a, b = swap_terms(w, c, keep, self.gdiag)
            a, b = a.contiguous(), b.contiguous()
            delta, u, p = self._best(w, keep, a, b, mu, active)
            ok = active & (delta < -rtol * loss)
            rows, u, p = rows_all[ok], u[ok], p[ok]
            if rows.numel():
                keep[rows, u] = False
                keep[rows, p] = True
                wr = w[rows]
                c[rows] += wr.gather(1, u[:, None]) * G[u] - wr.gather(1, p[:, None]) * G[p]
                loss[rows] += delta[ok]
                swaps[rows] += 1
                self._update_minima(w, keep, mu, rows, u, p)
            active = ok
            if resync_every and it % resync_every == 0 and bool(active.any()):
                c, loss = row_errors(w, keep, G, residual=residual)
            share = self.scored[-1] / max(1, self.kept[-1])
            base = share if base is None else base
            if share > max(REFRESH_FLOOR, REFRESH_GROWTH * base) and bool(active.any()):
                mu, base = bound_minima(w, keep, self.G), None
                self.refreshes += 1
        return swaps, it
