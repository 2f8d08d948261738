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

__all__ = ["SiteReport", "SparsifyReport", "TABLE_STYLES", "TABLE_WIDTH", "AUTO_SITES_MAX", "projection_kind"]

TABLE_STYLES = ("auto", "sites", "summary", "full")  # see SparsifyReport.table
TABLE_WIDTH = 80  # columns of the "sites" and "summary" tables
AUTO_SITES_MAX = 40  # "auto": one row per site up to this many sites, else the summary


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
        return self.table("full")

    def table(self, style: str = "full", width: int = TABLE_WIDTH) -> str:
        """The report as text. ``style``: ``"full"`` (one row per site, every column, full names), ``"sites"``
        (one row per site within ``width`` columns: names without their common prefix, a pattern shared by every
        site in the header), ``"summary"`` (one row per projection kind, e.g. ``self_attn.q_proj`` over all
        blocks: sites, mean / min / max relative error reduction, swaps, seconds), ``"auto"`` (``"sites"`` up to
        :data:`AUTO_SITES_MAX` sites, else ``"summary"``). Every style ends with the totals line."""
        if style not in TABLE_STYLES:
            raise ValueError(f"table style must be one of {TABLE_STYLES}, got {style!r}")
        if style == "auto":
            style = "sites" if len(self.rows) <= AUTO_SITES_MAX else "summary"
        if style == "summary":
            return "\n".join(_summary_lines(self, width) + [self._totals()])
        return "\n".join(_site_lines(self, compact=style == "sites", width=width) + [self._totals()])

    def _totals(self) -> str:
        mean = self.mean_relative_reduction
        return (f"{len(self.pruned)} pruned, {len(self.skipped)} skipped, {len(self.ignored)} ignored; mean relative "
                f"error reduction {'n/a' if math.isnan(mean) else f'{100 * mean:.2f}%'}; {self.seconds:.1f} s")


def _common_prefix(names: list[str]) -> str:
    """The longest dotted prefix shared by all names (``"model.layers."``), never a whole name."""
    if len(names) < 2:
        return ""
    parts = [n.split(".") for n in names]
    prefix = []
    for column in zip(*(p[:-1] for p in parts)):
        if len(set(column)) != 1:
            break
        prefix.append(column[0])
    return ".".join(prefix) + "." if prefix else ""


def _fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters from the left (``…`` marks the cut)."""
    return text if len(text) <= width else "…" + text[len(text) - width + 1:]


def _render(header: tuple[str, ...], lines: list[tuple[str, ...]], notes: list[str], left: int,
            width: int | None) -> list[str]:
    """Columns separated by two spaces (the first ``left`` left-aligned, the rest right-aligned), a rule under
    the header, each row's note after it (cut to ``width`` when given)."""
    widths = [max([len(h)] + [len(cells[i]) for cells in lines if i < len(cells)]) for i, h in enumerate(header)]

    def fmt(cells: tuple[str, ...], note: str = "") -> str:
        text = "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        text = (text.rstrip() + ("  " + note if note else "")).rstrip()
        return text if width is None or len(text) <= width else text[: width - 1] + "…"

    body = [fmt(header), fmt(tuple("-" * w for w in widths))]
    return body + [fmt(cells, note) for cells, note in zip(lines, notes)]


def _site_lines(report: SparsifyReport, compact: bool, width: int) -> list[str]:
    pruned = report.pruned
    refit = any(not math.isnan(r.loss_refit) for r in pruned)
    cross = any((r.pattern or "").startswith("unstructured") for r in pruned)
    patterns = {r.pattern for r in pruned}
    show_pattern = not compact or len(patterns) > 1
    prefix = _common_prefix([r.name for r in pruned]) if compact else ""
    experts = any(r.expert is not None for r in pruned)  # a MoE model: tokens per expert matter
    header = ("site", "shape") + ("pattern",) * show_pattern + ("tokens",) * experts + (
        "warm loss", "final loss", "reduction", "swaps")
    header += ("cross",) * cross + ("refit loss", "with refit") * refit + ("time s",)
    lines, notes = [], []
    for r in report.rows:
        name = r.name[len(prefix):] if prefix and r.name.startswith(prefix) else r.name
        shape = f"{r.shape[0]}×{r.shape[1]}"
        if r.status == "pruned":
            cells = (name, shape) + (r.pattern or "",) * show_pattern + (str(r.tokens),) * experts + (
                f"{r.loss_warm:.4g}", f"{r.loss_final:.4g}", f"{100 * r.relative_reduction:.2f}%", str(r.swaps))
            cells += (str(r.cross_moves),) * cross
            if refit:
                cells += ("", "") if math.isnan(r.loss_refit) else (
                    f"{r.loss_refit:.4g}", f"{100 * r.relative_reduction_refit:.2f}%")
            lines.append(cells + (f"{r.seconds:.2f}",))
        else:
            lines.append((name, shape, r.status) + ("",) * (len(header) - 3))
        notes.append(r.reason)
    if compact:  # names that would push the table past the width lose their beginning
        others = [max([len(h)] + [len(c[i]) for c in lines if i < len(c)]) for i, h in enumerate(header)][1:]
        room = max(12, width - sum(others) - 2 * (len(header) - 1))
        lines = [(_fit(c[0], room),) + tuple(c[1:]) for c in lines]
    out = []
    if compact:
        head = [f"{len(pruned)} sites" + (f" under {prefix.rstrip('.')}" if prefix else "")]
        head += [f"pattern {next(iter(patterns))}"] if len(patterns) == 1 and patterns != {None} else []
        out.append(_fit(", ".join(head) + " (every column: --table full)", width))
    return out + _render(header, lines, notes, 3 if show_pattern else 2, width if compact else None)


def projection_kind(name: str) -> str:
    """A site's name without its block: ``model.layers.3.self_attn.q_proj`` → ``self_attn.q_proj`` (the part after
    the last numeric component; the whole name when there is none)."""
    parts = name.split(".")
    numeric = [i for i, p in enumerate(parts) if p.isdigit()]
    return ".".join(parts[numeric[-1] + 1:]) if numeric and numeric[-1] < len(parts) - 1 else name


def _summary_lines(report: SparsifyReport, width: int) -> list[str]:
    groups: dict[str, list[SiteReport]] = {}
    for r in report.pruned:
        groups.setdefault(projection_kind(r.name), []).append(r)
    header = ("projection", "sites", "shape", "reduction", "min", "max", "swaps", "time s")
    lines = []
    for kind, rows in groups.items():
        shapes = {r.shape for r in rows}
        shape = f"{rows[0].shape[0]}×{rows[0].shape[1]}" if len(shapes) == 1 else "mixed"
        red = [100 * r.relative_reduction for r in rows]
        lines.append((kind, str(len(rows)), shape, f"{np.mean(red):.2f}%", f"{min(red):.2f}%", f"{max(red):.2f}%",
                      str(sum(r.swaps for r in rows)), f"{sum(r.seconds for r in rows):.1f}"))
    notes = [""] * len(lines)
    for r in report.rows:
        if r.status != "pruned":
            lines.append((r.name, "", f"{r.shape[0]}×{r.shape[1]}", r.status) + ("",) * 4)
            notes.append(r.reason)
    patterns = sorted({r.pattern or "" for r in report.pruned})
    head = (f"{len(report.pruned)} sites by projection" + (f", pattern {', '.join(patterns)}" if patterns else "")
            + "; error reduction: mean, min, max over the blocks")
    return [_fit(head, width)] + _render(header, lines, notes, 1, width)
