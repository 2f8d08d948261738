"""Refinement under an unstructured layer budget: exact intra-row 1-swaps plus exact cross-row moves.

With ``pattern = "unstructured:s"`` the layer keeps a fixed total, rows may keep different counts. The layer
error is still the sum of independent row errors ``L_i = e_iᵀ G e_i`` (``e_i = (1 − m_i) ⊙ w_i``), so:

* an **intra-row swap** (prune kept ``u``, restore pruned ``p`` in the same row) is the SparseSwaps move of
  :mod:`swappass.refine.loop` (the same search functions, the same incremental ``c`` update);
* a **cross-row move** prunes kept ``u`` in row ``i`` and restores pruned ``p`` in row ``j ≠ i``. The two rows'
  errors change independently, so ``ΔL = a_iu + b_jp`` with the one-sided terms of
  :func:`swappass.kernels.torch_search.swap_terms`
  (``a_u = w_u(2c_u + w_u G_uu)``, ``b_p = w_p(w_p G_pp − 2c_p)``) -- no interaction term. With ``A_i = min_u a_iu``
  and ``B_j = min_p b_jp``, the best cross-row move is ``min_{i≠j} A_i + B_j``: the best prune over all rows plus
  the best restore over all *other* rows, found exactly from the two best rows of ``A`` and of ``B``.

Each iteration applies the best intra-row swap in every row that has an improving one (exactly as
:func:`swappass.refine_mask` does), then runs cross-row steps until no cross-row move improves. One cross-row step
applies a greedy set of row-disjoint moves: the best move over all rows, then the best move over the rows not yet
touched in this step, and so on while it improves; since the moves touch disjoint rows, every one of them is
exact and the layer error drops by their sum. The error decreases monotonically; at convergence no intra-row swap
and no cross-row move improves (up to the tolerances below). Deterministic: ties go to the lowest index.

Tolerances: an intra-row swap must satisfy ``ΔL < −rtol·L_row`` (as in :func:`~swappass.refine_mask`); a cross-row
move ``ΔL < −rtol·mean_i(L_i)`` (an absolute threshold per step, so "no improving move" is a statement about all
moves, not just the best one).
"""
from __future__ import annotations

import torch

from ..core.errors import InputError
from ..core.loss import layer_loss
from ..core.patterns import PatternLike, UnstructuredSparsity, parse_pattern
from ..core.rowtiles import resync_rows
from ..core.validate import check_count
from ..core.workspace import memory_plan
from ..kernels.registry import make_search, resolve_backend
from ..kernels.torch_search import SearchFn, SwapChoice, swap_terms
from .inputs import WorkSetup, work_setup
from .loop import swap_step
from .result import RefineResult

__all__ = ["row_move_terms", "best_cross_move", "greedy_cross_moves", "refine_unstructured"]


