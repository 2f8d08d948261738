"""SparseGPT (Frantar & Alistarh, 2023) as in IST-DASLab/sparsegpt ``fasterprune``: a baseline and a warm start.

The algorithm (DESIGN.md §6), for ``W`` (``d_out × d_in``) and the Hessian ``H = 2·G/N``:

1. Dead inputs (``H_jj = 0``) get ``H_jj = 1`` and ``W[:, j] = 0``.
2. Damping ``H += percdamp · mean(diag H) · I`` (``percdamp = 0.01``); ``U`` = upper Cholesky factor of ``H⁻¹``.
3. Columns in blocks of ``blocksize = 128``. Selection score ``w_ij² / U_jj²`` with the current (already
   updated) weights. Unstructured: one threshold over the block's ``d_out × blocksize`` entries, chosen at the
   block start. N:M: at the first column of every M-group, the ``M − N`` lowest of each row in the group.
4. Column by column: ``q`` = the column with its pruned entries zeroed, ``err = (w − q) / U_ii``, the OBS update
   ``W[:, i:] −= err ⊗ U[i, i:]`` inside the block, and at the block's end the lazy update
   ``W[:, i2:] −= Err @ U[i1:i2, i2:]``.

Scale: with no dead input the algorithm is invariant to a positive scale of ``H`` (the damping is relative).
Dead inputs get ``H_jj = 1`` in absolute terms, which enters the damping's mean; pass ``n_samples`` (the number
of calibration sequences, the reference's ``nsamples``) to use the reference's ``H = 2G/N`` exactly.

Counts (the one deliberate difference from the reference). The reference prunes, per block, every entry whose
score is ``<=`` the score at rank ``int(numel · s)``, i.e. at least ``int(numel · s) + 1`` entries (more with
ties). Here the comparisons are at the swappass pattern's count: the layer keeps ``pattern.kept_total(d_out,
d_in)`` weights (``d_out · round(d_in (1 − s))`` for ``"0.6"``, ``round(d_out d_in (1 − s))`` for
``"unstructured:0.6"``), spread over the blocks in proportion to their widths (cumulative rounding, so the
total is exact), and within a block the lowest scores are pruned (stable sort: among equal scores the lower
row-major index goes first). N:M keeps exactly N of every M (swappass's "N kept of M"; the reference's
``prune_n`` counts pruned weights, the same thing for 2:4 and 4:8).

As a warm start (:func:`sparsegpt_warm_start`) only the mask is used, projected to the pattern by
:func:`project_mask`; SparseGPT's weight update is discarded (the refinement is mask-only; see
:func:`swappass.methods.refit.refit_weights` for a weight update after refinement).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.errors import InputError
from ..core.loss import layer_loss, reconstruction_loss
from ..core.patterns import (
    NMSparsity,
    PatternLike,
    RowSparsity,
    SparsityPattern,
    UnstructuredSparsity,
    parse_pattern,
)
from ..core.selection import project_mask
from ..core.validate import check_layer
from ..core.workspace import work_dtype

__all__ = ["SparseGPTResult", "sparsegpt_prune", "sparsegpt_warm_start"]


@dataclass
class SparseGPTResult:
    """Outcome of :func:`sparsegpt_prune`.

    ``mask``: bool ``d_out × d_in``, True = keep (SparseGPT's own selection; feasible for the unstructured budget
    of the pattern's total, or for the N:M pattern). ``weight``: the updated weights (W's dtype), exactly zero
    where pruned and at dead inputs. ``scores``: the selection score ``w_ij² / U_jj²`` of every weight at the
    moment its block (unstructured) or M-group (N:M) was selected; :func:`project_mask` ranks by it.
    ``loss``: per-row output error of ``weight``; ``loss_mask_only``: per-row error of ``W ⊙ mask``.
    """

    mask: torch.Tensor
    weight: torch.Tensor
    scores: torch.Tensor
    loss: torch.Tensor
    loss_mask_only: torch.Tensor
    info: dict = field(default_factory=dict)


def _upper_cholesky_of_inverse(H: torch.Tensor, name: str) -> torch.Tensor:
    L, info = torch.linalg.cholesky_ex(H)
    if int(info) == 0:
        U, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(L), upper=True)
    if int(info) != 0:
        raise InputError(
            f"{name}: the damped Hessian 2G/N + λI is not positive definite (Cholesky failed at {int(info)}); "
            f"check G for garbage or raise percdamp"
        )
    return U


def _block_keep_counts(total: int, d_out: int, d_in: int, blocksize: int) -> list[int]:
    """Kept entries per column block: cumulative rounding of ``total · columns / d_in`` (exact total)."""
    cum = lambda col: (2 * total * col + d_in) // (2 * d_in)  # noqa: E731  round half up, integers only
    return [cum(min(i + blocksize, d_in)) - cum(i) for i in range(0, d_in, blocksize)]


def _damped_inverse_factor(
    G: torch.Tensor, w: torch.Tensor, percdamp: float, n_samples: int | None, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1-2: ``U`` (upper Cholesky factor of the damped ``H⁻¹``) and the dead inputs (zeroed in ``w``)."""
    H = (G + G.T) / 2 * (2.0 / n_samples if n_samples else 1.0)
    dead = (H.diagonal() == 0).nonzero().flatten()
    H[dead, dead] = 1.0
    w[:, dead] = 0.0
    H.diagonal().add_(percdamp * H.diagonal().mean())
    return _upper_cholesky_of_inverse(H, name), dead


