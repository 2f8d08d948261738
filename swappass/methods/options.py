"""The pruning methods a pass can combine, and which combinations make sense (checked before any work).

A site is pruned in three steps (:func:`swappass.methods.prune_step.prune_weights`): a warm start
(:data:`WARM_START_METHODS`), a refinement of its mask (:data:`REFINE_METHODS`) and a refit of the kept weights
(:data:`REFIT_METHODS`). :func:`check_prune_options` rejects an unknown method or an invalid combination, naming
what to change.
"""
from __future__ import annotations

from ..core.errors import InputError
from ..core.patterns import (
    PatternLike,
    RowSparsity,
    SparsityPattern,
    UnstructuredSparsity,
    parse_pattern,
)
from ..core.validate import check_count
from .warmstart import WARM_STARTS

__all__ = ["check_prune_options", "normalize_refit", "WARM_START_METHODS", "REFINE_METHODS", "REFIT_METHODS",
           "REFIT_DAMPING"]

WARM_START_METHODS = (*sorted(WARM_STARTS), "sparsegpt")
REFINE_METHODS = ("swaps", "dsnot", "none")  # the default first
REFIT_METHODS = ("none", "lstsq", "sparsegpt")  # the default first
REFIT_DAMPING = 0.01  # λ = 1% of mean diag G, SparseGPT's percdamp


def normalize_refit(refit: bool | str | None) -> str:
    """``"none"``, ``"lstsq"`` or ``"sparsegpt"`` for the accepted spellings (False/None, True, the names)."""
    if refit is False or refit is None or refit == "none":
        return "none"
    if refit is True or refit == "lstsq":
        return "lstsq"
    if refit == "sparsegpt":
        return "sparsegpt"
    raise InputError(f"unknown refit {refit!r}; choose False (mask only), True or 'lstsq' (damped least squares on the "
                     f"kept weights) or 'sparsegpt' (SparseGPT's own weight update)")


def check_prune_options(
    pattern: PatternLike, warm_start: str, refine: str = "swaps", refit: bool | str = False, max_iters: int = 100,
    refit_rounds: int = 1,
) -> str:
    """Raise :class:`InputError` for an unknown method or an invalid combination; returns the refit method's name.

    Valid: any warm start × ``refine`` in ``("swaps", "dsnot", "none")`` × ``refit`` in ``(False, "lstsq")``,
    except DSnoT under an unstructured budget; ``refit="sparsegpt"`` only as the SparseGPT baseline
    (``warm_start="sparsegpt"``, ``refine="none"``, an N:M or unstructured pattern); ``refit_rounds > 1`` (swaps
    and refits alternated) only with ``refine="swaps"``, ``refit="lstsq"`` and a per-row or N:M pattern.
    """
    pattern = parse_pattern(pattern)
    if warm_start not in WARM_START_METHODS:
        raise InputError(f"unknown warm start {warm_start!r}; choose one of {list(WARM_START_METHODS)}")
    if refine not in REFINE_METHODS:
        raise InputError(f"unknown refine {refine!r}; choose 'swaps' (SparseSwaps), 'dsnot' (the DSnoT baseline) or "
                         f"'none' (keep the warm start)")
    check_count(max_iters, "max_iters")
    refit = normalize_refit(refit)
    if refine == "dsnot" and isinstance(pattern, UnstructuredSparsity):
        raise InputError(f"refine='dsnot' keeps every row's kept count, so it cannot refine the layer budget {pattern}; "
                         f"use refine='swaps' (intra-row swaps and cross-row moves) or a per-row pattern such as "
                         f"'{pattern.sparsity:g}'")
    if refit == "sparsegpt":
        _check_sparsegpt_baseline(pattern, warm_start, refine)
    check_count(refit_rounds, "refit_rounds", minimum=1)
    if refit_rounds > 1 and (refine != "swaps" or refit != "lstsq" or isinstance(pattern, UnstructuredSparsity)):
        raise InputError(f"refit_rounds={refit_rounds} alternates 1-swap refinement and the least-squares refit: it "
                         f"needs refine='swaps', refit='lstsq' and a per-row or N:M pattern (got refine={refine!r}, "
                         f"refit={refit!r}, pattern {pattern})")
    return refit


def _check_sparsegpt_baseline(pattern: SparsityPattern, warm_start: str, refine: str) -> None:
    if warm_start != "sparsegpt":
        raise InputError(f"refit='sparsegpt' writes SparseGPT's own updated weights, which belong to SparseGPT's mask: "
                         f"use warm_start='sparsegpt' with refine='none' (the SparseGPT baseline), or refit='lstsq' "
                         f"to re-solve the weights for the {warm_start!r} mask")
    if refine != "none":
        raise InputError(f"refit='sparsegpt' needs refine='none': refine={refine!r} changes SparseGPT's mask, and its "
                         f"weight update does not fit another mask; use refit='lstsq' after refining")
    if isinstance(pattern, RowSparsity):
        raise InputError(f"refit='sparsegpt' keeps SparseGPT's own mask, chosen per 128-column block, so rows keep "
                         f"different counts and pattern {pattern} (a fixed count per row) cannot hold; use "
                         f"pattern='unstructured:{pattern.sparsity:g}' (the same overall sparsity) or an N:M pattern, "
                         f"or warm_start='sparsegpt' with refit='lstsq' for a per-row mask with refitted weights")
