"""DSnoT (Zhang et al., ICLR 2024; zyxxmu/DSnoT): training-free prune-and-grow mask refinement, a baseline.

DSnoT keeps each row's kept count and swaps one pruned weight in and one kept weight out per cycle so that the
*expected* output change ``ε_i = Σ_{j pruned} W_ij μ_j`` moves toward zero (DESIGN.md §6). It needs
:class:`~swappass.core.channelstats.ChannelStats` (``μ = mean_seq_sum``, ``var``, ``scaler_row``); G is only used to
report the layer error before and after. Per row, all rows in parallel, with ``D_ij = W_ij μ_j``:

1. ``ε = Σ_{pruned} D``, ``sign₀ = sign(ε)``.
2. Grow list: **all** inputs ranked ascending (stable) by ``D / var^p`` with kept inputs counted as 0
   (``p = pow_of_var_regrowing``, 1; ``p = 0`` skips the division, as the reference does).
   Per-row patterns: prune list = the kept inputs in ascending Wanda score (``|W| sqrt(scaler_row)``, stable),
   reordered to those with ``D < 0`` (ascending Wanda) followed by those with ``D > 0`` (descending Wanda);
   the reference's reordering arithmetic puts its first entry into the slots of ``D == 0`` entries, kept here.
3. At most ``max_cycle_time`` (50) cycles, while any row is active. Grow candidate: high end of the grow list if
   ``ε > 0`` else low end; per-row prune candidate: high end of the prune list if ``ε < 0`` else low end; each
   used pointer moves one step inward every cycle. N:M: the prune candidate is the kept input with the lowest
   initial score (``init_scores``, default Wanda) inside the grow candidate's M-block that has not been a prune
   candidate before. ``ε' = ε + D[prune] − D[grow]``; a row stays active while ``|ε| > update_threshold`` (0.1)
   and, with the sign check, ``sign(ε') = sign₀``; an active row swaps and sets ``ε = ε'``; an inactive row stays
   inactive. The sign check is off for per-row patterns (the reference's default ``--without_same_sign True``)
   and on for N:M (the reference's N:M branch always checks).

Deviations, only where the reference would change a row's kept count (it writes the mask without checking):
a cycle whose grow candidate is not currently pruned or whose prune candidate is not currently kept (a pointer
reaching the kept inputs' zero entries of the grow list, the repeated first entry of the prune list, pointers
crossing), or whose N:M block has no prune candidate left (the reference would take an arbitrary entry among
equal ``inf`` scores), leaves that row unchanged -- no swap, ``ε`` and activity kept -- and counts
in ``info["skipped"]``; a row whose pointer would leave its list becomes inactive (the reference would index out
of range, only possible when a list is shorter than the cycles run); inactive rows are never written.

Counts: DSnoT refines the mask it is given, so it keeps the warm start's counts (swappass's
``round(d_in (1 − s))`` per row; the reference's warm start prunes ``int(d_in · s)``).

The reference refines only attention projections by default (``skip_layer = "mlp"``): see :func:`dsnot_skips`.
"""
from __future__ import annotations

import torch

from ..core.channelstats import ChannelStats
from ..core.errors import InputError
from ..core.loss import layer_loss
from ..core.patterns import NMSparsity, PatternLike, RowSparsity, parse_pattern
from ..core.validate import check_count, check_layer
from ..core.workspace import work_dtype
from ..refine.result import RefineResult

__all__ = ["dsnot_refine", "dsnot_skips", "DSNOT_DEFAULTS"]

DSNOT_DEFAULTS = {
    "max_cycle_time": 50,
    "update_threshold": 0.1,
    "pow_of_var_regrowing": 1.0,
    "skip_layer": "mlp",
    "skip_sub_layer": "no_skip",
}


def dsnot_skips(site_name: str, skip_layer: str = "mlp", skip_sub_layer: str = "no_skip") -> bool:
    """Whether the reference leaves a site at its warm start (no DSnoT refinement).

    The reference tests ``name.split(".")[0] == skip_layer or name.split(".")[1] == skip_sub_layer`` on names
    relative to the decoder block (``"self_attn.q_proj"``, ``"mlp.down_proj"``). Here the last two components
    of ``site_name`` play those roles, so full paths (``"model.layers.3.mlp.down_proj"``) work too.
    ``skip_layer``: ``"mlp"`` (default), ``"self_attn"`` or ``"no_skip"``; ``skip_sub_layer``: a projection name
    (``"q_proj"``, ``"down_proj"``, ...) or ``"no_skip"`` (default). Sites whose parent module is not called
    ``mlp``/``self_attn`` (GPT-2's ``attn.c_attn``, OPT's ``fc1``) are refined unless named explicitly.
    """
    parts = site_name.split(".")
    parent = parts[-2] if len(parts) >= 2 else ""
    return parent == skip_layer or parts[-1] == skip_sub_layer


