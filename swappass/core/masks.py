"""Pruned-weight records: which parameter was pruned, with which mask and pattern (saved beside a model).

A :class:`PrunedWeight` holds the mask in the orientation of the **stored parameter** (so it can be compared
with the tensor directly), and says whether that tensor is stored ``d_in × d_out`` (GPT-2's ``Conv1D``), so
the user-view mask (``d_out × d_in``, the orientation of the sparsity pattern) is ``mask.T`` there.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import torch

from .patterns import parse_pattern

__all__ = ["PrunedWeight", "save_masks", "load_masks", "MASKS_FILE"]

MASKS_FILE = "swappass_masks.safetensors"


@dataclass
class PrunedWeight:
    """One pruned parameter. ``mask``: bool, shaped like the stored parameter, True = keep."""

    name: str
    mask: torch.Tensor
    pattern: str
    transposed: bool = False

    @property
    def user_mask(self) -> torch.Tensor:
        """The mask as ``d_out × d_in`` (rows = output neurons), the orientation the pattern applies to."""
        return self.mask.T if self.transposed else self.mask

    @property
    def sparsity(self) -> float:
        return 1.0 - float(self.mask.sum()) / self.mask.numel()

    def check(self) -> None:
        """Raise ``ValueError`` if the mask violates its pattern."""
        parse_pattern(self.pattern).check_mask(self.user_mask, where=self.name)


def save_masks(records: Iterable[PrunedWeight], path: str | Path) -> Path:
    """Write masks bit-packed (1 bit per weight) with their patterns to a safetensors file."""
    from safetensors.torch import save_file

    tensors, meta = {}, {}
    for r in records:
        bits = r.mask.detach().to("cpu", torch.bool).flatten()
        pad = (-bits.numel()) % 8
        bits = torch.cat([bits, bits.new_zeros(pad)]).view(-1, 8).to(torch.uint8)
        weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
        tensors[r.name] = (bits * weights).sum(dim=1).to(torch.uint8)
        meta[r.name] = json.dumps({"shape": list(r.mask.shape), "pattern": r.pattern, "transposed": r.transposed})
    path = Path(path)
    save_file(tensors, str(path), metadata=meta)
    return path


def load_masks(path: str | Path) -> dict[str, PrunedWeight]:
    """Read a file written by :func:`save_masks`: parameter name -> :class:`PrunedWeight`."""
    from safetensors import safe_open

    out: dict[str, PrunedWeight] = {}
    with safe_open(str(path), framework="pt") as fh:
        meta: Mapping[str, str] = fh.metadata() or {}
        for name in fh.keys():
            info = json.loads(meta[name])
            packed = fh.get_tensor(name)
            shifts = torch.tensor([7, 6, 5, 4, 3, 2, 1, 0], dtype=torch.uint8)
            bits = ((packed[:, None] >> shifts) & 1).flatten().bool()
            shape = info["shape"]
            n = 1
            for s in shape:
                n *= s
            out[name] = PrunedWeight(name, bits[:n].reshape(shape), info["pattern"], info["transposed"])
    return out
