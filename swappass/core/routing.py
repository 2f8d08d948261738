"""Which calibration rows a mixture-of-experts layer sends to each expert (tensor math for the expert sites).

A fused expert computation reads one matrix of token rows ``x`` (``S × d_in``, one row per (token, expert)
pair that the router chose) and a routing tensor saying which expert each row goes to, in one of two layouts:

* ``"offsets"`` (grouped matmuls: ``torch._grouped_mm`` and its fallbacks): the rows are sorted by expert and
  ``offsets`` (``E``, int) holds the cumulative row counts, so expert ``e`` owns rows
  ``offsets[e-1] : offsets[e]`` (``0 : offsets[0]`` for the first). Rows past ``offsets[-1]`` belong to no
  expert (expert-parallel sentinels) and are dropped.
* ``"ids"`` (batched matmuls over gathered weights): ``ids`` (``S``, int) is the expert of every row.

:func:`expert_rows` splits ``x`` into one block per expert, in row order within each expert.
"""
from __future__ import annotations

import torch

from .errors import InputError

__all__ = ["ROUTING_LAYOUTS", "expert_rows", "expert_counts"]

ROUTING_LAYOUTS = ("offsets", "ids")


def expert_counts(route: torch.Tensor, layout: str, num_experts: int) -> list[int]:
    """Rows per expert (``num_experts`` counts) for the routing tensor ``route`` in ``layout``."""
    if layout == "offsets":
        ends = route.reshape(-1).to("cpu", torch.int64)
        if ends.numel() != num_experts:
            raise InputError(f"expert offsets hold {ends.numel()} entries for {num_experts} experts")
        starts = torch.cat([ends.new_zeros(1), ends[:-1]])
        return (ends - starts).clamp_min(0).tolist()
    if layout == "ids":
        ids = route.reshape(-1).to(torch.int64)
        return torch.bincount(ids[(ids >= 0) & (ids < num_experts)], minlength=num_experts).cpu().tolist()
    raise InputError(f"routing layout must be one of {ROUTING_LAYOUTS}, got {layout!r}")


def expert_rows(x: torch.Tensor, route: torch.Tensor, layout: str, num_experts: int) -> list[torch.Tensor]:
    """``x`` (``S × d_in``, or ``S × d_in × 1`` / ``S × 1 × d_in`` as batched matmuls read it) split into the
    rows of each expert: a list of ``num_experts`` tensors ``(S_e, d_in)`` (``S_e`` may be 0)."""
    if x.dim() == 3:
        x = x.squeeze(-1) if x.shape[-1] == 1 else x.squeeze(1)
    if x.dim() != 2:
        raise InputError(f"expert rows must be (rows, d_in), got a tensor of shape {tuple(x.shape)}")
    counts = expert_counts(route, layout, num_experts)
    if layout == "offsets":
        used = sum(counts)
        if used > x.shape[0]:
            raise InputError(f"expert offsets cover {used} rows, the input has {x.shape[0]}")
        return list(torch.split(x[:used], counts))
    ids = route.reshape(-1).to(torch.int64)
    if ids.numel() != x.shape[0]:
        raise InputError(f"{ids.numel()} expert ids for {x.shape[0]} rows")
    order = torch.argsort(ids, stable=True)
    keep = order[(ids[order] >= 0) & (ids[order] < num_experts)]
    return list(torch.split(x[keep], counts))
