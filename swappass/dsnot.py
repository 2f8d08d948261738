"""DSnoT (Zhang et al., ICLR 2024; zyxxmu/DSnoT): training-free prune-and-grow mask refinement, a baseline.

DSnoT keeps each row's kept count and swaps one pruned weight in and one kept weight out per cycle so that the
*expected* output change ``ε_i = Σ_{j pruned} W_ij μ_j`` moves toward zero (DESIGN.md §6). It needs
:class:`~swappass.channelstats.ChannelStats` (``μ = mean_seq_sum``, ``var``, ``scaler_row``); G is only used to
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

from .patterns import NMSparsity, PatternLike, RowSparsity, parse_pattern
from .refine import RefineResult, _work_dtype, layer_loss
from .validate import check_layer

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
        raise ValueError(f"{name}: stats.{attr} has shape {tuple(v.shape)}, expected ({d_in},)")
    return v.to(device=dev, dtype=dt)


@torch.no_grad()
def dsnot_refine(
    W: torch.Tensor,
    G: torch.Tensor,
    mask: torch.Tensor,
    stats: object,
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
    if isinstance(max_cycle_time, bool) or not isinstance(max_cycle_time, int) or max_cycle_time < 0:
        raise ValueError(f"{name}: max_cycle_time must be a non-negative integer, got {max_cycle_time!r}")
    nm = isinstance(pattern, NMSparsity)
    sign_check = nm if sign_check is None else bool(sign_check)
    dev = torch.device(device) if device is not None else W.device
    dt = _work_dtype(W, G, dtype=dtype)
    d_out, d_in = W.shape
    mu = _stat(stats, "mean_seq_sum", d_in, dt, dev, name)
    var = _stat(stats, "var", d_in, dt, dev, name)
    scaler = _stat(stats, "scaler_row", d_in, dt, dev, name)

    w = W.to(device=dev, dtype=dt)
    keep = mask.to(dev).clone()
    D = w * mu[None, :]
    wanda = w.abs() * scaler.sqrt()[None, :]
    rows = torch.arange(d_out, device=dev)

    grow_metric = torch.where(keep, torch.zeros((), dtype=dt, device=dev), D)
    eps = grow_metric.sum(dim=1)
    sign0 = torch.sign(eps)
    if pow_of_var_regrowing:
        grow_metric = grow_metric / var.pow(pow_of_var_regrowing)[None, :]
    grow_list = torch.sort(grow_metric, dim=1, stable=True).indices
    g_lo = torch.zeros(d_out, dtype=torch.long, device=dev)
    g_hi = torch.full((d_out,), d_in - 1, dtype=torch.long, device=dev)

    if nm:
        if init_scores is None:
            init_scores = wanda
        elif tuple(init_scores.shape) != (d_out, d_in):
            raise ValueError(f"{name}: init_scores has shape {tuple(init_scores.shape)}, expected {(d_out, d_in)}")
        inf = torch.tensor(float("inf"), dtype=dt, device=dev)
        candidates = torch.where(keep, init_scores.to(device=dev, dtype=dt), inf)  # inf: never a prune candidate
        offsets = torch.arange(pattern.m, device=dev)
    else:
        k = pattern.kept_per_row(d_in)
        kept_by_wanda = torch.sort(torch.where(keep, wanda, float("inf")), dim=1, stable=True).indices[:, :k]
        prune_list = kept_by_wanda.gather(1, _prune_list_positions(D.gather(1, kept_by_wanda)))
        p_lo = torch.zeros(d_out, dtype=torch.long, device=dev)
        p_hi = torch.full((d_out,), k - 1, dtype=torch.long, device=dev)

    active = torch.ones(d_out, dtype=torch.bool, device=dev)
    swaps = torch.zeros(d_out, dtype=torch.long, device=dev)
    skipped = 0
    cycles = 0
    while cycles < max_cycle_time and bool(active.any()):
        cycles += 1
        use_hi = eps > 0
        g_ptr = torch.where(use_hi, g_hi, g_lo)
        in_range = (g_ptr >= 0) & (g_ptr < d_in)
        grow = grow_list.gather(1, g_ptr.clamp(0, d_in - 1)[:, None])[:, 0]
        g_hi, g_lo = g_hi - use_hi.long(), g_lo + (~use_hi).long()
        if nm:
            block = grow - grow % pattern.m
            cols = block[:, None] + offsets[None, :]
            best, at = candidates.gather(1, cols).min(dim=1, keepdim=True)
            prune = cols.gather(1, at)[:, 0]
            exhausted = torch.isinf(best[:, 0])
            candidates[rows, prune] = inf
        else:
            p_use_hi = eps < 0
            p_ptr = torch.where(p_use_hi, p_hi, p_lo)
            in_range &= (p_ptr >= 0) & (p_ptr < k)
            prune = prune_list.gather(1, p_ptr.clamp(0, k - 1)[:, None])[:, 0]
            p_hi, p_lo = p_hi - p_use_hi.long(), p_lo + (~p_use_hi).long()
        eps_after = eps + D[rows, prune] - D[rows, grow]
        go = active & (eps.abs() > update_threshold)
        if sign_check:
            go &= torch.sign(eps_after) == sign0
        valid = keep[rows, prune] & ~keep[rows, grow]
        if nm:
            valid &= ~exhausted
        skipped += int((active & in_range & ~valid).sum())
        active = torch.where(valid, go, active) & in_range
        swap = active & valid
        keep[rows[swap], prune[swap]] = False
        keep[rows[swap], grow[swap]] = True
        eps = torch.where(swap, eps_after, eps)
        swaps += swap.long()

    Gd = G.to(device=dev, dtype=dt)
    target = W.device
    return RefineResult(
        mask=keep.to(target),
        loss_before=layer_loss(w, Gd, mask.to(dev), dtype=dt).to(target),
        loss_after=layer_loss(w, Gd, keep, dtype=dt).to(target),
        swaps=swaps.to(target),
        iters=cycles,
        info={
            "method": "dsnot",
            "skipped": skipped,
            "sign_check": sign_check,
            "final_eps": eps.to(target),
            "dtype": str(dt).replace("torch.", ""),
        },
    )
