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

from .errors import InputError, PatternViolationError
from .patterns import PatternLike, parse_pattern

__all__ = ["PrunedWeight", "save_masks", "load_masks", "check_pruned_weight", "weight_key", "MASKS_FILE"]

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

    def check_weight(self, weight: torch.Tensor) -> None:
        """Raise :class:`PatternViolationError` unless ``weight`` (the whole stored parameter; for an expert, the
        fused one) is pruned exactly as this record says (see :func:`check_pruned_weight`)."""
        check_pruned_weight(self.stored(weight), self.mask, self.pattern, self.key, self.transposed)


@torch.no_grad()
def check_pruned_weight(
    weight: torch.Tensor | None,
    mask: torch.Tensor,
    pattern: PatternLike,
    name: str = "weight",
    transposed: bool = False,
) -> None:
    """Check a pruned weight before it is written anywhere; raise :class:`PatternViolationError` naming ``name``.

    ``mask`` is bool (True = keep) shaped like the stored parameter; ``transposed``: the parameter is stored
    ``d_in × d_out`` (GPT-2's ``Conv1D``), so the pattern applies to ``mask.T``. Checked: the mask satisfies
    ``pattern`` (every row's kept count, every N:M block, a layer budget's total) and, when ``weight`` (shaped
    like the parameter) is given, the weight is finite and exactly zero wherever the mask prunes.
    """
    try:
        spec = parse_pattern(pattern)
    except InputError as exc:
        raise PatternViolationError(f"{name}: its recorded pattern {pattern!r} is not a pattern ({exc})") from exc
    if mask.dtype != torch.bool or mask.dim() != 2:
        raise PatternViolationError(f"{name}: the mask is {mask.dtype} of shape {tuple(mask.shape)}, not 2-D bool")
    user = mask.T if transposed else mask
    problem = spec.shape_error(*user.shape) or spec.mask_error(user)
    if problem is not None:
        raise PatternViolationError(f"{name}: the mask breaks pattern {spec}: {problem}")
    if weight is None:
        return
    if tuple(weight.shape) != tuple(mask.shape):
        raise PatternViolationError(f"{name}: the weight has shape {tuple(weight.shape)}, its mask "
                                    f"{tuple(mask.shape)}")
    keep = mask.to(weight.device)
    leaks = (weight != 0) & ~keep
    if bool(leaks.any()):
        where = [int(i) for i in leaks.nonzero()[0]]
        row = where[1] if transposed else where[0]
        raise PatternViolationError(
            f"{name}: {int(leaks.sum())} weights are non-zero where the mask prunes (first at stored index "
            f"{tuple(where)}, row {row}), so the weight breaks pattern {spec}"
        )
    if weight.is_floating_point() and bool(torch.isfinite(weight.sum())):
        return  # a NaN or Inf makes the sum non-finite (a sum that overflows is checked element by element)
    bad = ~torch.isfinite(weight)
    if bool(bad.any()):
        raise PatternViolationError(f"{name}: the pruned weight has a non-finite value at "
                                    f"{tuple(int(i) for i in bad.nonzero()[0])}")


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
