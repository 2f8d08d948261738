"""swappass: exact 1-swap (SparseSwaps) pruning of Linear layers as a graph pass, with ONNX export.

Layer-level API (DESIGN.md §3)::

    mask0 = swappass.warm_start(W, G, pattern="2:4", method="wanda")   # bool, True = keep
    res = swappass.refine_mask(W, G, mask0, pattern="2:4", max_iters=100)
    loss = swappass.layer_loss(W, G, res.mask)                           # per-row error
    report = swappass.export_onnx(model, example_inputs, "model.onnx", masks=records)  # verified ONNX

Beyond the paper: ``"unstructured:0.6"`` layer budgets (cross-row moves), ``refit_weights`` (damped least
squares on the final mask), and the baselines ``sparsegpt_prune`` and ``dsnot_refine`` (with ``ChannelStats``).

Model-level pass (prepare -> calibrate -> convert, driven by ``sparsify``)::

    model, report = swappass.sparsify(model, calib, pattern="0.6", warm_start="wanda", max_iters=100)
"""
from .channelstats import ChannelStats
from .dsnot import dsnot_refine, dsnot_skips
from .gram import GramAccumulator, NonFiniteActivationError
from .patterns import NMSparsity, RowSparsity, SparsityPattern, UnstructuredSparsity, parse_pattern
from .prune import PruneResult, prune_weights
from .refine import RefineResult, layer_loss, refine_mask
from .refit import RefitResult, reconstruction_loss, refit_weights
from .report import SiteReport, SparsifyReport
from .sparsegpt import SparseGPTResult, project_mask, sparsegpt_prune, sparsegpt_warm_start
from .unstructured import refine_unstructured
from .warmstart import mask_from_scores, warm_start, warm_start_scores

__version__ = "0.1.0"

# Heavy modules (onnx, onnxruntime, the graph pass) load on first use, so `import swappass` stays light.
_LAZY = {
    "ExportReport": ".export",
    "export_onnx": ".export",
    "CaptureError": ".graph",
    "CapturedGraph": ".graph",
    "capture": ".graph",
    "LevelState": ".pipeline",
    "PreparedModel": ".pipeline",
    "prepare": ".pipeline",
    "convert": ".pipeline",
    "sparsify": ".pipeline",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'swappass' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "ExportReport",
    "export_onnx",
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
    "LevelState",
    "PreparedModel",
    "prepare",
    "convert",
    "sparsify",
    "PruneResult",
    "prune_weights",
    "SiteReport",
    "SparsifyReport",
]
