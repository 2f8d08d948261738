"""Input checks shared by the layer-level API: clear errors (:class:`InputError`) instead of silently wrong masks."""
from __future__ import annotations

import torch

from .errors import InputError
from .patterns import SparsityPattern

__all__ = ["check_layer", "check_count"]


def _first_nonfinite(t: torch.Tensor) -> tuple[int, ...] | None:
    bad = ~torch.isfinite(t)
    if not bool(bad.any()):
        return None
    return tuple(int(i) for i in bad.nonzero()[0])


def check_layer(
    W: torch.Tensor,
    G: torch.Tensor | None,
    mask: torch.Tensor | None = None,
    pattern: SparsityPattern | None = None,
    name: str = "layer",
    allow_missing_G: bool = False,
) -> None:
    """Validate ``W`` (``d_out × d_in``), ``G`` (``d_in × d_in``) and an optional mask against ``pattern``.

    Raises :class:`InputError` naming ``name``, the offending tensor, its shape and what to change.
    """
    if not isinstance(W, torch.Tensor) or W.dim() != 2:
        shape = tuple(W.shape) if isinstance(W, torch.Tensor) else type(W).__name__
        raise InputError(f"{name}: W must be a 2-D tensor (d_out × d_in), got {shape}")
    if not W.is_floating_point():
        raise InputError(f"{name}: W must be a floating-point tensor, got {W.dtype}")
    d_out, d_in = W.shape
    where = _first_nonfinite(W)
    if where is not None:
        raise InputError(f"{name}: W (shape {d_out}×{d_in}) has a non-finite value at {where}")
    if G is None:
        if not allow_missing_G:
            raise InputError(f"{name}: the Gram matrix G (d_in × d_in = {d_in}×{d_in}) is required")
    else:
        if not isinstance(G, torch.Tensor) or G.dim() != 2 or G.shape[0] != G.shape[1]:
            shape = tuple(G.shape) if isinstance(G, torch.Tensor) else type(G).__name__
            raise InputError(f"{name}: G must be a square d_in × d_in matrix, got shape {shape}")
        if G.shape[0] != d_in:
            raise InputError(
                f"{name}: G is {G.shape[0]}×{G.shape[1]} but W has d_in = {d_in} columns "
                f"(W is {d_out}×{d_in}; G must be {d_in}×{d_in})"
            )
        if not G.is_floating_point():
            raise InputError(f"{name}: G must be a floating-point tensor, got {G.dtype}")
        where = _first_nonfinite(G)
        if where is not None:
            raise InputError(f"{name}: G ({d_in}×{d_in}) has a non-finite value at {where}")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise InputError(f"{name}: mask must be a bool tensor (True = keep), got {getattr(mask, 'dtype', type(mask))}")
        if tuple(mask.shape) != (d_out, d_in):
            raise InputError(f"{name}: mask shape {tuple(mask.shape)} does not match W's {(d_out, d_in)}")
    if pattern is not None:
        pattern.check_shape(d_out, d_in, where=name)
        if mask is not None:
            pattern.check_mask(mask, where=f"{name}: mask")


def check_count(
    value: object, what: str, name: str | None = None, minimum: int = 0, optional: bool = False
) -> None:
    """Raise :class:`InputError` unless ``value`` is an integer ``>= minimum`` (``None`` too when ``optional``);
    ``what`` names the argument (``"max_iters"``), ``name`` the layer (a prefix of the message)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a non-negative integer" if minimum == 0 else f"an integer of at least {minimum}"
        raise InputError(f"{name + ': ' if name else ''}{what} must be {kind}, got {value!r}")