def _prune_block(
    w: torch.Tensor,
    U: torch.Tensor,
    prune: torch.Tensor,
    scores: torch.Tensor,
    i1: int,
    i2: int,
    pattern: SparsityPattern,
    keep_count: int | None,
) -> None:
    """Steps 3-4 for columns ``i1:i2``: select (``keep_count`` kept of the block, or N:M per group), OBS-update
    the block column by column, then the lazy update of the columns after it. ``w``, ``prune`` and ``scores``
    (``d_out × d_in``) are written in place."""
    nm = isinstance(pattern, NMSparsity)
    W1, U1 = w[:, i1:i2].clone(), U[i1:i2, i1:i2]
    d1 = U1.diagonal()
    P1 = torch.zeros(w.shape[0], i2 - i1, dtype=torch.bool, device=w.device)
    Err1 = torch.zeros_like(W1)
    zero = torch.zeros((), dtype=w.dtype, device=w.device)
    if not nm:
        s1 = W1.square() / d1.square()
        scores[:, i1:i2] = s1
        n_prune = s1.numel() - keep_count
        P1.view(-1)[torch.sort(s1.reshape(-1), stable=True).indices[:n_prune]] = True
    for i in range(i2 - i1):
        if nm and i % pattern.m == 0:
            s = W1[:, i : i + pattern.m].square() / d1[i : i + pattern.m].square()
            scores[:, i1 + i : i1 + i + pattern.m] = s
            low = torch.sort(s, dim=1, stable=True).indices[:, : pattern.m - pattern.n]
            P1[:, i : i + pattern.m].scatter_(1, low, True)
        col = W1[:, i]
        q = torch.where(P1[:, i], zero, col)
        err = (col - q) / U1[i, i]
        W1[:, i:] -= err[:, None] * U1[i, i:][None, :]
        W1[:, i] = q
        Err1[:, i] = err
    w[:, i1:i2] = W1
    prune[:, i1:i2] = P1
    w[:, i2:] -= Err1 @ U[i1:i2, i2:]


@torch.no_grad()
def sparsegpt_prune(
    W: torch.Tensor,
    G: torch.Tensor,
    pattern: PatternLike = "0.5",
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
    n_samples: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    name: str = "layer",
) -> SparseGPTResult:
    """Prune ``W`` (``d_out × d_in``) with SparseGPT from ``G`` (``d_in × d_in``); module docstring for the details.

    Args:
        pattern: ``"0.6"`` / ``"row:0.6"`` / ``"unstructured:0.6"`` (per-block selection at the pattern's total)
            or ``"2:4"``-style N:M (``blocksize`` must then be a multiple of M).
        blocksize, percdamp: the reference's defaults, 128 and 0.01.
        n_samples: calibration sequences; if given, ``H = 2·G / n_samples`` as in the reference, otherwise
            ``H = G`` (identical results unless some input is dead, see the module docstring).
        dtype: float32 (the reference's) or float64; default float64 only if W or G is float64.
        device: where to run (default: W's device).
    """
    pattern = parse_pattern(pattern)
    check_layer(W, G, pattern=pattern, name=name)
    if not isinstance(pattern, (RowSparsity, UnstructuredSparsity, NMSparsity)):
        raise InputError(f"{name}: SparseGPT handles per-row, unstructured and N:M patterns, got {pattern}")
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize < 1:
        raise InputError(f"{name}: blocksize must be a positive integer, got {blocksize!r}")
    nm = isinstance(pattern, NMSparsity)
    if nm and blocksize % pattern.m:
        raise InputError(f"{name}: blocksize {blocksize} must be a multiple of M = {pattern.m} for pattern {pattern}")
    if not percdamp >= 0:
        raise InputError(f"{name}: percdamp must be non-negative, got {percdamp!r}")
    dev = torch.device(device) if device is not None else W.device
    dt = work_dtype(W, G, dtype=dtype)
    d_out, d_in = W.shape

    w = W.to(device=dev, dtype=dt).clone()
    U, dead = _damped_inverse_factor(G.to(device=dev, dtype=dt), w, percdamp, n_samples, name)
    keep_counts = None if nm else _block_keep_counts(pattern.kept_total(d_out, d_in), d_out, d_in, blocksize)
    prune = torch.zeros(d_out, d_in, dtype=torch.bool, device=dev)
    scores = torch.empty(d_out, d_in, dtype=dt, device=dev)
    for b, i1 in enumerate(range(0, d_in, blocksize)):
        i2 = min(i1 + blocksize, d_in)
        _prune_block(w, U, prune, scores, i1, i2, pattern, None if nm else keep_counts[b])

    zero = torch.zeros((), dtype=dt, device=dev)
    keep = ~prune
    w = torch.where(keep, w, zero)
    Wd = W.to(device=dev, dtype=dt)
    Gd = G.to(device=dev, dtype=dt)
    target = W.device
    return SparseGPTResult(
        mask=keep.to(target),
        weight=w.to(device=target, dtype=W.dtype),
        scores=scores.to(target),
        loss=reconstruction_loss(Wd, Gd, w, dtype=dt).to(target),
        loss_mask_only=layer_loss(Wd, Gd, keep, dtype=dt).to(target),
        info={"blocksize": blocksize, "percdamp": percdamp, "dead_inputs": int(dead.numel()),
              "dtype": str(dt).replace("torch.", "")},
    )


def sparsegpt_warm_start(W: torch.Tensor, G: torch.Tensor, pattern: PatternLike, **kwargs) -> torch.Tensor:
    """SparseGPT's mask projected to ``pattern`` (:func:`project_mask` with its selection scores); bool, True = keep.

    ``kwargs`` go to :func:`sparsegpt_prune`. The N:M and unstructured masks are already feasible; a per-row
    pattern's rows are levelled to ``round(d_in (1 − s))`` each.
    """
    pattern = parse_pattern(pattern)
    res = sparsegpt_prune(W, G, pattern, **kwargs)
    return project_mask(res.mask, res.scores, pattern)