def _prune_list_positions(d_kept: torch.Tensor) -> torch.Tensor:
    """Positions into a Wanda-ascending kept list: ``D < 0`` ascending, then ``D > 0`` descending (R, L).

    Slots left between them (entries with ``D == 0``) hold position 0, as the reference's arithmetic gives.
    """
    R, L = d_kept.shape
    k = torch.arange(L, device=d_kept.device).expand(R, L)
    neg, pos = d_kept < 0, d_kept > 0
    negatives = torch.sort(torch.where(neg, k, L), dim=1).values
    positives = torch.sort(torch.where(pos, k, -1), dim=1, descending=True).values
    n_neg, n_pos = neg.sum(dim=1, keepdim=True), pos.sum(dim=1, keepdim=True)
    tail = k >= L - n_pos
    from_pos = positives.gather(1, (k - (L - n_pos)).clamp(min=0, max=L - 1))
    return torch.where(k < n_neg, negatives, 0) + torch.where(tail, from_pos, 0)


def _stat(stats: object, attr: str, d_in: int, dt: torch.dtype, dev: torch.device, name: str) -> torch.Tensor:
    try:
        v = getattr(stats, attr)
    except AttributeError:
        raise TypeError(f"{name}: stats must provide {attr!r} (use swappass.ChannelStats)") from None
    if tuple(v.shape) != (d_in,):
        raise InputError(f"{name}: stats.{attr} has shape {tuple(v.shape)}, expected ({d_in},)")
    return v.to(device=dev, dtype=dt)


@torch.no_grad()
def dsnot_refine(
    W: torch.Tensor,
    G: torch.Tensor,
    mask: torch.Tensor,
    stats: ChannelStats,
    pattern: PatternLike,
    *,
    init_scores: torch.Tensor | None = None,
    max_cycle_time: int = 50,
    update_threshold: float = 0.1,
    pow_of_var_regrowing: float = 1.0,
    sign_check: bool | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    name: str = "layer",
) -> RefineResult:
    """Refine ``mask`` (bool, True = keep, feasible for ``pattern``) of ``W`` (``d_out × d_in``) with DSnoT.

    Args:
        G: ``d_in × d_in`` Gram matrix, only for ``loss_before`` / ``loss_after``.
        stats: a :class:`~swappass.ChannelStats` of the same inputs (``mean_seq_sum``, ``var``, ``scaler_row``).
        pattern: per-row (``"0.6"``) or N:M (``"2:4"``).
        init_scores: N:M only -- the warm start's scores (``d_out × d_in``, higher = more important) that pick
            the prune candidate inside a block; default Wanda's ``|W| sqrt(scaler_row)``.
        max_cycle_time, update_threshold, pow_of_var_regrowing: the reference's defaults 50, 0.1, 1.
        sign_check: default off for per-row patterns, on for N:M (module docstring).

    Returns a :class:`~swappass.RefineResult` (``swaps``: accepted swaps per row, ``iters``: cycles run;
    ``info["skipped"]``: row-cycles left unchanged to keep the counts).
    """
    pattern = parse_pattern(pattern)
    if not isinstance(pattern, (RowSparsity, NMSparsity)):
        raise TypeError(f"{name}: DSnoT refines per-row and N:M masks (fixed count per row), got pattern {pattern}")
    check_layer(W, G, mask, pattern, name=name)
    check_count(max_cycle_time, "max_cycle_time", name)
    sign_check = isinstance(pattern, NMSparsity) if sign_check is None else bool(sign_check)
    dev = torch.device(device) if device is not None else W.device
    dt = work_dtype(W, G, dtype=dtype)
    w = W.to(device=dev, dtype=dt)
    state = _Cycles(w, mask.to(dev), stats, pattern, init_scores, pow_of_var_regrowing, name)
    cycles = 0
    while cycles < max_cycle_time and bool(state.active.any()):
        cycles += 1
        state.cycle(update_threshold, sign_check)
    Gd = G.to(device=dev, dtype=dt)
    target = W.device
    return RefineResult(
        mask=state.keep.to(target),
        loss_before=layer_loss(w, Gd, mask.to(dev), dtype=dt).to(target),
        loss_after=layer_loss(w, Gd, state.keep, dtype=dt).to(target),
        swaps=state.swaps.to(target),
        iters=cycles,
        info={
            "method": "dsnot",
            "skipped": state.skipped,
            "sign_check": sign_check,
            "final_eps": state.eps.to(target),
            "dtype": str(dt).replace("torch.", ""),
        },
    )


