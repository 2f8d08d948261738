"""The CUDA backends' factories: Gluon (register-tiled) and Triton searches, and when each can run.

The kernel modules import Triton at module level, so they are imported only when a search is made. For per-row
patterns in float32 the search also carries the bound-pruned refinement loop (:mod:`swappass.kernels.gpu_bounded`:
the same swaps, fewer pairs scored); ``SWAPPASS_GPU_BOUND=0`` turns it off (the dense device loop),
``=1`` uses it also below :data:`BOUND_MIN_D_IN`.
"""
from __future__ import annotations

import os

import torch

from ..core.patterns import NMSparsity, RowSparsity, SparsityPattern
from .torch_search import SearchFn, nm_diag_blocks

__all__ = ["triton_available", "gluon_available", "make_triton_search", "make_gluon_search", "use_bounded_loop",
           "BOUND_MIN_D_IN"]


def triton_available(device: torch.device) -> bool:
    """CUDA is there and Triton imports."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def gluon_available(device: torch.device) -> bool:
    """:func:`triton_available` and this Triton has the Gluon dialect."""
    if not triton_available(device):
        return False
    try:
        from triton.experimental import gluon  # noqa: F401
    except ImportError:
        return False
    return True


def _make_gpu_search(pattern: SparsityPattern, G: torch.Tensor, use_gluon: bool) -> SearchFn:
    from . import triton_search

    gdiag = G.diagonal().contiguous().float()
    Gf = G.contiguous().float()
    if isinstance(pattern, NMSparsity):
        blocks = nm_diag_blocks(Gf, pattern.m)

        def search(w, c, keep, active=None):
            return triton_search.nm_search(w, c, keep, blocks, gdiag, pattern.m, active=active)
    elif use_gluon:
        from .gluon_search import pad_gram, row_search_gluon

        Gp = pad_gram(Gf)  # once per search, not per iteration

        def search(w, c, keep, active=None):
            return row_search_gluon(w, c, keep, Gp, gdiag, active=active)
    else:
        def search(w, c, keep, active=None):
            return triton_search.row_search(w, c, keep, Gf, gdiag, active=active)

    search.supports_active = True  # the device-side refinement loop may pass an `active` row flag
    if use_bounded_loop(pattern, G):
        from .gpu_bounded import BoundedRowLoop

        search.refine_batch = BoundedRowLoop(Gf).refine_batch  # the same swaps, bound-pruned (gpu_bounded.py)
    return search


BOUND_MIN_D_IN = 2048
"""Below this input width the bound-pruned loop's bookkeeping costs more than the pairs it skips (H200, 2026-12-03:
SmolLM2's d_in 576/1536 took 1.27x the dense loop's time; LLaMA-8B's 4096/14336 2.6-5.6x less; docs/BENCHMARKS.md)."""


def use_bounded_loop(pattern: SparsityPattern, G: torch.Tensor) -> bool:
    """Whether the GPU search carries the bound-pruned loop: per-row patterns in float32 with d_in >=
    :data:`BOUND_MIN_D_IN`; ``SWAPPASS_GPU_BOUND=0`` never, ``=1`` at every width."""
    flag = os.environ.get("SWAPPASS_GPU_BOUND", "auto")
    if flag == "0" or not isinstance(pattern, RowSparsity) or G.dtype != torch.float32:
        return False
    return flag == "1" or G.shape[0] >= BOUND_MIN_D_IN


def make_triton_search(pattern: SparsityPattern, G: torch.Tensor) -> SearchFn:
    """The portable Triton search (per-row and N:M patterns)."""
    return _make_gpu_search(pattern, G, use_gluon=False)


def make_gluon_search(pattern: SparsityPattern, G: torch.Tensor) -> SearchFn:
    """The Gluon search for per-row patterns (N:M uses the Triton kernel)."""
    return _make_gpu_search(pattern, G, use_gluon=True)
