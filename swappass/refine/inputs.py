"""What every 1-swap refinement settles first: checked inputs, the work dtype and tolerance, G as the search uses it."""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..core.patterns import SparsityPattern
from ..core.validate import check_count, check_layer
from ..core.workspace import work_dtype

__all__ = ["WorkSetup", "work_setup"]


class WorkSetup(NamedTuple):
    """``device``, ``dtype`` (float32/float64), ``rtol`` (a swap needs ``ΔL < −rtol · L_row``) and ``G`` on that
    device in that dtype, made exactly symmetric (its rows serve as its columns in the ``c`` update)."""

    device: torch.device
    dtype: torch.dtype
    rtol: float
    G: torch.Tensor


def work_setup(
    W: torch.Tensor,
    G: torch.Tensor,
    mask: torch.Tensor,
    pattern: SparsityPattern,
    max_iters: int,
    *,
    rtol: float | None,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
    name: str,
) -> WorkSetup:
    """Check ``W`` (d_out × d_in), ``G`` (d_in × d_in), ``mask`` (feasible for ``pattern``) and ``max_iters``;
    the work device (default: W's), dtype (float64 if W or G is, else float32), default ``rtol`` (1e-6 in float32,
    1e-12 in float64) and the symmetric work copy of G."""
    check_layer(W, G, mask, pattern, name=name)
    check_count(max_iters, "max_iters", name)
    dev = torch.device(device) if device is not None else W.device
    dt = work_dtype(W, G, dtype=dtype)
    rtol = (1e-6 if dt == torch.float32 else 1e-12) if rtol is None else float(rtol)
    Gw = G.to(device=dev, dtype=dt)
    return WorkSetup(dev, dt, rtol, (Gw + Gw.T) / 2)
