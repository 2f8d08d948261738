"""The per-site pruning step: warm start → mask refinement → optional weight refit, for weights sharing one G.

:func:`prune_weights` is the one place where a layer's mask (and, for weight-changing methods, its new weights)
is chosen. The graph pass calls it once per Gram group (q/k/v, gate/up …). Each step is a dispatch over its
method:

* **warm start** (``warm_start``): ``"magnitude"``, ``"wanda"``, ``"ria"`` (a score, then the best ``k`` per
  row / per M-block / over the layer) or ``"sparsegpt"`` (one :func:`~swappass.sparsegpt_prune` call per weight;
  its mask projected to the pattern; the call's result is kept for ``refit="sparsegpt"``).
* **refinement** (``refine``): ``"swaps"`` -- SparseSwaps, exact 1-swaps (the rows of all weights of the group
  in one :func:`~swappass.refine_mask` call; an unstructured budget per weight, with cross-row moves);
  ``"dsnot"`` -- the DSnoT baseline, per weight, from :class:`~swappass.ChannelStats` (sites that the reference
  skips, :func:`~swappass.dsnot_skips` with ``skip_layer="mlp"``, keep their warm start, noted in the result);
  ``"none"`` -- the warm start is the result.
* **refit** (``refit``): ``"none"`` (mask only); ``"lstsq"`` -- damped least squares on the kept weights
  (:func:`~swappass.refit_weights`, 1% of mean diag G); ``"sparsegpt"`` -- SparseGPT's own OBS-updated weights
  (the SparseGPT baseline: ``warm_start="sparsegpt"``, ``refine="none"``).

:func:`swappass.methods.options.check_prune_options` rejects the combinations that do not make sense, naming
what to change.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

from ..core.errors import InputError
from ..core.loss import layer_loss, relative_reduction
from ..core.patterns import (
    NMSparsity,
    PatternLike,
    SparsityPattern,
    UnstructuredSparsity,
    parse_pattern,
)
from ..core.selection import mask_from_scores, project_mask
from ..core.validate import check_layer
from ..refine.mask import refine_mask
from ..refine.result import RefineResult
from .alternation import swaps_between_refits
from .dsnot import dsnot_refine, dsnot_skips
from .options import REFIT_DAMPING, check_prune_options
from .refit import refit_weights
from .sparsegpt import SparseGPTResult, sparsegpt_prune
from .warmstart import warm_start_scores

__all__ = ["PruneResult", "prune_weights"]


@dataclass
class PruneResult:
    """Outcome for one weight.

    ``mask``: bool ``d_out × d_in``, True = keep. ``weight``: new values for the weight (``d_out × d_in``, exactly
    zero where the mask is False) when the refit changes them, ``None`` when only the mask changes.
    ``loss_warm`` / ``loss_final``: mask-only layer error ``Σ_rows ((1−m)⊙w)ᵀ G ((1−m)⊙w)`` of the warm start and
    of the final mask. ``loss_refit``: error ``Σ_rows (w − w')ᵀ G (w − w')`` of the written weights ``w'`` (NaN
    without refit). ``swaps``: accepted swaps over all rows (SparseSwaps or DSnoT). ``iters``: refinement
    iterations (DSnoT: cycles) of the call. ``seconds``: warm start, this weight's share (by rows) of the
    group's refinement, and refit. ``refine`` / ``refit``: the methods that ran (``"none"`` for a site DSnoT
    skips); ``note`` says why a method did not run. ``info``: the refinement's info (``cross_moves`` …).
    """

    mask: torch.Tensor
    weight: torch.Tensor | None
    loss_warm: float
    loss_final: float
    swaps: int
    iters: int
    seconds: float
    info: dict = field(default_factory=dict)
    loss_refit: float = math.nan
    refine: str = "swaps"
    refit: str = "none"
    note: str = ""

    @property
    def relative_reduction(self) -> float:
        return relative_reduction(self.loss_warm, self.loss_final)


@dataclass
class _WarmStart:
    mask: torch.Tensor
    scores: torch.Tensor | None  # the method's scores (higher = keep); DSnoT's N:M prune candidates use them
    sparsegpt: SparseGPTResult | None
    seconds: float


# ------------------------------------------------------------------------------------------------ warm start
def _warm_start(
    W: torch.Tensor, G: torch.Tensor, pattern: SparsityPattern, method: str, n_samples: int | None, name: str
) -> _WarmStart:
    t0 = time.perf_counter()
    check_layer(W, G, name=name)
    if method == "sparsegpt":
        res = sparsegpt_prune(W, G, pattern, blocksize=128, percdamp=0.01, n_samples=n_samples, name=name)
        mask = project_mask(res.mask, res.scores, pattern)
        return _WarmStart(mask, res.scores, res, time.perf_counter() - t0)
    scores = warm_start_scores(W, G, method)
    return _WarmStart(mask_from_scores(scores, pattern), scores, None, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------------ refinement
def _keep_warm(W: torch.Tensor, G: torch.Tensor, start: _WarmStart, refine: str, note: str = "") -> PruneResult:
    """The warm start as the result; ``refine`` is the label the result carries (``"swaps"`` with 0 iterations)."""
    t0 = time.perf_counter()
    loss = float(layer_loss(W, G, start.mask).double().sum())
    secs = start.seconds + time.perf_counter() - t0
    return PruneResult(start.mask, None, loss, loss, 0, 0, secs, refine=refine, note=note)


def _refine_swaps(
    Ws: list[torch.Tensor], G: torch.Tensor, starts: list[_WarmStart], pattern: SparsityPattern,
    max_iters: int, backend: str, name: str, group: torch.distributed.ProcessGroup | None = None,
    refit_rounds: int = 1,
) -> list[PruneResult]:
    if isinstance(pattern, UnstructuredSparsity):  # a budget per weight: the rows of two weights must not mix
        parts = [(W, s.mask, [W]) for W, s in zip(Ws, starts)]
    else:  # independent rows: one refinement over all of them
        parts = [(torch.cat(Ws), torch.cat([s.mask for s in starts]), Ws)]
    out: list[PruneResult] = []
    for W_all, start, members in parts:
        t0 = time.perf_counter()
        res = refine_mask(W_all, G, start, pattern, max_iters, backend=backend, name=name, group=group)
        if refit_rounds > 1:  # swaps and refits alternated (methods/alternation.py); the caller refits last
            mask, swaps, iters = swaps_between_refits(W_all, G, res, pattern, refit_rounds, max_iters, REFIT_DAMPING,
                                                      backend=backend, name=name, group=group)
            res = RefineResult(mask, res.loss_before, layer_loss(W_all, G, mask), swaps, iters, res.info)
        refine_seconds = time.perf_counter() - t0
        r0 = 0
        for W in members:
            rows = slice(r0, r0 + W.shape[0])
            r0 += W.shape[0]
            out.append(PruneResult(
                mask=res.mask[rows],
                weight=None,
                loss_warm=float(res.loss_before[rows].double().sum()),
                loss_final=float(res.loss_after[rows].double().sum()),
                swaps=int(res.swaps[rows].sum()),
                iters=res.iters,
                seconds=starts[len(out)].seconds + refine_seconds * W.shape[0] / W_all.shape[0],
                info=dict(res.info),
                refine="swaps",
            ))
    return out


def _refine_dsnot(
    W: torch.Tensor, G: torch.Tensor, start: _WarmStart, pattern: SparsityPattern, method: str,
    statistics: Mapping[str, object], site: str, skip_layer: str,
) -> PruneResult:
    if dsnot_skips(site, skip_layer=skip_layer):
        return _keep_warm(W, G, start, "none", note=f"DSnoT skip_layer={skip_layer!r}: kept at the {method} warm start")
    stats = statistics.get("channel_stats")
    if stats is None:
        raise InputError(f"{site}: refine='dsnot' needs the inputs' swappass.ChannelStats in statistics"
                         f"['channel_stats']; sparsify/prepare collect them with refine='dsnot' (a custom observer "
                         f"must provide them too)")
    # N:M prune candidates come from the warm start's own scores (DSnoT's default is Wanda's)
    init = start.scores if isinstance(pattern, NMSparsity) and method != "wanda" else None
    t0 = time.perf_counter()
    res = dsnot_refine(W, G, start.mask, stats, pattern, init_scores=init, name=site)
    return PruneResult(
        mask=res.mask, weight=None, loss_warm=res.total_before, loss_final=res.total_after,
        swaps=int(res.swaps.sum()), iters=res.iters, seconds=start.seconds + time.perf_counter() - t0,
        info={k: v for k, v in res.info.items() if k != "final_eps"}, refine="dsnot",
    )


# ------------------------------------------------------------------------------------------------ refit
def _refit(W: torch.Tensor, G: torch.Tensor, start: _WarmStart, res: PruneResult, refit: str, site: str) -> None:
    """Fill ``res.weight`` / ``res.loss_refit`` for the final mask (in place)."""
    t0 = time.perf_counter()
    if refit == "lstsq":
        fit = refit_weights(W, G, res.mask, damping=REFIT_DAMPING, name=site)
        res.weight, res.loss_refit = fit.weight, fit.total_after
    elif refit == "sparsegpt":
        sg = start.sparsegpt
        if sg is None or not torch.equal(sg.mask, res.mask):
            raise RuntimeError(f"{site}: SparseGPT's weight update needs its own mask as the final mask")
        res.weight, res.loss_refit = sg.weight, float(sg.loss.double().sum())
    else:
        return
    res.refit = refit
    res.seconds += time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------ the step
@torch.no_grad()
def prune_weights(
    weights: Sequence[torch.Tensor],
    G: torch.Tensor,
    pattern: PatternLike,
    *,
    warm_start: str = "wanda",
    refine: str = "swaps",
    refit: bool | str = False,
    max_iters: int = 100,
    backend: str = "auto",
    device: torch.device | str | None = None,
    statistics: Mapping[str, object] | None = None,
    name: str = "layer",
    names: Sequence[str] | None = None,
    dsnot_skip_layer: str = "mlp",
    group: torch.distributed.ProcessGroup | None = None,
    refit_rounds: int = 1,
) -> list[PruneResult]:
    """Choose masks (and with a refit, new weights) for weights that read the same inputs.

    Args:
        weights: each ``d_out_i × d_in`` (rows = output neurons), any float dtype (worked on in float32, or
            float64 if given so); not modified.
        G: the inputs' Gram matrix ``Σ x xᵀ`` (``d_in × d_in``, float32 or float64).
        pattern: per-row (``"0.6"``), N:M (``"2:4"``) or a layer budget (``"unstructured:0.6"``, one budget per
            weight).
        warm_start: ``"magnitude"``, ``"wanda"``, ``"ria"`` or ``"sparsegpt"`` (per weight).
        refine: ``"swaps"`` (SparseSwaps), ``"dsnot"`` (DSnoT; needs ``statistics["channel_stats"]``) or
            ``"none"``.
        refit: ``False`` / ``"none"``, ``True`` / ``"lstsq"`` or ``"sparsegpt"`` (module docstring).
        max_iters: 1-swap iterations per row for ``refine="swaps"`` (0 keeps the warm start).
        backend: search backend for :func:`swappass.refine_mask`.
        device: where the work runs (default: the first weight's device).
        statistics: everything the observer collected: ``"G"``, ``"tokens"``, ``"sequences"`` (SparseGPT's
            ``n_samples``), ``"channel_stats"`` (DSnoT).
        name: names the group in error messages; ``names``: the weights' site names (DSnoT's skip rule and
            messages; default ``name[i]``). dsnot_skip_layer: DSnoT's ``skip_layer`` (``"mlp"``, the reference's
            default, ``"self_attn"`` or ``"no_skip"``).
        group: a ``torch.distributed`` process group to split the swap refinement's rows over its ranks (every
            rank calls this with the same arguments and gets the same result); see :func:`swappass.refine_mask`.
            Warm starts, DSnoT and refits run in full on every rank.
        refit_rounds: with ``refine="swaps"`` and ``refit="lstsq"``: 1 (default) refines the mask, then refits;
            R > 1 alternates refit and swaps R − 1 times more before the last refit
            (:mod:`swappass.methods.alternation`).

    Returns one :class:`PruneResult` per weight, masks and weights on ``device``.
    """
    refit = check_prune_options(pattern, warm_start, refine, refit, max_iters, refit_rounds)
    if not weights:
        return []
    pattern = parse_pattern(pattern)
    names = list(names) if names is not None else [f"{name}[{i}]" for i in range(len(weights))]
    if len(names) != len(weights):
        raise InputError(f"{name}: {len(names)} names for {len(weights)} weights")
    statistics = statistics or {}
    dev = torch.device(device) if device is not None else weights[0].device
    Gd = G.to(dev)
    Ws = [w.detach().to(dev, torch.float64 if w.dtype == torch.float64 else torch.float32) for w in weights]
    n_samples = statistics.get("sequences")
    starts = [_warm_start(W, Gd, pattern, warm_start, n_samples, n) for W, n in zip(Ws, names)]

    if refine == "swaps" and max_iters > 0:
        results = _refine_swaps(Ws, Gd, starts, pattern, max_iters, backend, name, group, refit_rounds)
    elif refine == "dsnot":
        results = [_refine_dsnot(W, Gd, s, pattern, warm_start, statistics, n, dsnot_skip_layer)
                   for W, s, n in zip(Ws, starts, names)]
    else:  # refine="none", or no swap iterations
        results = [_keep_warm(W, Gd, s, refine) for W, s in zip(Ws, starts)]
    for W, start, res, n in zip(Ws, starts, results, names):
        _refit(W, Gd, start, res, refit, n)
    return results
