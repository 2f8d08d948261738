"""The prune job under torchrun: the process group, each rank's device, and steps every rank agrees on.

Every rank runs the same job; a step either runs on every rank (:func:`everywhere`) or on rank 0 with its result
sent to the others (:func:`on_main`: writing, printing). If a step fails on any rank, every rank raises, and
another rank's bad input is raised here as an :class:`~swappass.core.errors.InputError` too, so that all ranks
exit 2 together.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Callable, TypeVar

import torch

from ..core.errors import InputError
from ..refine import distributed

__all__ = ["start_group", "rank_device", "world", "everywhere", "on_main", "raise_peer_input_error", "RANK_WAIT"]

T = TypeVar("T")
# Under torchrun, ranks > 0 wait in a collective while rank 0 alone saves the model and exports and verifies the
# ONNX file, which takes longer than 30 minutes for a large model. A rank that dies is noticed by torchrun at
# once, so this only bounds how long a hung rank 0 goes unnoticed.
RANK_WAIT = timedelta(hours=6)


def start_group(device: str) -> tuple[Any, bool]:
    """(the process group of a torchrun launch, whether this call created it); (None, False) without torchrun.

    gloo when ``--device`` names the CPU, else :func:`swappass.init_distributed`'s choice (NCCL with CUDA, one GPU
    per rank).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None, False
    created = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    try:
        group = distributed.init_distributed(backend=_backend_for(device), timeout=RANK_WAIT)
    except InputError as exc:
        raise InputError(f"torchrun launch: {exc}") from exc
    return group, created


def _backend_for(device: str) -> str | None:
    """``gloo`` for an explicit CPU device; None (the default backend) otherwise, a bad name included (the option
    check reports it on every rank)."""
    if device == "auto":
        return None
    try:
        return "gloo" if torch.device(device).type == "cpu" else None
    except RuntimeError:
        return None


def rank_device(device: str, group) -> str:
    """Where this rank works: ``device`` (the recipe's), a torchrun launch's GPU being this rank's own."""
    if group is None or torch.device(device).type == "cpu":
        return device
    if torch.device(device).index is not None:
        raise InputError(f"--device {device}: under torchrun every rank uses its own GPU (LOCAL_RANK); "
                         f"pass --device auto or cuda")
    mine = distributed.rank_device(group)
    if mine.type != "cuda":
        raise InputError(f"--device {device}: the process group ({torch.distributed.get_backend(group)}) "
                         f"does not use GPUs; pass --device cpu")
    return str(mine)


def world(group) -> dict[str, Any]:
    """The record's ``distributed`` entry: world size and backend (None for one process)."""
    backend = None if group is None else str(torch.distributed.get_backend(group))
    return {"world_size": distributed.get_world_size(group), "backend": backend}


def everywhere(fn: Callable[[], T], group, what: str) -> T:
    """``fn()`` on every rank; if it fails on any rank, every rank raises (another rank's bad input as
    :class:`InputError`)."""
    return _agreed(distributed.run_agreed, fn, group, what)


def on_main(fn: Callable[[], T], group, what: str) -> T:
    """``fn()`` on rank 0 (writing, printing), its result sent to every rank; a failure fails every rank."""
    return _agreed(distributed.main_process_shared, fn, group, what)


def _agreed(step: Callable[..., T], fn: Callable[[], T], group, what: str) -> T:
    """``fn()`` through ``step`` (a :mod:`swappass.refine.distributed` collective); a peer's bad input re-raised
    as ours."""
    if group is None:
        return fn()
    try:
        return step(fn, group, what=what)
    except distributed.DistributedError as exc:
        raise_peer_input_error(exc)
        raise


def raise_peer_input_error(exc: Exception) -> None:
    """If ``exc`` reports other ranks' bad input only, raise it as an :class:`InputError` with the first one's
    message, so that every rank exits 2."""
    if isinstance(exc, distributed.DistributedError) and exc.failures and exc.bad_input:
        rank, (_, message) = next(iter(exc.failures.items()))
        raise InputError(f"{message} [reported by rank {rank}]") from exc