class _Cycles:
    """DSnoT's per-row state (module docstring, steps 1-3): the lists, their pointers, ``ε`` and activity."""

    def __init__(self, w: torch.Tensor, keep: torch.Tensor, stats: ChannelStats, pattern, init_scores, power: float,
                 name: str) -> None:
        d_out, d_in = w.shape
        dev, dt = w.device, w.dtype
        mu, var, scaler = (_stat(stats, a, d_in, dt, dev, name) for a in ("mean_seq_sum", "var", "scaler_row"))
        self.pattern, self.d_in = pattern, d_in
        self.keep = keep.clone()
        self.rows = torch.arange(d_out, device=dev)
        self.D = w * mu[None, :]
        grow_metric = torch.where(self.keep, torch.zeros((), dtype=dt, device=dev), self.D)
        self.eps = grow_metric.sum(dim=1)
        self.sign0 = torch.sign(self.eps)
        if power:
            grow_metric = grow_metric / var.pow(power)[None, :]
        self.grow_list = torch.sort(grow_metric, dim=1, stable=True).indices
        self.g_lo = torch.zeros(d_out, dtype=torch.long, device=dev)
        self.g_hi = torch.full((d_out,), d_in - 1, dtype=torch.long, device=dev)
        wanda = w.abs() * scaler.sqrt()[None, :]
        if isinstance(pattern, NMSparsity):
            self._init_nm(init_scores if init_scores is not None else wanda, name)
        else:
            self._init_rows(wanda)
        self.active = torch.ones(d_out, dtype=torch.bool, device=dev)
        self.swaps = torch.zeros(d_out, dtype=torch.long, device=dev)
        self.skipped = 0

    def _init_nm(self, init_scores: torch.Tensor, name: str) -> None:
        d_out, d_in = self.D.shape
        if tuple(init_scores.shape) != (d_out, d_in):
            raise InputError(f"{name}: init_scores has shape {tuple(init_scores.shape)}, expected {(d_out, d_in)}")
        self.inf = torch.tensor(float("inf"), dtype=self.D.dtype, device=self.D.device)
        scores = init_scores.to(device=self.D.device, dtype=self.D.dtype)
        self.candidates = torch.where(self.keep, scores, self.inf)  # inf: never a prune candidate
        self.offsets = torch.arange(self.pattern.m, device=self.D.device)

    def _init_rows(self, wanda: torch.Tensor) -> None:
        d_out, d_in = self.D.shape
        self.k = k = self.pattern.kept_per_row(d_in)
        kept_by_wanda = torch.sort(torch.where(self.keep, wanda, float("inf")), dim=1, stable=True).indices[:, :k]
        self.prune_list = kept_by_wanda.gather(1, _prune_list_positions(self.D.gather(1, kept_by_wanda)))
        self.p_lo = torch.zeros(d_out, dtype=torch.long, device=self.D.device)
        self.p_hi = torch.full((d_out,), k - 1, dtype=torch.long, device=self.D.device)

    def _grow_candidates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's grow candidate and whether its pointer is inside the list; the pointers move."""
        use_hi = self.eps > 0
        ptr = torch.where(use_hi, self.g_hi, self.g_lo)
        in_range = (ptr >= 0) & (ptr < self.d_in)
        grow = self.grow_list.gather(1, ptr.clamp(0, self.d_in - 1)[:, None])[:, 0]
        self.g_hi, self.g_lo = self.g_hi - use_hi.long(), self.g_lo + (~use_hi).long()
        return grow, in_range

    def _prune_candidates(self, grow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Each row's prune candidate, whether its pointer is inside the list, and (N:M) whether its block has no
        candidate left."""
        if isinstance(self.pattern, NMSparsity):
            cols = (grow - grow % self.pattern.m)[:, None] + self.offsets[None, :]
            best, at = self.candidates.gather(1, cols).min(dim=1, keepdim=True)
            prune = cols.gather(1, at)[:, 0]
            self.candidates[self.rows, prune] = self.inf
            return prune, torch.ones_like(self.active), torch.isinf(best[:, 0])
        use_hi = self.eps < 0
        ptr = torch.where(use_hi, self.p_hi, self.p_lo)
        in_range = (ptr >= 0) & (ptr < self.k)
        prune = self.prune_list.gather(1, ptr.clamp(0, self.k - 1)[:, None])[:, 0]
        self.p_hi, self.p_lo = self.p_hi - use_hi.long(), self.p_lo + (~use_hi).long()
        return prune, in_range, None

    def cycle(self, update_threshold: float, sign_check: bool) -> None:
        """One cycle in every row (module docstring, step 3)."""
        rows = self.rows
        grow, in_range = self._grow_candidates()
        prune, prune_in_range, exhausted = self._prune_candidates(grow)
        in_range &= prune_in_range
        eps_after = self.eps + self.D[rows, prune] - self.D[rows, grow]
        go = self.active & (self.eps.abs() > update_threshold)
        if sign_check:
            go &= torch.sign(eps_after) == self.sign0
        valid = self.keep[rows, prune] & ~self.keep[rows, grow]
        if exhausted is not None:
            valid &= ~exhausted
        self.skipped += int((self.active & in_range & ~valid).sum())
        self.active = torch.where(valid, go, self.active) & in_range
        swap = self.active & valid
        self.keep[rows[swap], prune[swap]] = False
        self.keep[rows[swap], grow[swap]] = True
        self.eps = torch.where(swap, eps_after, self.eps)
        self.swaps += swap.long()
