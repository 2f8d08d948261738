"""Warm-start masks: a per-weight score, then the best ``k`` per row (or ``n`` per M-block) are kept.

Scores (``W`` is ``d_out × d_in``, ``G`` the input Gram matrix, ``||X_j||₂ = sqrt(G_jj)``):

* ``magnitude``: ``|W_ij|``
* ``wanda``: ``|W_ij| · ||X_j||₂``
* ``ria``: ``(|W_ij| / Σ_k |W_kj| + |W_ij| / Σ_k |W_ik|) · ||X_j||₂^0.5`` (relative importance and activations)

Ties follow Wanda's convention: scores are sorted ascending with a stable sort and the lowest are pruned,
so among equal scores the lower input index is pruned first. The result is always feasible for the pattern.

Counts: every method here uses the swappass pattern counts, so that all comparisons are at equal sparsity.
A per-row pattern keeps ``round(d_in·(1 − s))`` per row; the reference Wanda code (locuslab/wanda) prunes
``int(d_in·s)`` per row instead, which can keep one weight more (``d_in = 576, s = 0.6``: 231 vs 230 here).
An unstructured budget (``"unstructured:0.6"``) ranks the whole layer at once and keeps
``round(d_out·d_in·(1 − s))``; among equal scores the lower flat (row-major) index is pruned first.

``method="sparsegpt"`` runs :func:`swappass.methods.sparsegpt.sparsegpt_warm_start` (SparseGPT's mask, projected to the
pattern); it has no fixed score function, so :func:`warm_start_scores` does not offer it.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..core.errors import InputError
from ..core.patterns import PatternLike, parse_pattern
from ..core.selection import mask_from_scores
from ..core.validate import check_layer
from .sparsegpt import sparsegpt_warm_start

__all__ = ["warm_start", "warm_start_scores", "WARM_STARTS"]

RIA_ALPHA = 0.5


def _magnitude(W: torch.Tensor, G: torch.Tensor | None) -> torch.Tensor:
    return W.abs()


def _input_norms(W: torch.Tensor, G: torch.Tensor | None, method: str) -> torch.Tensor:
    if G is None:
        raise InputError(f"warm start {method!r} needs the Gram matrix G of the layer inputs")
    return G.diagonal().to(W.dtype).clamp_min(0).sqrt()


def _wanda(W: torch.Tensor, G: torch.Tensor | None) -> torch.Tensor:
    return W.abs() * _input_norms(W, G, "wanda")[None, :]


def _ria(W: torch.Tensor, G: torch.Tensor | None) -> torch.Tensor:
    A = W.abs()
    tiny = torch.finfo(A.dtype).tiny
    relative = A / A.sum(dim=0, keepdim=True).clamp_min(tiny) + A / A.sum(dim=1, keepdim=True).clamp_min(tiny)
    return relative * _input_norms(W, G, "ria")[None, :].pow(RIA_ALPHA)


WARM_STARTS: dict[str, Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]] = {
    "magnitude": _magnitude,
    "wanda": _wanda,
    "ria": _ria,
}


def warm_start_scores(W: torch.Tensor, G: torch.Tensor | None, method: str = "wanda") -> torch.Tensor:
    """Per-weight importance scores (``d_out × d_in``, float); higher = more important."""
    try:
        fn = WARM_STARTS[method]
    except KeyError:
        if method == "sparsegpt":
            raise InputError(
                "warm start 'sparsegpt' has no fixed score function; its selection scores are "
                "sparsegpt_prune(...).scores"
            ) from None
        raise InputError(
            f"unknown warm start {method!r}; choose one of {sorted(WARM_STARTS)} (warm_start also takes 'sparsegpt')"
        ) from None
    Wf = W.detach().float() if W.dtype not in (torch.float32, torch.float64) else W.detach()
    return fn(Wf, G)


def warm_start(
    W: torch.Tensor, G: torch.Tensor | None, pattern: PatternLike = "0.5", method: str = "wanda"
) -> torch.Tensor:
    """Warm-start mask for ``W`` (``d_out × d_in``) from ``G`` (``d_in × d_in``; unused by ``magnitude``).

    ``method``: ``"magnitude"``, ``"wanda"``, ``"ria"`` or ``"sparsegpt"`` (SparseGPT's mask projected to the
    pattern, see :func:`swappass.methods.sparsegpt.sparsegpt_warm_start`). Returns a bool mask shaped like ``W``,
    True = keep, feasible for ``pattern``.
    """
    pattern = parse_pattern(pattern)
    if method == "sparsegpt":
        return sparsegpt_warm_start(W, G, pattern)
    check_layer(W, G, allow_missing_G=(method == "magnitude"))
    return mask_from_scores(warm_start_scores(W, G, method), pattern)
