"""The swap-search backends behind one registry: which exist, which serve a device, and the search of each.

A backend registers ``available(device) -> bool`` and ``make(pattern, G) -> search``, where ``search(w, c, keep)
-> SwapChoice`` keeps the contract of :mod:`swappass.kernels.torch_search` (and is tested against it). A search
object may also offer ``refine_batch(w, keep, G, max_iters, rtol, resync_every) -> (swaps, iters)``, the whole
per-batch refinement loop with the same decisions (:mod:`swappass.refine.loop` then calls it), or set
``supports_active`` (a GPU search that takes an ``active`` row flag: the loop stays on the device).

``"torch"`` is always there (the plain search); built in besides: ``"gluon"`` and ``"triton"`` (CUDA,
:mod:`swappass.kernels.gpu`) and ``"cpu"`` (:mod:`swappass.kernels.cpu`), in this order of preference.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..core.errors import InputError
from ..core.patterns import SparsityPattern
from . import cpu, gpu
from .torch_search import DEFAULT_BUDGET_ELEMS, SearchFn, make_torch_search

__all__ = ["available_backends", "make_search", "register_backend", "unregister_backend", "resolve_backend"]

Availability = Callable[[torch.device], bool]
Factory = Callable[[SparsityPattern, torch.Tensor], SearchFn]
_REGISTRY: dict[str, tuple[Availability, Factory]] = {}


def register_backend(name: str, available: Availability, make: Factory) -> None:
    """Register a search backend; the order of registration is the order of preference."""
    if name in ("auto", "torch"):
        raise InputError(f"backend name {name!r} is reserved")
    _REGISTRY[name] = (available, make)


def unregister_backend(name: str) -> None:
    """Remove a registered backend (no error if there is none of that name)."""
    _REGISTRY.pop(name, None)


def available_backends(device: torch.device | str) -> list[str]:
    """Names of the registered fast backends usable on ``device``, fastest first (``"torch"`` not included)."""
    device = torch.device(device)
    return [name for name, (ok, _) in _REGISTRY.items() if ok(device)]


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """The backend ``backend`` names on ``device``: ``"auto"`` is the fastest available, else ``"torch"``.
    Raises :class:`InputError` for a backend that is unknown or not available there."""
    fast = available_backends(device)
    if backend == "auto":
        return fast[0] if fast else "torch"
    if backend != "torch" and backend not in fast:
        raise InputError(
            f"unknown or unavailable refinement backend {backend!r} on {torch.device(device)}; choose 'auto', "
            f"'torch' or one of {fast}"
        )
    return backend


def make_search(
    backend: str, pattern: SparsityPattern, G: torch.Tensor, budget_elems: int = DEFAULT_BUDGET_ELEMS
) -> SearchFn:
    """The search function of ``backend`` for ``pattern`` over the symmetric, contiguous ``G``.

    ``budget_elems``: score entries the plain torch search materialises at a time (``"torch"`` only).
    """
    if backend == "torch":
        return make_torch_search(pattern, G, budget_elems)
    if backend not in _REGISTRY:
        raise InputError(f"search backend {backend!r} is not available; registered: {sorted(_REGISTRY)} and 'torch'")
    return _REGISTRY[backend][1](pattern, G)


register_backend("gluon", gpu.gluon_available, gpu.make_gluon_search)
register_backend("triton", gpu.triton_available, gpu.make_triton_search)
register_backend("cpu", cpu.available, cpu.make_search)
