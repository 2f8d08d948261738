"""swappass: exact 1-swap (SparseSwaps) pruning of Linear layers as a graph pass, with ONNX export.

Layer-level API (DESIGN.md §3)::

    mask0 = swappass.warm_start(W, G, pattern="2:4", method="wanda")   # bool, True = keep
    res = swappass.refine_mask(W, G, mask0, pattern="2:4", max_iters=100)
    loss = swappass.layer_loss(W, G, res.mask)                           # per-row error

Beyond the paper: ``"unstructured:0.6"`` layer budgets (cross-row moves), ``refit_weights`` (damped least
squares on the final mask), and the baselines ``sparsegpt_prune`` and ``dsnot_refine`` (with ``ChannelStats``).

Model-level pass (prepare -> calibrate -> convert, driven by ``sparsify``)::

    model, report = swappass.sparsify(model, calib, pattern="0.6", warm_start="wanda", max_iters=100)
"""
from .channelstats import ChannelStats
from .dsnot import dsnot_refine, dsnot_skips
from .gram import GramAccumulator, NonFiniteActivationError
from .graph import CaptureError, CapturedGraph, capture
from .patterns import NMSparsity, RowSparsity, SparsityPattern, UnstructuredSparsity, parse_pattern
from .pipeline import PreparedModel, convert, prepare, sparsify
from .prune import PruneResult, prune_weights
from .refine import RefineResult, layer_loss, refine_mask
from .refit import RefitResult, reconstruction_loss, refit_weights
from .report import SiteReport, SparsifyReport
from .sparsegpt import SparseGPTResult, project_mask, sparsegpt_prune, sparsegpt_warm_start
from .unstructured import refine_unstructured
from .warmstart import mask_from_scores, warm_start, warm_start_scores

__version__ = "0.1.0"

__all__ = [
    "ChannelStats",
    "dsnot_refine",
    "dsnot_skips",
    "UnstructuredSparsity",
    "RefitResult",
    "reconstruction_loss",
    "refit_weights",
    "SparseGPTResult",
    "project_mask",
    "sparsegpt_prune",
    "sparsegpt_warm_start",
    "refine_unstructured",
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
