"""kernels: the swap-search backends behind one registry (layer 2; imports only swappass.core).

``torch_search`` is the plain, readable search every fast kernel is tested against; ``cpu`` (a C++ kernel
compiled at first use), ``gpu`` with ``triton_search`` and ``gluon_search`` (CUDA) are the fast ones;
``registry`` registers them and resolves a backend name (``"auto"``, ``"torch"``, ``"cpu"`` …) on a device.
"""
from .registry import (
    available_backends,
    make_search,
    register_backend,
    resolve_backend,
    unregister_backend,
)
from .torch_search import (
    SearchFn,
    SwapChoice,
    make_torch_search,
    nm_diag_blocks,
    swap_terms,
)

__all__ = [
    "available_backends", "make_search", "register_backend", "resolve_backend", "unregister_backend",
    "SearchFn", "SwapChoice", "make_torch_search", "nm_diag_blocks", "swap_terms",
]
