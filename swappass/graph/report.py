"""What the pass did, per site: a table, JSON, and the pruned-weight records that export and the CLI consume."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..core.loss import relative_reduction
from ..core.masks import PrunedWeight, weight_key
from ..methods.prune_step import PruneResult

__all__ = ["SiteReport", "SparsifyReport"]


@dataclass
class SiteReport:
    """One Linear site.

    ``shape`` is ``(d_out, d_in)``; ``status`` is ``"pruned"``, ``"skipped"`` (the pattern cannot apply; see
    ``reason``), ``"ignored"`` (deselected) or ``"pending"`` (selected, not pruned yet). ``loss_warm`` /
    ``loss_final`` are the mask-only layer error ``||W X − (M⊙W) X||²_F`` over the calibration tokens for the
    warm-start mask and the final mask; ``loss_refit`` is the error ``||W X − W' X||²_F`` of the weights ``W'``
    written with a refit (NaN without). ``refine`` / ``refit``: the methods that ran on this site (``refine``
    is ``"none"`` where DSnoT skips the site; ``reason`` then says so). ``cross_moves``: cross-row moves of an
    unstructured budget. ``level``: sequential calibration level. ``expert``: the expert index of a site that is
    one expert of a fused MoE parameter ``param`` (``tokens`` then counts the tokens routed to it; an expert no
    calibration token reached keeps a magnitude mask and ``reason`` says so). ``role``: why a site is dense by
    default (``router``, ``expert gate``, ``vision tower``, ``projector``), see :mod:`swappass.graph.roles`.
    """

    name: str
    param: str
    module_type: str
    shape: tuple[int, int]
    status: str
    reason: str = ""
    transposed: bool = False
    pattern: str | None = None
    warm_start: str | None = None
    refine: str | None = None
    refit: str | None = None
    level: int | None = None
    group: str | None = None
    tokens: int = 0
    loss_warm: float = math.nan
    loss_final: float = math.nan
    loss_refit: float = math.nan
    swaps: int = 0
    cross_moves: int = 0
    iters: int = 0
    seconds: float = 0.0
    sparsity: float = 0.0
    expert: int | None = None
    role: str = ""
    _packed_mask: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> str:
        """The pruned weight's key: ``param``, or ``param[expert]`` for one expert of a fused parameter."""
        return weight_key(self.param, self.expert)

    @property
    def relative_reduction(self) -> float:
        """``(L_warm − L_final) / L_warm`` (0 when the warm start has no error, NaN when not pruned)."""
        if self.status != "pruned":
            return math.nan
        return relative_reduction(self.loss_warm, self.loss_final)

    @property
    def relative_reduction_refit(self) -> float:
        """``(L_warm − L_refit) / L_warm``: mask refinement and refit together (NaN without a refit)."""
        if self.status != "pruned" or math.isnan(self.loss_refit):
            return math.nan
        return relative_reduction(self.loss_warm, self.loss_refit)

    def record(self, result: PruneResult, warm_start: str, tokens: int, stored_mask: torch.Tensor) -> None:
        """Fill the row from a site's pruning result; ``stored_mask`` is the mask shaped like the parameter."""
        self.status, self.warm_start, self.tokens = "pruned", warm_start, tokens
        self.refine, self.refit, self.reason = result.refine, result.refit, result.note
        self.loss_warm, self.loss_final, self.loss_refit = result.loss_warm, result.loss_final, result.loss_refit
        self.swaps, self.iters, self.seconds = result.swaps, result.iters, result.seconds
        self.cross_moves = int(result.info.get("cross_moves", 0))
        self.set_mask(stored_mask)

    def assign(self, other: "SiteReport") -> None:
        """Take every field of ``other`` (a row restored from a checkpoint), its packed mask included."""
        for f in fields(SiteReport):
            setattr(self, f.name, getattr(other, f.name))

    @property
    def packed_mask(self) -> np.ndarray | None:
        """The mask as stored here: ``np.packbits`` of the parameter-shaped mask, flattened (None: not pruned)."""
        return self._packed_mask

    def set_packed_mask(self, packed: np.ndarray) -> None:
        """Set the mask from :attr:`packed_mask`'s form (e.g. read back from a checkpoint)."""
        self._packed_mask = np.ascontiguousarray(packed, dtype=np.uint8)

    def set_mask(self, stored_mask: torch.Tensor) -> None:
        """Keep the mask (shaped like the stored parameter) bit-packed on the CPU."""
        bits = stored_mask.detach().to("cpu", torch.bool).contiguous().numpy()
        self._packed_mask = np.packbits(bits.reshape(-1))
        self.sparsity = 1.0 - float(bits.sum()) / bits.size

    def mask(self) -> torch.Tensor | None:
        """The mask shaped like the stored parameter (bool, True = keep), or None if the site was not pruned."""
        if self._packed_mask is None:
            return None
        d0, d1 = (self.shape[1], self.shape[0]) if self.transposed else self.shape
        bits = np.unpackbits(self._packed_mask, count=d0 * d1).astype(bool)
        return torch.from_numpy(bits.reshape(d0, d1))

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        d["shape"] = list(self.shape)
        d["relative_reduction"] = self.relative_reduction
        d["relative_reduction_refit"] = self.relative_reduction_refit
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


