"""Graph side of the pass: capture, Linear sites, observers, sequential stages."""
from .capture import (
    CapturedGraph, CaptureError, NodeSource, as_call, capture, capture_call, input_signature, normalize_call,
)
from .instrument import InstrumentedGraph
from .observers import GramChannelObserver, GramObserver, ObserverFactory, SiteObserver, gram_observer_factory
from .sites import DEFAULT_IGNORE, GramGroup, Site, find_sites, gram_groups, select_sites
from .stages import SequentialOrderError, Stage, StagePlan, assign_levels, plan_stages

__all__ = [
    "CapturedGraph",
    "CaptureError",
    "NodeSource",
    "as_call",
    "capture",
    "capture_call",
    "input_signature",
    "normalize_call",
    "InstrumentedGraph",
    "GramChannelObserver",
    "GramObserver",
    "ObserverFactory",
    "SiteObserver",
    "gram_observer_factory",
    "DEFAULT_IGNORE",
    "GramGroup",
    "Site",
    "find_sites",
    "gram_groups",
    "select_sites",
    "SequentialOrderError",
    "Stage",
    "StagePlan",
    "assign_levels",
    "plan_stages",
]
