"""Magnitude pruning of a model's Linear / GPT-2 Conv1D weights, in place, for the export tests.

A stand-in for ``swappass.sparsify`` (its report's ``pruned_weights()`` gives the same records) until that lands.
"""
from __future__ import annotations

from torch import nn

import swappass as sp
from swappass.core.masks import PrunedWeight
from swappass.core.patterns import parse_pattern


def magnitude_prune(model: nn.Module, pattern: str, skip: tuple[str, ...] = ("lm_head",)) -> list[PrunedWeight]:
    """Zero the lowest-magnitude weights of every Linear/Conv1D (names containing ``skip`` excluded)."""
    records = []
    for name, module in model.named_modules():
        conv1d = type(module).__name__ == "Conv1D"  # GPT-2: weight stored d_in × d_out
        if not (isinstance(module, nn.Linear) or conv1d) or any(s in name for s in skip):
            continue
        W = module.weight.data
        user_mask = sp.warm_start(W.T if conv1d else W, None, pattern, "magnitude")
        mask = user_mask.T.contiguous() if conv1d else user_mask
        W.mul_(mask)
        records.append(PrunedWeight(f"{name}.weight", mask, str(parse_pattern(pattern)), conv1d))
    return records
