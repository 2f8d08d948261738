"""core: what everything else is made of (layer 1; imports only torch, numpy and safetensors, nothing of swappass).

Sparsity patterns and masks from scores (``patterns``, ``selection``), pruned-weight records and their mask file
(``masks``), streaming statistics of a layer's inputs (``streaming``, ``gram``, ``channelstats``), row-tiled
products and the layer errors (``rowtiles``, ``loss``), input checks (``validate``), the work dtype and memory
plan (``workspace``), digests of a model's state (``digests``), the error hierarchy (``errors``) and the version.
"""
from .channelstats import ChannelStats
from .digests import state_sha256, tensor_sha256
from .errors import (
    CalibrationWarning,
    CheckError,
    InputError,
    NoCalibrationDataError,
    NonFiniteActivationError,
    NothingPrunedError,
    PatternViolationError,
    SwappassError,
)
from .gram import GramAccumulator, gram_degeneracy
from .loss import RowLossTotals, layer_loss, reconstruction_loss, relative_reduction
from .masks import MASKS_FILE, PrunedWeight, check_pruned_weight, load_masks, save_masks
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
    "state_sha256", "tensor_sha256", "CalibrationWarning", "NothingPrunedError", "PatternViolationError",
    "gram_degeneracy", "check_pruned_weight",
]
