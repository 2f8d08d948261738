"""swappass: exact 1-swap (SparseSwaps) pruning of Linear layers as a graph pass, with ONNX export.

Layer-level API (DESIGN.md §3)::

    mask0 = swappass.warm_start(W, G, pattern="2:4", method="wanda")   # bool, True = keep
    res = swappass.refine_mask(W, G, mask0, pattern="2:4", max_iters=100)
    loss = swappass.layer_loss(W, G, res.mask)                           # per-row error

Model-level pass (prepare -> calibrate -> convert, driven by ``sparsify``)::

    model, report = swappass.sparsify(model, calib, pattern="0.6", warm_start="wanda", max_iters=100)
"""
from .gram import GramAccumulator, NonFiniteActivationError
from .graph import CaptureError, CapturedGraph, capture
from .patterns import NMSparsity, RowSparsity, SparsityPattern, parse_pattern
from .pipeline import PreparedModel, convert, prepare, sparsify
from .prune import PruneResult, prune_weights
from .refine import RefineResult, layer_loss, refine_mask
from .report import SiteReport, SparsifyReport
from .warmstart import mask_from_scores, warm_start, warm_start_scores

__version__ = "0.1.0"

__all__ = [
    "GramAccumulator",
    "NonFiniteActivationError",
    "NMSparsity",
    "RowSparsity",
    "SparsityPattern",
    "parse_pattern",
    "RefineResult",
    "layer_loss",
    "refine_mask",
    "mask_from_scores",
    "warm_start",
    "warm_start_scores",
    "CaptureError",
    "CapturedGraph",
    "capture",
    "PreparedModel",
    "prepare",
    "convert",
    "sparsify",
    "PruneResult",
    "prune_weights",
    "SiteReport",
    "SparsifyReport",
]
