"""Plots of a pass's report: relative error reduction per block and projection (the paper's Figure 1 view).

matplotlib is optional (``pip install 'swappass[plot]'``) and imported only when a plot is drawn.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from ..core.errors import InputError
from ..graph.report import SparsifyReport

__all__ = ["PlotError", "require_matplotlib", "reduction_by_block", "plot_reduction"]

_BLOCK = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")


class PlotError(InputError):
    """A plot cannot be drawn (matplotlib missing, nothing pruned)."""


def require_matplotlib() -> None:
    """Raise :class:`PlotError` with the install command if matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise PlotError("plots need matplotlib: pip install 'swappass[plot]' (or pip install matplotlib)") from exc


def _block_and_projection(name: str) -> tuple[int | None, str]:
    """``model.layers.12.self_attn.q_proj`` -> ``(12, "self_attn.q_proj")``; no block number -> ``(None, name)``."""
    m = _BLOCK.search(name)
    if m is None:
        return None, name
    rest = name[m.end():]
    return int(m.group(1)), rest or name[: m.start()] or name


def reduction_by_block(report: SparsifyReport) -> dict[str, dict[int | None, float]]:
    """``{projection: {block index: relative error reduction}}`` over the pruned sites, in report order."""
    out: dict[str, dict[int | None, float]] = {}
    for row in report.pruned:
        block, proj = _block_and_projection(row.name)
        out.setdefault(proj, {})[block] = row.relative_reduction
    return out


def plot_reduction(report: SparsifyReport, path: str | Path, title: str | None = None) -> Path:
    """Write a PNG: relative error reduction ``(L_warm − L_final) / L_warm`` (%) against the block index, one
    line per projection (q/k/v/o/gate/up/down …); sites outside numbered blocks are listed at the right."""
    require_matplotlib()
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    series = reduction_by_block(report)
    if not series:
        raise PlotError("the report has no pruned site: nothing to plot")
    blocked = {p: v for p, v in series.items() if any(b is not None for b in v)}
    loose = [(p, v[None]) for p, v in series.items() if None in v]
    fig = Figure(figsize=(10, 5), dpi=120)
    ax = fig.add_subplot()
    markers = "osD^v<>ph*"
    for i, (proj, values) in enumerate(blocked.items()):
        xs = sorted(b for b in values if b is not None)
        ax.plot(xs, [100 * values[b] for b in xs], marker=markers[i % len(markers)], markersize=3, linewidth=1.2,
                label=proj)
    if loose:
        x0 = 1 + max((b for v in blocked.values() for b in v if b is not None), default=-1)
        for j, (name, value) in enumerate(loose):
            ax.scatter([x0 + j], [100 * value], marker="x", label=name)
    mean = report.mean_relative_reduction
    if not math.isnan(mean):
        ax.axhline(100 * mean, color="grey", linestyle="--", linewidth=0.8, label=f"mean {100 * mean:.1f}%")
    settings = report.settings
    default_title = "Relative error reduction of the 1-swap refinement over the warm start"
    if settings.get("pattern"):
        default_title += f" ({settings.get('warm_start', '')} warm start, {settings['pattern']}"
        default_title += f", {settings['max_iters']} iterations)" if "max_iters" in settings else ")"
    ax.set_title(title or default_title, fontsize=10)
    ax.set_xlabel("block")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("relative error reduction (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
