"""The per-site pruning step: warm start, then exact 1-swap refinement, for weights sharing one Gram matrix.

:func:`prune_weights` is the one place where a layer's mask is chosen. The graph pass calls it once per Gram
group (q/k/v, gate/up …): every weight gets its own warm start, then the rows of all of them are refined in a
single :func:`swappass.refine_mask` call (the search kernels batch rows) and split again. Later methods that
change weights (refit) or need more statistics plug in here (``PruneResult.weight``, ``statistics``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

from .patterns import PatternLike, UnstructuredSparsity, parse_pattern
from .refine import layer_loss, refine_mask
from .warmstart import warm_start as warm_start_mask

__all__ = ["PruneResult", "prune_weights"]


@dataclass
class PruneResult:
    """Outcome for one weight.

    ``mask``: bool ``d_out × d_in``, True = keep. ``weight``: new values for the weight (``d_out × d_in``) when
    the method changes them, ``None`` when only the mask changes (SparseSwaps keeps the weights).
    ``loss_warm`` / ``loss_final``: layer error ``Σ_rows ((1−m)⊙w)ᵀ G ((1−m)⊙w)`` of the warm start and
    of the final mask. ``swaps``: accepted swaps over all rows. ``iters``: refinement iterations of the group.
    ``seconds``: warm-start time plus this weight's share (by rows) of the group's refinement time.
    """

    mask: torch.Tensor
    weight: torch.Tensor | None
    loss_warm: float
    loss_final: float
    swaps: int
    iters: int
    seconds: float
    info: dict = field(default_factory=dict)

    @property
    def relative_reduction(self) -> float:
        return 0.0 if self.loss_warm <= 0 else (self.loss_warm - self.loss_final) / self.loss_warm


@torch.no_grad()
def prune_weights(
    weights: Sequence[torch.Tensor],
    G: torch.Tensor,
    pattern: PatternLike,
    *,
    warm_start: str = "wanda",
    max_iters: int = 100,
    backend: str = "auto",
    device: torch.device | str | None = None,
    statistics: Mapping[str, object] | None = None,
    name: str = "layer",
    group: torch.distributed.ProcessGroup | None = None,
) -> list[PruneResult]:
    """Choose masks for weights that read the same inputs.

    Args:
        weights: each ``d_out_i × d_in`` (rows = output neurons), any float dtype (worked on in float32, or
            float64 if given so); not modified.
        G: the inputs' Gram matrix ``Σ x xᵀ`` (``d_in × d_in``, float32 or float64).
        pattern: per-row (``"0.6"``), N:M (``"2:4"``) or a layer budget (``"unstructured:0.6"``, refined per
            weight since every weight has its own budget).
        warm_start: ``"magnitude"``, ``"wanda"``, ``"ria"`` or ``"sparsegpt"`` (per weight).
        max_iters: 1-swap iterations per row (0 keeps the warm start).
        backend: search backend for :func:`swappass.refine_mask`.
        device: where the work runs (default: the first weight's device).
        statistics: everything the observer collected (``"G"``, ``"tokens"``, …) for methods that need more.
        name: names the weights in error messages.
        group: a ``torch.distributed`` process group to split the refinement's rows over its ranks (every rank
            calls this with the same arguments and gets the same result); see :func:`swappass.refine_mask`.

    Returns one :class:`PruneResult` per weight, masks on ``device``.
    """
    if not weights:
        return []
    pattern = parse_pattern(pattern)
    dev = torch.device(device) if device is not None else weights[0].device
    Gd = G.to(dev)
    Ws = [w.detach().to(dev, torch.float64 if w.dtype == torch.float64 else torch.float32) for w in weights]
    starts, warm_seconds = [], []
    for W in Ws:
        t0 = time.perf_counter()
        starts.append(warm_start_mask(W, Gd, pattern, warm_start))
        warm_seconds.append(time.perf_counter() - t0)

    if max_iters == 0:  # the warm start is the result
        out = []
        for W, start, secs in zip(Ws, starts, warm_seconds):
            t0 = time.perf_counter()
            loss = float(layer_loss(W, Gd, start).double().sum())
            out.append(PruneResult(start, None, loss, loss, 0, 0, secs + time.perf_counter() - t0))
        return out
    if isinstance(pattern, UnstructuredSparsity):  # a budget per weight: the rows of two weights must not mix
        parts = [(W, m, [W]) for W, m in zip(Ws, starts)]
    else:  # independent rows: one refinement over all of them
        parts = [(torch.cat(Ws), torch.cat(starts), Ws)]
    out: list[PruneResult] = []
    for W_all, start, members in parts:
        t0 = time.perf_counter()
        res = refine_mask(W_all, Gd, start, pattern, max_iters, backend=backend, name=name, group=group)
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
                seconds=warm_seconds[len(out)] + refine_seconds * W.shape[0] / W_all.shape[0],
                info=dict(res.info),
            ))
    return out
