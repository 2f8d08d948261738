"""Pruned-weight records: which parameter was pruned, with which mask and pattern (saved beside a model).

A :class:`PrunedWeight` holds the mask in the orientation of the **stored parameter** (so it can be compared
with the tensor directly), and says whether that tensor is stored ``d_in × d_out`` (GPT-2's ``Conv1D``), so
the user-view mask (``d_out × d_in``, the orientation of the sparsity pattern) is ``mask.T`` there.

One expert of a fused mixture-of-experts parameter ``(E, …)`` is a record of its own: ``name`` is the parameter,
``expert`` the index along its first axis, ``mask`` the 2-D mask of that expert's matrix, and :attr:`key`
(``NAME[e]``) the record's key in a masks file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import torch

from .patterns import parse_pattern

__all__ = ["PrunedWeight", "save_masks", "load_masks", "weight_key", "MASKS_FILE"]

MASKS_FILE = "swappass_masks.safetensors"


def weight_key(name: str, expert: int | None = None) -> str:
    """The key of a pruned weight: the parameter name, or ``NAME[e]`` for expert ``e`` of a fused parameter."""
    return name if expert is None else f"{name}[{expert}]"


@dataclass
class PrunedWeight:
    """One pruned parameter (or one expert of a fused one). ``mask``: bool, shaped like the stored parameter
    (for an expert: like ``parameter[expert]``), True = keep."""

    name: str
    mask: torch.Tensor
    pattern: str
    transposed: bool = False
    expert: int | None = None

    @property
    def key(self) -> str:
        """``name``, or ``name[expert]`` for one expert of a fused parameter."""
        return weight_key(self.name, self.expert)

    def stored(self, weight: torch.Tensor) -> torch.Tensor:
        """The part of the parameter ``weight`` this record describes (``weight[expert]`` for an expert)."""
        return weight[self.expert] if self.expert is not None else weight

    @property
    def user_mask(self) -> torch.Tensor:
        """The mask as ``d_out × d_in`` (rows = output neurons), the orientation the pattern applies to."""
        return self.mask.T if self.transposed else self.mask

    @property
    def sparsity(self) -> float:
        return 1.0 - float(self.mask.sum()) / self.mask.numel()

    def check(self) -> None:
        """Raise ``ValueError`` if the mask violates its pattern."""
        parse_pattern(self.pattern).check_mask(self.user_mask, where=self.key)


def save_masks(records: Iterable[PrunedWeight], path: str | Path) -> Path:
    """Write masks bit-packed (1 bit per weight) with their patterns to a safetensors file."""
    from safetensors.torch import save_file

    tensors, meta = {}, {}
    for r in records:
        bits = r.mask.detach().to("cpu", torch.bool).flatten()
        pad = (-bits.numel()) % 8
        bits = torch.cat([bits, bits.new_zeros(pad)]).view(-1, 8).to(torch.uint8)
        weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
        tensors[r.key] = (bits * weights).sum(dim=1).to(torch.uint8)
        info = {"shape": list(r.mask.shape), "pattern": r.pattern, "transposed": r.transposed}
        if r.expert is not None:
            info.update(parameter=r.name, expert=r.expert)
        meta[r.key] = json.dumps(info)
    path = Path(path)
    save_file(tensors, str(path), metadata=meta)
    return path


def load_masks(path: str | Path) -> dict[str, PrunedWeight]:
    """Read a file written by :func:`save_masks`: key (:attr:`PrunedWeight.key`) -> :class:`PrunedWeight`."""
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
            out[name] = PrunedWeight(info.get("parameter", name), bits[:n].reshape(shape), info["pattern"],
                                     info["transposed"], info.get("expert"))
    return out