def row_move_terms(
    w: torch.Tensor, c: torch.Tensor, keep: torch.Tensor, gdiag: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: best single prune ``(A, u)`` and best single restore ``(B, p)``; ``+inf`` where none exists.

    ``w, c, keep``: (R, d). ``A_i = min_u a_iu`` over kept ``u``; ``B_i = min_p b_ip`` over pruned ``p``; the
    indices are the lowest among equal values.
    """
    a, b = swap_terms(w, c, keep, gdiag)
    A, u = a.min(dim=1)
    B, p = b.min(dim=1)
    return A, u, B, p


def _second(order: list[int], start: int, used: set[int], skip: int) -> int | None:
    """First entry of ``order`` at or after ``start`` that is neither used nor ``skip``."""
    for k in range(start, len(order)):
        r = order[k]
        if r != skip and r not in used:
            return r
    return None


def best_cross_move(A: torch.Tensor, B: torch.Tensor) -> tuple[float, int, int]:
    """Exact ``min_{i≠j} A_i + B_j`` as ``(delta, i, j)`` from the two best rows of ``A`` and of ``B``.

    Ties go to the lowest donor row ``i``, then the lowest receiver row ``j``. ``(inf, -1, -1)`` if fewer than
    two rows or no finite pair exists.
    """
    moves = greedy_cross_moves(A, B, threshold=float("inf"), max_moves=1)
    return moves[0] if moves else (float("inf"), -1, -1)


def greedy_cross_moves(
    A: torch.Tensor, B: torch.Tensor, threshold: float, max_moves: int | None = None
) -> list[tuple[float, int, int]]:
    """Row-disjoint cross-row moves, best first: ``[(delta, i, j), ...]`` with every ``delta < threshold``.

    The first is the exact best move over all rows (``min_{i≠j} A_i + B_j``); each next one is the exact best
    over the rows not yet used. Stops at the first candidate with ``delta >= threshold`` (later ones are not
    better: the candidate set only shrinks). Runs on the host: two sorts of ``rows`` values, then a pointer walk.
    """
    R = A.numel()
    if R < 2:
        return []
    A_l = A.double().cpu().tolist()
    B_l = B.double().cpu().tolist()
    order_a = torch.sort(A.double().cpu(), stable=True).indices.tolist()
    order_b = torch.sort(B.double().cpu(), stable=True).indices.tolist()
    used: set[int] = set()
    ka = kb = 0
    moves: list[tuple[float, int, int]] = []
    while max_moves is None or len(moves) < max_moves:
        while ka < R and order_a[ka] in used:
            ka += 1
        while kb < R and order_b[kb] in used:
            kb += 1
        if ka >= R or kb >= R:
            break
        i, j = order_a[ka], order_b[kb]
        if i == j:  # the same row is the best donor and the best receiver: pair it with the runner-up
            j2 = _second(order_b, kb + 1, used, i)
            i2 = _second(order_a, ka + 1, used, i)
            d1 = A_l[i] + B_l[j2] if j2 is not None else float("inf")
            d2 = A_l[i2] + B_l[j] if i2 is not None else float("inf")
            if d2 < d1 or (d2 == d1 and i2 is not None and i2 < i):
                i = i2
            else:
                j = j2
            if i is None or j is None:
                break
        delta = A_l[i] + B_l[j]
        if not delta < threshold:
            break
        moves.append((delta, i, j))
        used.add(i)
        used.add(j)
    return moves


def _search_for(backend: str, requested: str, pattern: UnstructuredSparsity, G: torch.Tensor,
                chunk: int) -> tuple[SearchFn, str]:
    """The intra-row search; a fast backend that does not handle variable per-row counts falls back to torch."""
    if backend == "torch":
        return make_search("torch", pattern, G, chunk), "torch"
    try:
        return make_search(backend, pattern, G), backend
    except (NotImplementedError, TypeError):
        if requested != "auto":
            raise
        return make_search("torch", pattern, G, chunk), "torch"


@torch.no_grad()
def refine_unstructured(
    W: torch.Tensor,
    G: torch.Tensor,
    mask: torch.Tensor,
    pattern: PatternLike,
    max_iters: int = 100,
    *,
    max_cross_steps: int | None = None,
    rtol: float | None = None,
    resync_every: int = 16,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    backend: str = "auto",
    record_moves: bool = False,
    name: str = "layer",
) -> RefineResult:
    """Refine a mask under an unstructured layer budget (module docstring: intra-row swaps + cross-row moves).

    Args:
        W: ``d_out × d_in`` weights. G: ``d_in × d_in`` input Gram matrix. mask: bool, True = keep, feasible for
            ``pattern`` (``"unstructured:s"``; e.g. from ``warm_start(W, G, "unstructured:0.6", "wanda")``).
        max_iters: iterations (one intra-row swap per row, then cross-row steps); 0 returns the warm start.
        max_cross_steps: cap on cross-row steps per iteration (default: until no cross-row move improves).
        rtol, resync_every, device, dtype, backend: as in :func:`swappass.refine_mask`.
        record_moves: keep every accepted move in ``info["moves"]`` (for tests): ``("swap", i, u, p, ΔL)`` and
            ``("cross", i, u, j, p, ΔL)``, in the order applied.

    Returns a :class:`RefineResult`: ``swaps`` counts intra-row swaps per row; ``info`` holds ``cross_moves``
    (total), ``cross_pruned`` / ``cross_restored`` (per row), ``converged`` and the backend.
    """
    pattern = parse_pattern(pattern)
    if not isinstance(pattern, UnstructuredSparsity):
        raise InputError(
            f"{name}: refine_unstructured needs an unstructured pattern such as 'unstructured:0.6', got {pattern}"
        )
    setup = work_setup(W, G, mask, pattern, max_iters, rtol=rtol, device=device, dtype=dtype, name=name)
    check_count(max_cross_steps, "max_cross_steps", name, optional=True)
    d_out, d_in = W.shape
    _, chunk = memory_plan(d_out, d_in, setup.device, setup.G.element_size(), d_out)
    search, used_backend = _search_for(resolve_backend(backend, setup.device), backend, pattern, setup.G, chunk)
    state = _LayerState(W, mask, setup, record_moves)
    converged = state.run(search, max_iters, max_cross_steps, resync_every)
    return state.result(W, mask, used_backend, converged)


class _LayerState:
    """The layer being refined: rows ``w``, mask ``keep``, ``c`` and row errors, and what the moves did."""

    def __init__(self, W: torch.Tensor, mask: torch.Tensor, setup: WorkSetup, record_moves: bool) -> None:
        self.setup, dev, G = setup, setup.device, setup.G
        self.w = W.to(device=dev, dtype=setup.dtype)
        self.keep = mask.to(dev).clone()
        self.c = (self.w * ~self.keep) @ G
        self.loss = ((self.w * ~self.keep) * self.c).sum(dim=1)
        self.gdiag = G.diagonal().contiguous()
        d_out = W.shape[0]
        self.swaps, self.pruned_x, self.restored_x = (torch.zeros(d_out, dtype=torch.long, device=dev)
                                                      for _ in range(3))
        self.log: list[tuple] | None = [] if record_moves else None
        self.iters = self.cross_steps = 0

    def run(self, search: SearchFn, max_iters: int, max_cross_steps: int | None, resync_every: int) -> bool:
        """Iterate until nothing improves (True) or ``max_iters`` iterations ran (False)."""
        G, d_out = self.setup.G, self.w.shape[0]
        active = torch.arange(d_out, device=self.setup.device)  # rows not known to be 1-swap optimal
        dirty = torch.zeros(d_out, dtype=torch.bool, device=self.setup.device)  # changed since the last resync
        while self.iters < max_iters:
            self.iters += 1
            swapped = active[:0]
            if active.numel():
                swapped, choice = swap_step(self.w, self.c, self.keep, self.loss, active, G, search, self.setup.rtol)
                self.swaps[swapped] += 1
                dirty[swapped] = True
                if self.log is not None:
                    _log_swaps(self.log, swapped, choice)
            touched, n_steps = _cross_phase(self.w, self.c, self.keep, self.loss, G, self.gdiag, self.setup.rtol,
                                            max_cross_steps, self.pruned_x, self.restored_x, self.log)
            self.cross_steps += n_steps
            dirty |= touched
            rerun = touched.clone()
            rerun[swapped] = True  # rows that swapped may improve again; rows that did not are 1-swap optimal
            active = rerun.nonzero().flatten()
            if active.numel() == 0:
                return True
            if resync_every and self.iters % resync_every == 0:
                resync_rows(self.w, self.keep, G, self.c, self.loss, dirty.nonzero().flatten())
                dirty[:] = False
        return False

    def result(self, W: torch.Tensor, mask: torch.Tensor, backend: str, converged: bool) -> RefineResult:
        """The outcome, with both per-row errors recomputed exactly from the masks."""
        dev, dt, G, target = self.setup.device, self.setup.dtype, self.setup.G, W.device
        info = {
            "backend": backend,
            "dtype": str(dt).replace("torch.", ""),
            "cross_moves": int(self.pruned_x.sum()),
            "cross_steps": self.cross_steps,
            "cross_pruned": self.pruned_x.to(target),
            "cross_restored": self.restored_x.to(target),
            "converged": converged,
        }
        if self.log is not None:
            info["moves"] = self.log
        return RefineResult(
            mask=self.keep.to(target),
            loss_before=layer_loss(W.to(dev), G, mask.to(dev), dtype=dt).to(target),
            loss_after=layer_loss(W.to(dev), G, self.keep, dtype=dt).to(target),
            swaps=self.swaps.to(target),
            iters=self.iters,
            info=info,
        )


def _log_swaps(log: list, rows: torch.Tensor, choice: SwapChoice) -> None:
    for r, u, p, d in zip(rows.tolist(), choice.u.tolist(), choice.p.tolist(), choice.delta.tolist()):
        log.append(("swap", r, u, p, d))


def _cross_phase(
    w: torch.Tensor,
    c: torch.Tensor,
    keep: torch.Tensor,
    loss: torch.Tensor,
    G: torch.Tensor,
    gdiag: torch.Tensor,
    rtol: float,
    max_steps: int | None,
    pruned_x: torch.Tensor,
    restored_x: torch.Tensor,
    log: list | None,
) -> tuple[torch.Tensor, int]:
    """Cross-row steps until none improves (or ``max_steps``). Returns (rows touched (bool, R), steps)."""
    R = w.shape[0]
    touched = torch.zeros(R, dtype=torch.bool, device=w.device)
    A, ua, B, pb = row_move_terms(w, c, keep, gdiag)
    steps = 0
    while max_steps is None or steps < max_steps:
        threshold = -rtol * float(loss.double().mean())
        moves = greedy_cross_moves(A, B, threshold)
        if not moves:
            break
        steps += 1
        i = torch.tensor([m[1] for m in moves], dtype=torch.long, device=w.device)
        j = torch.tensor([m[2] for m in moves], dtype=torch.long, device=w.device)
        u, p = ua[i], pb[j]
        if log is not None:
            for (d, ii, jj), uu, pp in zip(moves, u.tolist(), p.tolist()):
                log.append(("cross", ii, uu, jj, pp, d))
        keep[i, u] = False
        keep[j, p] = True
        c[i] += w[i, u][:, None] * G[u]
        c[j] -= w[j, p][:, None] * G[p]
        loss[i] += A[i]
        loss[j] += B[j]
        pruned_x[i] += 1
        restored_x[j] += 1
        rows = torch.cat([i, j])
        touched[rows] = True
        A[rows], ua[rows], B[rows], pb[rows] = row_move_terms(w[rows], c[rows], keep[rows], gdiag)
    return touched, steps
