"""Observers: graph nodes that collect calibration statistics of a Gram group's input (PT2E-style).

An observer is an ``nn.Module`` inserted into the captured graph as a ``call_module`` node that reads a site
input; it records what it sees and returns nothing (a side branch: the model's values are unchanged).
:class:`GramObserver` accumulates ``G = Σ x xᵀ``; :class:`GramChannelObserver` adds DSnoT's per-channel statistics
(:class:`swappass.ChannelStats`); other observers subclass :class:`SiteObserver` and add entries to
:meth:`SiteObserver.statistics`. Which one is used is chosen by the ``observer`` factory passed to
:func:`swappass.prepare` / :func:`swappass.sparsify` (by default from the refinement method).

Expert sites: one :class:`ExpertDispatch` node per fused expert matmul reads its input rows and routing tensor,
splits the rows by expert (:func:`swappass.core.routing.expert_rows`) and hands each expert's rows to that
expert's own observer, so every expert's Gram matrix holds exactly the tokens the router sent to it.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..core.channelstats import ChannelStats
from ..core.gram import GramAccumulator
from ..core.routing import expert_rows

__all__ = ["SiteObserver", "GramObserver", "GramChannelObserver", "ExpertDispatch", "ObserverFactory",
           "gram_observer_factory"]


class SiteObserver(nn.Module):
    """Base class: sees every calibration value of one Gram group's input(s), shaped ``(..., d_in)``.

    ``name`` names the group's sites (used in error messages); ``d_in`` is their input size. ``enabled``:
    record what passes (True), or let it pass unrecorded (a stage re-run after its groups were pruned).
    """

    def __init__(self, name: str, d_in: int) -> None:
        super().__init__()
        self.name = name
        self.d_in = int(d_in)
        self.enabled = True  # False: the node passes values on without recording them

    def observe(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> None:
        if self.enabled:
            self.observe(x)

    def statistics(self) -> dict[str, object]:
        """What the pruning step needs: at least ``"G"`` (``d_in × d_in``) and ``"tokens"``."""
        raise NotImplementedError

    @property
    def tokens(self) -> int:
        raise NotImplementedError

    def release(self) -> None:
        """Free the collected statistics (after the group was pruned)."""


class GramObserver(SiteObserver):
    """Accumulates the Gram matrix of its input with :class:`swappass.GramAccumulator`.

    ``dtype``: float32 (default) or float64; ``tf32``: see :class:`swappass.GramAccumulator`. ``device``: where G is kept (default: the input's device;
    ``"cpu"`` offloads G, at the cost of one device-to-host copy of ``d_in²`` values per observed batch).
    Non-finite inputs raise :class:`swappass.NonFiniteActivationError` naming the sites. ``sequences`` counts
    the sequences seen (every index of an input's leading dimensions before ``(seq, d_in)``; a 2-D input
    counts as one), SparseGPT's ``n_samples``.
    """

    def __init__(
        self, name: str, d_in: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
        tf32: bool = False,
    ) -> None:
        super().__init__(name, d_in)
        self.accumulator = GramAccumulator(d_in, dtype=dtype, device=device, name=name, tf32=tf32)
        self.sequences = 0

    def observe(self, x: torch.Tensor) -> None:
        self.accumulator.update(x)
        self.sequences += x.shape[:-2].numel() if x.dim() > 2 else 1

    @property
    def tokens(self) -> int:
        return self.accumulator.tokens

    def statistics(self) -> dict[str, object]:
        return {"G": self.accumulator.G, "tokens": self.accumulator.tokens, "sequences": self.sequences}

    def release(self) -> None:
        self.accumulator.reset()
        self.sequences = 0

    def extra_repr(self) -> str:
        return f"{self.name!r}, d_in={self.d_in}, tokens={self.tokens}"


class GramChannelObserver(GramObserver):
    """:class:`GramObserver` plus DSnoT's per-channel statistics (:class:`swappass.ChannelStats`, float64, kept
    where G is), in ``statistics()["channel_stats"]``. Inputs are ``(..., seq, d_in)``; a 2-D input is one
    sequence (as in the DSnoT reference, which feeds one sequence per forward pass).
    """

    def __init__(
        self, name: str, d_in: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
        tf32: bool = False,
    ) -> None:
        super().__init__(name, d_in, dtype=dtype, device=device, tf32=tf32)
        self.channels = ChannelStats(d_in, device=device, name=name)

    def observe(self, x: torch.Tensor) -> None:
        super().observe(x)
        self.channels.update(x)

    def statistics(self) -> dict[str, object]:
        return {**super().statistics(), "channel_stats": self.channels}

    def release(self) -> None:
        super().release()
        self.channels.reset()


class ExpertDispatch(nn.Module):
    """Feeds the rows of a fused expert matmul to one observer per expert.

    ``slots[e]``: the observer of expert ``e`` (None: that expert is not pruned). ``layout``: ``"offsets"`` or
    ``"ids"`` (:mod:`swappass.core.routing`). Called as ``dispatch(x, route)`` with the matmul's rows ``x``
    (``S × d_in``) and its routing tensor; returns nothing.
    """

    def __init__(self, name: str, slots: list[SiteObserver | None], layout: str) -> None:
        super().__init__()
        self.name = name
        self.slots = list(slots)  # a plain list: the observers belong to the prepared model, not to this node
        self.layout = layout

    @torch.no_grad()
    def forward(self, x: torch.Tensor, route: torch.Tensor) -> None:
        for slot, rows in zip(self.slots, expert_rows(x, route, self.layout, len(self.slots))):
            if slot is not None and rows.shape[0]:
                slot.observe(rows)

    def extra_repr(self) -> str:
        return f"{self.name!r}, experts={len(self.slots)}, layout={self.layout!r}"


ObserverFactory = Callable[[str, int], SiteObserver]
"""``factory(name, d_in) -> SiteObserver``: builds the observer of one Gram group."""


def gram_observer_factory(
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    channel_stats: bool = False,
    tf32: bool = False,
) -> ObserverFactory:
    """The default factory: :class:`GramObserver` with the given accumulation dtype, G device and ``tf32`` flag
    (:class:`swappass.GramAccumulator`), or :class:`GramChannelObserver` with ``channel_stats=True`` (what
    ``refine="dsnot"`` needs)."""
    kind = GramChannelObserver if channel_stats else GramObserver

    def make(name: str, d_in: int) -> SiteObserver:
        return kind(name, d_in, dtype=dtype, device=device, tf32=tf32)

    return make
