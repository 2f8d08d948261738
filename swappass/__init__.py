"""swappass: exact 1-swap (SparseSwaps) pruning of Linear layers as a graph pass, with ONNX export.

Layer-level API (DESIGN.md §3)::

    mask0 = swappass.warm_start(W, G, pattern="2:4", method="wanda")   # bool, True = keep
    res = swappass.refine_mask(W, G, mask0, pattern="2:4", max_iters=100)
    loss = swappass.layer_loss(W, G, res.mask)                           # per-row error

Model-level pass (prepare -> calibrate -> convert, driven by ``sparsify``), and the verified export::

    model, report = swappass.sparsify(model, calib, pattern="0.6", warm_start="wanda", max_iters=100)
    export = swappass.export_onnx(model, example_inputs, "model.onnx", masks=report.pruned_weights())

This module is the public face: every name here lives in one of the layers (``core`` → ``kernels`` → ``refine`` →
``methods`` → ``graph``; ``onnx``; ``lm``; ``cli``; docs/ARCHITECTURE.md). The ONNX names load on first use
(``import onnx`` costs about a second), so that ``import swappass`` stays light.
"""
from .core.channelstats import ChannelStats
from .core.errors import (
    CalibrationWarning,
    CheckError,
    InputError,
    NoCalibrationDataError,
    NonFiniteActivationError,
    NothingPrunedError,
    PatternViolationError,
    SwappassError,
)
from .core.gram import GramAccumulator
from .core.loss import layer_loss, reconstruction_loss
from .core.masks import PrunedWeight, check_pruned_weight, load_masks, save_masks
from .core.patterns import (
    NMSparsity,
    RowSparsity,
    SparsityPattern,
    UnstructuredSparsity,
    parse_pattern,
)
from .core.selection import mask_from_scores, project_mask
from .core.version import __version__
from .graph.conversion import convert
from .graph.levels import LevelState
from .graph.prepared import PreparedModel, prepare
from .graph.report import SiteReport, SparsifyReport
from .graph.sequential import sparsify
from .graph.tracing import CapturedGraph, CaptureError, capture
from .methods.dsnot import dsnot_refine, dsnot_skips
from .methods.prune_step import PruneResult, prune_weights
from .methods.refit import RefitResult, refit_weights
from .methods.sparsegpt import SparseGPTResult, sparsegpt_prune, sparsegpt_warm_start
from .methods.warmstart import warm_start, warm_start_scores
from .refine.distributed import close_distributed, init_distributed, rank_device
from .refine.mask import refine_mask
from .refine.result import RefineResult
from .refine.unstructured import refine_unstructured

_ONNX_NAMES = {"ExportReport": "swappass.onnx.report", "export_onnx": "swappass.onnx.export",
               "ExportError": "swappass.onnx.adapter", "VerificationError": "swappass.onnx.verify"}


def __getattr__(name: str):
    if name in _ONNX_NAMES:
        import importlib

        value = getattr(importlib.import_module(_ONNX_NAMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'swappass' has no attribute {name!r}")


__all__ = [
    "ChannelStats", "CheckError", "InputError", "NoCalibrationDataError", "NonFiniteActivationError", "SwappassError",
    "GramAccumulator", "layer_loss", "reconstruction_loss", "PrunedWeight", "load_masks", "save_masks", "NMSparsity",
    "RowSparsity", "SparsityPattern", "UnstructuredSparsity", "parse_pattern", "mask_from_scores", "project_mask",
    "__version__", "CapturedGraph", "CaptureError", "capture", "convert", "LevelState", "PreparedModel", "prepare",
    "SiteReport", "SparsifyReport", "sparsify", "dsnot_refine", "dsnot_skips", "PruneResult", "prune_weights",
    "RefitResult", "refit_weights", "SparseGPTResult", "sparsegpt_prune", "sparsegpt_warm_start", "warm_start",
    "warm_start_scores", "close_distributed", "init_distributed", "rank_device", "refine_mask", "RefineResult",
    "refine_unstructured", "CalibrationWarning", "NothingPrunedError", "PatternViolationError", "check_pruned_weight",
    *_ONNX_NAMES,
]


def __dir__() -> list[str]:
    return sorted(__all__)
