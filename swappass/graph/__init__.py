"""graph: the pass over a captured model (layer 5; imports swappass.methods, .refine, .kernels, .core).

``tracing`` captures the model into a torch.fx graph sharing the user's parameters; ``sites`` finds its Linear
sites and Gram groups (``experts``: the fused MoE expert matmuls, one site per expert; ``roles``: routers, gates
and vision towers that stay dense by default); ``observers`` and ``instrument`` put statistics-collecting nodes on their inputs;
``stages`` orders them into dependency levels and stage subgraphs. ``prepared`` (:func:`prepare`), ``conversion``
(:func:`convert`) and ``sequential`` (:func:`sparsify`, level by level; ``levels`` for checkpoints and resume) are
the pass in the PT2E shape; ``report`` says what it did per site.
"""
from .conversion import convert
from .experts import ExpertUse, find_expert_uses
from .instrument import InstrumentedGraph
from .levels import LevelState
from .observers import (
    ExpertDispatch,
    GramChannelObserver,
    GramObserver,
    ObserverFactory,
    SiteObserver,
    gram_observer_factory,
)
from .prepared import PreparedModel, prepare
from .report import SiteReport, SparsifyReport
from .sequential import sparsify
from .sites import (
    DEFAULT_IGNORE,
    GramGroup,
    Site,
    find_sites,
    gram_groups,
    select_sites,
)
from .stages import SequentialOrderError, Stage, StagePlan, assign_levels, plan_stages
from .tracing import CapturedGraph, CaptureError, NodeSource, capture

__all__ = [
    "CapturedGraph", "CaptureError", "NodeSource", "capture", "convert", "InstrumentedGraph", "LevelState",
    "GramChannelObserver", "GramObserver", "ObserverFactory", "SiteObserver", "gram_observer_factory",
    "PreparedModel", "prepare", "SiteReport", "SparsifyReport", "DEFAULT_IGNORE", "GramGroup", "Site", "find_sites",
    "gram_groups", "select_sites", "sparsify", "SequentialOrderError", "Stage", "StagePlan", "assign_levels",
    "plan_stages", "ExpertUse", "find_expert_uses", "ExpertDispatch",
]
