"""core: what everything else is made of (layer 1; imports only torch, numpy and safetensors, nothing of swappass).

Sparsity patterns and masks from scores (``patterns``, ``selection``), pruned-weight records and their mask file
(``masks``), streaming statistics of a layer's inputs (``streaming``, ``gram``, ``channelstats``), row-tiled
products and the layer errors (``rowtiles``, ``loss``), input checks (``validate``), the work dtype and memory
plan (``workspace``), the error hierarchy (``errors``) and the version.
"""
from .channelstats import ChannelStats
from .errors import (
    CheckError,
    InputError,
    NoCalibrationDataError,
    NonFiniteActivationError,
    SwappassError,
)
from .gram import GramAccumulator
from .loss import RowLossTotals, layer_loss, reconstruction_loss, relative_reduction
from .masks import MASKS_FILE, PrunedWeight, load_masks, save_masks
from .patterns import (
    NMSparsity,
    PatternLike,
    RowSparsity,
    SparsityPattern,
    UnstructuredSparsity,
    parse_pattern,
)
from .selection import mask_from_scores, project_mask
from .version import __version__

__all__ = [
    "ChannelStats", "CheckError", "InputError", "NoCalibrationDataError", "NonFiniteActivationError",
    "SwappassError", "GramAccumulator", "RowLossTotals", "layer_loss", "reconstruction_loss", "relative_reduction",
    "MASKS_FILE", "PrunedWeight", "load_masks", "save_masks", "NMSparsity", "PatternLike", "RowSparsity",
    "SparsityPattern", "UnstructuredSparsity", "parse_pattern", "mask_from_scores", "project_mask", "__version__",
]
