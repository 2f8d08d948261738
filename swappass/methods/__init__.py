"""methods: what an algorithm does to one layer's weights (layer 4; imports swappass.refine, .kernels, .core).

Warm starts (``warmstart``: magnitude, Wanda, RIA; ``sparsegpt``), the DSnoT baseline (``dsnot``), the weight refit
(``refit``), which combinations make sense (``options``), and the per-site step that chains warm start →
refinement → refit for weights sharing one Gram matrix (``prune_step``). Pure math on tensors: how calibration
data reaches them is the graph layer's business.
"""
from .dsnot import dsnot_refine, dsnot_skips
from .options import check_prune_options
from .prune_step import PruneResult, prune_weights
from .refit import RefitResult, refit_weights
from .sparsegpt import SparseGPTResult, sparsegpt_prune, sparsegpt_warm_start
from .warmstart import warm_start, warm_start_scores

__all__ = ["dsnot_refine", "dsnot_skips", "check_prune_options", "PruneResult", "prune_weights", "RefitResult",
           "refit_weights", "SparseGPTResult", "sparsegpt_prune", "sparsegpt_warm_start", "warm_start",
           "warm_start_scores"]
