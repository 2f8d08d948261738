"""Fast swap-search kernels behind the same contract as :mod:`swappass.search` (tested against it).

A backend registers a factory ``make(pattern, G) -> search(w, c, keep) -> SwapChoice`` and an availability
check for a device. :func:`swappass.refine_mask` picks the fastest available one with ``backend="auto"``.
A search object may also offer ``refine_batch(w, keep, G, max_iters, rtol, resync_every) -> (swaps, iters)``,
refine.py's whole per-batch loop with the same decisions; refine_mask then calls it instead of its own loop.

Built in: ``"cpu"`` (:mod:`swappass.kernels.cpu`, a C++ kernel compiled at first use; registered on import).
"""
from __future__ import annotations

from typing import Callable

import torch

from ..patterns import SparsityPattern
from ..search import SwapChoice

__all__ = ["available_backends", "make_search", "register_backend"]

SearchFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], SwapChoice]
_REGISTRY: dict[str, tuple[Callable[[torch.device], bool], Callable[[SparsityPattern, torch.Tensor], SearchFn]]] = {}


def register_backend(
    name: str,
    available: Callable[[torch.device], bool],
    make: Callable[[SparsityPattern, torch.Tensor], SearchFn],
) -> None:
    """Register a search backend; the order of registration is the order of preference."""
    _REGISTRY[name] = (available, make)


def available_backends(device: torch.device | str) -> list[str]:
    """Names of the registered backends usable on ``device``, fastest first."""
    device = torch.device(device)
    return [name for name, (ok, _) in _REGISTRY.items() if ok(device)]


def make_search(backend: str, pattern: SparsityPattern, G: torch.Tensor) -> SearchFn:
    """The search function of ``backend`` for ``pattern`` over the (symmetric, contiguous) ``G``."""
    if backend not in _REGISTRY:
        raise ValueError(f"search backend {backend!r} is not available; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[backend][1](pattern, G)


def _triton_available(device: torch.device) -> bool:
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _gluon_available(device: torch.device) -> bool:
    if not _triton_available(device):
        return False
    try:
        from triton.experimental import gluon  # noqa: F401
    except ImportError:
        return False
    return True


def _make_gpu_search(pattern: SparsityPattern, G: torch.Tensor, use_gluon: bool) -> SearchFn:
    from ..patterns import NMSparsity
    from ..search import nm_diag_blocks
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
    return search


def _make_triton(pattern: SparsityPattern, G: torch.Tensor) -> SearchFn:
    return _make_gpu_search(pattern, G, use_gluon=False)


def _make_gluon(pattern: SparsityPattern, G: torch.Tensor) -> SearchFn:
    return _make_gpu_search(pattern, G, use_gluon=True)


register_backend("gluon", _gluon_available, _make_gluon)
register_backend("triton", _triton_available, _make_triton)


def _register_builtin() -> None:
    from . import cpu  # stdlib + torch only; the C++ build happens at the first make_search

    register_backend("cpu", cpu.available, cpu.make_search)


_register_builtin()