@dataclass
class SparsifyReport:
    """Per-site results of :func:`swappass.sparsify` (``rows`` in graph order) and the run's settings."""

    rows: list[SiteReport] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def __iter__(self) -> Iterator[SiteReport]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, name: str) -> SiteReport:
        for r in self.rows:
            if name == r.name:
                return r
        for r in self.rows:
            if name == r.param:
                return r
        raise KeyError(f"no site named {name!r} in the report")

    @property
    def pruned(self) -> list[SiteReport]:
        return [r for r in self.rows if r.status == "pruned"]

    @property
    def skipped(self) -> list[SiteReport]:
        return [r for r in self.rows if r.status == "skipped"]

    @property
    def ignored(self) -> list[SiteReport]:
        return [r for r in self.rows if r.status == "ignored"]

    @property
    def mean_relative_reduction(self) -> float:
        vals = [r.relative_reduction for r in self.pruned]
        return float(np.mean(vals)) if vals else math.nan

    def pruned_weights(self) -> list[PrunedWeight]:
        """One :class:`swappass.core.masks.PrunedWeight` per pruned site (mask shaped like the stored parameter)."""
        return [PrunedWeight(r.param, r.mask(), r.pattern or "", r.transposed, r.expert) for r in self.pruned]

    def to_dict(self) -> dict[str, Any]:
        mean = self.mean_relative_reduction
        return {
            "settings": self.settings,
            "seconds": self.seconds,
            "mean_relative_reduction": None if math.isnan(mean) else mean,
            "sites": [r.to_dict() for r in self.rows],
        }

    def to_json(self, path: str | Path | None = None, indent: int = 2) -> str:
        """The report as JSON text (masks are not included); also written to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=indent, default=str)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SparsifyReport":
        names = set(SiteReport.__dataclass_fields__) - {"_packed_mask"}
        rows = []
        for d in data.get("sites", []):
            kw = {k: v for k, v in d.items() if k in names}
            kw["shape"] = tuple(kw["shape"])
            for k in ("loss_warm", "loss_final", "loss_refit"):
                kw[k] = math.nan if kw.get(k) is None else kw[k]
            rows.append(SiteReport(**kw))
        return cls(rows, dict(data.get("settings", {})), float(data.get("seconds", 0.0)))

    def __str__(self) -> str:
        refit = any(not math.isnan(r.loss_refit) for r in self.pruned)
        cross = any((r.pattern or "").startswith("unstructured") for r in self.pruned)
        experts = any(r.expert is not None for r in self.pruned)  # a MoE model: tokens per expert matter
        header = ("site", "shape", "pattern") + ("tokens",) * experts + ("warm loss", "final loss", "reduction",
                                                                         "swaps")
        header += ("cross",) * cross + ("refit loss", "with refit") * refit + ("time s",)
        lines, notes = [], []
        for r in self.rows:
            shape = f"{r.shape[0]}×{r.shape[1]}"
            if r.status == "pruned":
                cells = (r.name, shape, r.pattern or "") + (str(r.tokens),) * experts + (
                    f"{r.loss_warm:.4g}", f"{r.loss_final:.4g}", f"{100 * r.relative_reduction:.2f}%",
                    str(r.swaps)) + (str(r.cross_moves),) * cross
                if refit:
                    cells += ("", "") if math.isnan(r.loss_refit) else (
                        f"{r.loss_refit:.4g}", f"{100 * r.relative_reduction_refit:.2f}%")
                lines.append(cells + (f"{r.seconds:.2f}",))
            else:
                lines.append((r.name, shape, r.status) + ("",) * (len(header) - 3))
            notes.append(r.reason)
        widths = [max([len(h)] + [len(cells[i]) for cells in lines]) for i, h in enumerate(header)]

        def fmt(cells: tuple[str, ...], note: str = "") -> str:
            text = "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
            return (text.rstrip() + ("  " + note if note else "")).rstrip()

        body = [fmt(header), fmt(tuple("-" * w for w in widths))]
        body += [fmt(cells, note) for cells, note in zip(lines, notes)]
        mean = self.mean_relative_reduction
        body.append(
            f"{len(self.pruned)} pruned, {len(self.skipped)} skipped, {len(self.ignored)} ignored; mean relative "
            f"error reduction {'n/a' if math.isnan(mean) else f'{100 * mean:.2f}%'}; {self.seconds:.1f} s"
        )
        return "\n".join(body)
