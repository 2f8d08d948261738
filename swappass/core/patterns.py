"""Sparsity patterns: what a feasible mask looks like.

Masks are bool tensors shaped like the weight as the user sees it, ``(d_out, d_in)``, **True = keep**.

* :class:`RowSparsity` -- every row keeps exactly ``round(d_in * (1 - sparsity))`` weights.
* :class:`NMSparsity` -- every block of ``m`` consecutive inputs of a row keeps exactly ``n``
  ("2:4" = 2 kept of 4, as NVIDIA's sparse tensor cores use it).
* :class:`UnstructuredSparsity` -- the layer keeps ``round(d_out * d_in * (1 - sparsity))`` weights in total;
  rows may keep different counts ("unstructured:0.6").

All make the layer error a sum of independent row terms, which is what the 1-swap search needs; with the
unstructured budget the rows are coupled only through the shared total.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Union

import torch

from .errors import InputError

__all__ = ["SparsityPattern", "RowSparsity", "NMSparsity", "UnstructuredSparsity", "PatternLike", "parse_pattern"]


class SparsityPattern:
    """Base class of the patterns. Subclasses define :meth:`kept_per_row` and :meth:`mask_error`."""

    kind: str = ""

    def kept_per_row(self, d_in: int) -> int:
        raise NotImplementedError

    def kept_total(self, d_out: int, d_in: int) -> int:
        """Weights a feasible ``(d_out, d_in)`` mask keeps in total."""
        return d_out * self.kept_per_row(d_in)

    def shape_error(self, d_out: int, d_in: int) -> str | None:
        """Why a ``(d_out, d_in)`` weight cannot take this pattern, or ``None`` when it can."""
        if d_out < 1 or d_in < 1:
            return f"weight shape ({d_out}, {d_in}) is empty"
        return None

    def check_shape(self, d_out: int, d_in: int, where: str = "weight") -> None:
        """Raise :class:`InputError` naming ``where`` if the shape cannot take the pattern."""
        err = self.shape_error(d_out, d_in)
        if err is not None:
            raise InputError(f"{where}: {err}")

    def mask_error(self, mask: torch.Tensor) -> str | None:
        """Why ``mask`` violates the pattern (first offending row), or ``None`` when feasible."""
        raise NotImplementedError

    def is_feasible(self, mask: torch.Tensor) -> bool:
        return self.mask_error(mask) is None

    def check_mask(self, mask: torch.Tensor, where: str = "mask") -> None:
        """Raise :class:`InputError` naming ``where`` and the first offending row if infeasible."""
        if mask.dtype != torch.bool or mask.dim() != 2:
            raise InputError(f"{where}: expected a 2-D bool mask, got {mask.dtype} of shape {tuple(mask.shape)}")
        self.check_shape(*mask.shape, where=where)
        err = self.mask_error(mask)
        if err is not None:
            raise InputError(f"{where} does not satisfy pattern {self}: {err}")

    def density(self, d_in: int) -> float:
        return self.kept_per_row(d_in) / d_in

    def to_dict(self) -> dict:
        return {"kind": self.kind, "spec": str(self)}


@dataclass(frozen=True)
class RowSparsity(SparsityPattern):
    """Uniform per-row sparsity: each row keeps ``round(d_in * (1 - sparsity))`` weights."""

    sparsity: float
    kind = "row"

    def __post_init__(self) -> None:
        s = self.sparsity
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or not 0.0 <= s < 1.0:
            raise InputError(
                f"row sparsity must be a number in [0, 1) (fraction of weights pruned per row), got {s!r}"
            )

    def kept_per_row(self, d_in: int) -> int:
        return int(round(d_in * (1.0 - self.sparsity)))

    def shape_error(self, d_out: int, d_in: int) -> str | None:
        err = super().shape_error(d_out, d_in)
        if err is None and self.kept_per_row(d_in) < 1:
            err = f"sparsity {self.sparsity} keeps no weight of a row of {d_in} inputs"
        return err

    def mask_error(self, mask: torch.Tensor) -> str | None:
        k = self.kept_per_row(mask.shape[1])
        counts = mask.sum(dim=1)
        bad = (counts != k).nonzero()
        if bad.numel():
            r = int(bad[0])
            return f"row {r} keeps {int(counts[r])} weights, the pattern needs exactly {k} of {mask.shape[1]}"
        return None

    def __str__(self) -> str:
        return f"row:{self.sparsity:g}"


@dataclass(frozen=True)
class NMSparsity(SparsityPattern):
    """N:M sparsity: every block of ``m`` consecutive inputs of a row keeps exactly ``n``."""

    n: int
    m: int
    kind = "nm"

    def __post_init__(self) -> None:
        n, m = self.n, self.m
        if not (isinstance(n, int) and isinstance(m, int)) or m < 1 or not 0 < n < m:
            raise InputError(
                f"N:M pattern needs integers 0 < N < M (N weights kept in each block of M), got {n}:{m}"
            )

    def kept_per_row(self, d_in: int) -> int:
        return d_in // self.m * self.n

    def shape_error(self, d_out: int, d_in: int) -> str | None:
        err = super().shape_error(d_out, d_in)
        if err is None and d_in % self.m:
            err = (
                f"d_in = {d_in} is not divisible by M = {self.m}, so pattern {self} cannot be applied "
                f"(pick an M that divides {d_in}, or a per-row pattern such as 'row:{1 - self.n / self.m:g}')"
            )
        return err

    def mask_error(self, mask: torch.Tensor) -> str | None:
        d_out, d_in = mask.shape
        counts = mask.reshape(d_out, d_in // self.m, self.m).sum(dim=2)
        bad = (counts != self.n).nonzero()
        if bad.numel():
            r, b = (int(v) for v in bad[0])
            return (
                f"row {r}, block {b} (inputs {b * self.m}..{b * self.m + self.m - 1}) keeps "
                f"{int(counts[r, b])} weights, the pattern needs exactly {self.n}"
            )
        return None

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"


def _check_fraction(s: object, what: str) -> None:
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or not 0.0 <= s < 1.0:
        raise InputError(f"{what} sparsity must be a number in [0, 1) (fraction of weights pruned), got {s!r}")


@dataclass(frozen=True)
class UnstructuredSparsity(SparsityPattern):
    """Layer budget: the layer keeps ``round(d_out * d_in * (1 - sparsity))`` weights; rows may differ.

    Rows may keep anything from none to all of their inputs. Parsed from ``"unstructured:0.6"``.
    """

    sparsity: float
    kind = "unstructured"

    def __post_init__(self) -> None:
        _check_fraction(self.sparsity, "unstructured")

    def kept_per_row(self, d_in: int) -> int:
        raise TypeError(
            f"pattern {self} has no per-row count (rows may differ); use kept_total(d_out, d_in)"
        )

    def kept_total(self, d_out: int, d_in: int) -> int:
        return int(round(d_out * d_in * (1.0 - self.sparsity)))

    def density(self, d_in: int) -> float:
        return 1.0 - self.sparsity

    def shape_error(self, d_out: int, d_in: int) -> str | None:
        err = super().shape_error(d_out, d_in)
        if err is None and self.kept_total(d_out, d_in) < 1:
            err = f"sparsity {self.sparsity} keeps no weight of a {d_out}×{d_in} layer"
        return err

    def mask_error(self, mask: torch.Tensor) -> str | None:
        d_out, d_in = mask.shape
        need, kept = self.kept_total(d_out, d_in), int(mask.sum())
        if kept != need:
            return f"the mask keeps {kept} weights, the pattern needs exactly {need} of {d_out}×{d_in} in total"
        return None

    def __str__(self) -> str:
        return f"unstructured:{self.sparsity:g}"


PatternLike = Union[str, float, SparsityPattern]

_NM_RE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_pattern(spec: PatternLike) -> SparsityPattern:
    """Parse ``0.6``, ``"0.6"``, ``"row:0.6"``, ``"60%"``, ``"2:4"`` or ``"unstructured:0.6"`` into a pattern."""
    if isinstance(spec, SparsityPattern):
        return spec
    if isinstance(spec, bool):
        raise InputError(f"sparsity pattern must be a number or a string such as '0.6' or '2:4', got {spec!r}")
    if isinstance(spec, (int, float)):
        return RowSparsity(float(spec))
    if not isinstance(spec, str):
        raise InputError(f"sparsity pattern must be a number or a string such as '0.6' or '2:4', got {spec!r}")
    text = spec.strip().lower()
    nm = _NM_RE.match(text)
    if nm:
        return NMSparsity(int(nm.group(1)), int(nm.group(2)))
    unstructured = text.startswith("unstructured:")
    value = text.split(":", 1)[1].strip() if unstructured or text.startswith("row:") else text
    try:
        s = float(value[:-1]) / 100.0 if value.endswith("%") else float(value)
    except ValueError:
        raise InputError(
            f"cannot parse sparsity pattern {spec!r}: use a fraction ('0.6', 'row:0.6', '60%'), N:M ('2:4', '4:8') "
            f"or a layer budget ('unstructured:0.6')"
        ) from None
    return UnstructuredSparsity(s) if unstructured else RowSparsity(s)
