"""swappass: exact 1-swap (SparseSwaps) pruning of Linear layers as a graph pass, with ONNX export.

Layer-level API (DESIGN.md §3)::

    mask0 = swappass.warm_start(W, G, pattern="2:4", method="wanda")   # bool, True = keep
    res = swappass.refine_mask(W, G, mask0, pattern="2:4", max_iters=100)
    loss = swappass.layer_loss(W, G, res.mask)                           # per-row error
    report = swappass.export_onnx(model, example_inputs, "model.onnx", masks=records)  # verified ONNX
"""
from .export import ExportReport, export_onnx
from .gram import GramAccumulator, NonFiniteActivationError
from .patterns import NMSparsity, RowSparsity, SparsityPattern, parse_pattern
from .refine import RefineResult, layer_loss, refine_mask
from .warmstart import mask_from_scores, warm_start, warm_start_scores

__version__ = "0.1.0"

__all__ = [
    "ExportReport",
    "export_onnx",
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
]
