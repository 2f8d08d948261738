"""refine: the 1-swap refinement of a mask (layer 3; imports swappass.kernels and swappass.core).

``mask`` holds :func:`refine_mask`, the entry point for every pattern; ``rows`` refines per-row and N:M patterns
(every row on its own, in batches, on any backend), ``unstructured`` a layer budget (intra-row swaps plus exact
cross-row moves); ``loop`` is the iteration both use, ``inputs`` what they check and set up first, ``result`` their
outcome. ``distributed`` splits the rows over the ranks of a process group; ``reference`` is the plain one-row-at-
a-time implementation every fast path is tested against.
"""
from .distributed import close_distributed, init_distributed, rank_device
from .mask import refine_mask
from .result import RefineResult
from .unstructured import refine_unstructured

__all__ = ["close_distributed", "init_distributed", "rank_device", "refine_mask", "RefineResult",
           "refine_unstructured"]
