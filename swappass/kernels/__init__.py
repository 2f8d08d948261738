"""Fast swap-search kernels behind the same contract as :mod:`swappass.search` (tested against it).

A backend registers a factory ``make(pattern, G) -> search(w, c, keep) -> SwapChoice`` and an availability
check for a device. :func:`swappass.refine_mask` picks the fastest available one with ``backend="auto"``.
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


def _make_triton(pattern: SparsityPattern, G: torch.Tensor) -> SearchFn:
    from ..patterns import NMSparsity
    from ..search import nm_diag_blocks
    from . import triton_search

    gdiag = G.diagonal().contiguous().float()
    Gf = G.contiguous().float()
    if isinstance(pattern, NMSparsity):
        blocks = nm_diag_blocks(Gf, pattern.m)
        search = lambda w, c, keep, active=None: triton_search.nm_search(  # noqa: E731
            w, c, keep, blocks, gdiag, pattern.m, active=active
        )
    else:
        search = lambda w, c, keep, active=None: triton_search.row_search(  # noqa: E731
            w, c, keep, Gf, gdiag, active=active
        )
    search.supports_active = True  # the device-side refinement loop may pass an `active` row flag
    return search


register_backend("triton", _triton_available, _make_triton)
