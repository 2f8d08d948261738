"""Rows across processes: the 1-swap refinement split over the ranks of a ``torch.distributed`` group.

Every rank runs the same program on the same inputs (model, calibration data, settings), so calibration and
warm starts are computed on every rank, identically. Only the refinement is split: rows are independent in the
swap search, so each rank refines a contiguous slice of the rows of each :func:`swappass.refine_mask` call —
whole row tiles (:mod:`swappass.core.rowtiles`) — and the slices are all-gathered, so that every rank ends with the
same full result. A row's computation depends only on its own row tile, so that result is bit for bit the one of
a single process with the same device type and settings.

Launch one process per GPU with ``torchrun`` and call :func:`init_distributed` (NCCL on GPUs, gloo on CPU)::

    group = swappass.init_distributed()          # None in a plain single-process run
    model, report = swappass.sparsify(model, calib, device=swappass.rank_device(group), group=group)

``NCCL_NVLS_ENABLE`` defaults to ``0`` (NVLink multicast off) from the import of this module on.
"""
from __future__ import annotations

import gc
import math
import os
import time
from datetime import timedelta
from typing import Callable, Mapping, TypeVar

import torch
import torch.distributed as dist

from ..core.errors import InputError, SwappassError

__all__ = [
    "DistributedError",
    "init_distributed",
    "close_distributed",
    "rank_device",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "main_process_only",
    "main_process_shared",
    "run_agreed",
    "row_partition",
    "row_range",
    "map_rows",
]

T = TypeVar("T")
NCCL_SETTINGS = {"NCCL_NVLS_ENABLE": "0"}  # NVLink multicast off (workplace rule); NCCL reads it at its init


def _configure_nccl() -> None:
    for key, value in NCCL_SETTINGS.items():
        os.environ.setdefault(key, value)


_configure_nccl()


class DistributedError(SwappassError, RuntimeError):
    """Another rank failed (while the rows were split, or in main_process_only), or the ranks' inputs differ.

    ``failures``: ``{rank: (exception type name, message)}`` of the ranks that failed (empty when the ranks'
    inputs differ). ``bad_input``: every failing rank raised an :class:`~swappass.core.errors.InputError` (so the
    run as a whole had bad input, e.g. a file only one rank could not read).
    """

    def __init__(
        self, message: str, failures: Mapping[int, tuple[str, str]] | None = None, bad_input: bool = False
    ) -> None:
        super().__init__(message)
        self.failures: dict[int, tuple[str, str]] = dict(failures or {})
        self.bad_input = bool(bad_input)


# ------------------------------------------------------------------------------------------------- launch
def init_distributed(
    backend: str | None = None, timeout: timedelta = timedelta(minutes=30)
) -> dist.ProcessGroup | None:
    """The default process group of a ``torchrun`` launch, initialised once; ``None`` for a single process.

    ``backend``: ``"nccl"`` (default when CUDA is available; each rank uses GPU ``LOCAL_RANK``) or ``"gloo"``.
    Sets ``NCCL_NVLS_ENABLE=0`` unless already set, before NCCL starts. ``timeout``: how long a collective waits
    for a rank that stopped answering before it raises.
    """
    _configure_nccl()
    if dist.is_available() and dist.is_initialized():
        return dist.group.WORLD
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    if not dist.is_available():
        raise InputError("this torch build has no torch.distributed; rows cannot be split across processes")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise InputError(
                f"NCCL needs one GPU per rank: LOCAL_RANK {local_rank} but {torch.cuda.device_count()} GPU(s) "
                f"visible; start at most that many processes per node (torchrun --nproc-per-node)"
            )
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", timeout=timeout, device_id=torch.device("cuda", local_rank))
    else:
        dist.init_process_group(backend, timeout=timeout)
    return dist.group.WORLD


def close_distributed(group: dist.ProcessGroup | None, *, wait: bool = True) -> None:
    """End the default process group (what :func:`init_distributed` started); nothing for ``group=None``.

    ``wait=True``: first wait for every rank, for use where all ranks stop at the same point (a result, or an
    error they agreed on). A rank that tears down its gloo connections while a peer still uses them, or leaves
    collective work objects to the interpreter's finalisation, can abort at exit ("terminate called without an
    active exception"). Pass ``wait=False`` after an error on this rank alone: its peers may never arrive
    (torchrun stops them).
    """
    if group is None or not (dist.is_available() and dist.is_initialized()):
        return
    if wait:
        dist.barrier(group)
    dist.destroy_process_group()
    gc.collect()  # free the group's pending work objects while the interpreter is fully alive


def rank_device(group: dist.ProcessGroup | None = None) -> torch.device:
    """Where this rank works: its current GPU for an NCCL group, else the CPU (single process: CUDA if any)."""
    if group is None:
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    return _comm_device(group)


def get_rank(group: dist.ProcessGroup | None = None) -> int:
    """This process's rank in ``group`` (0 without a group)."""
    return 0 if group is None else dist.get_rank(group)


def get_world_size(group: dist.ProcessGroup | None = None) -> int:
    """The number of ranks in ``group`` (1 without a group)."""
    return 1 if group is None else dist.get_world_size(group)


def is_main_process(group: dist.ProcessGroup | None = None) -> bool:
    """Rank 0 (or no group): the process that writes files and prints tables."""
    return get_rank(group) == 0


def main_process_only(fn: Callable[[], T], group: dist.ProcessGroup | None = None, *, what: str = "rank 0's work"
                      ) -> T | None:
    """Run ``fn()`` on rank 0 only (writing files, printing tables) while the other ranks wait for it.

    Returns ``fn()``'s result on rank 0 and ``None`` elsewhere. If ``fn`` raises, rank 0 raises it and every
    other rank raises :class:`DistributedError` naming ``what``, so that no rank waits forever.
    """
    if group is None or dist.get_world_size(group) == 1:
        return fn()
    _check_group(group)
    return run_agreed(fn if dist.get_rank(group) == 0 else lambda: None, group, what=what)


def main_process_shared(fn: Callable[[], T], group: dist.ProcessGroup | None = None, *,
                        what: str = "rank 0's work") -> T:
    """:func:`main_process_only`, then every rank receives rank 0's result (pickled: keep it small)."""
    result = main_process_only(fn, group, what=what)
    if group is None or dist.get_world_size(group) == 1:
        return result
    box = [result]
    dist.broadcast_object_list(box, src=dist.get_global_rank(group, 0), group=group)
    return box[0]


def run_agreed(fn: Callable[[], T], group: dist.ProcessGroup, *, what: str = "a step") -> T:
    """Run ``fn()`` on every rank of ``group``; if it raises on any rank, every rank raises.

    The failing ranks raise their own exception, the others :class:`DistributedError` naming ``what``, the
    failing ranks and their messages; no rank is left waiting in a later collective. Returns ``fn()``'s result.
    """
    _check_group(group)
    result, error = None, None
    try:
        result = fn()
    except Exception as exc:  # every rank learns of it below, then raises
        error = exc
    failed = torch.tensor([error is not None], dtype=torch.long, device=_comm_device(group))
    dist.all_reduce(failed, op=dist.ReduceOp.MAX, group=group)
    if failed.item():
        _raise_everywhere(error, group, what)
    return result


# ---------------------------------------------------------------------------------------------- partition
def row_partition(n_rows: int, tile: int, world: int) -> list[tuple[int, int]]:
    """Contiguous ``[lo, hi)`` row slices, one per rank, made of whole tiles of ``tile`` rows from row 0.

    Ranks get ``⌊n_tiles / world⌋`` or one more tile; with more ranks than tiles some slices are empty.
    """
    if n_rows < 0 or tile < 1 or world < 1:
        raise InputError(f"row_partition needs n_rows ≥ 0, tile ≥ 1, world ≥ 1; got {n_rows}, {tile}, {world}")
    n_tiles = -(-n_rows // tile)
    bounds = [min(n_rows, (r * n_tiles // world) * tile) for r in range(world + 1)]
    return [(bounds[r], bounds[r + 1]) for r in range(world)]


def row_range(n_rows: int, tile: int, group: dist.ProcessGroup) -> tuple[int, int]:
    """This rank's slice of :func:`row_partition`."""
    _check_group(group)
    return row_partition(n_rows, tile, dist.get_world_size(group))[dist.get_rank(group)]


def _check_group(group: dist.ProcessGroup) -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise InputError(
            "a process group was given but torch.distributed is not initialized: launch with torchrun and call "
            "swappass.refine.distributed.init_distributed() (or pass group=None for a single process)"
        )
    if dist.get_rank(group) < 0:
        raise InputError("this process is not a member of the given process group")


def _comm_device(group: dist.ProcessGroup) -> torch.device:
    """The device the group's collectives take tensors on: the current GPU for NCCL, else the CPU."""
    if "nccl" in str(dist.get_backend(group)).lower():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------- map_rows
Work = Callable[[int, int], tuple[list[torch.Tensor], int]]


def map_rows(
    n_rows: int,
    tile: int,
    group: dist.ProcessGroup,
    work: Work,
    *,
    inputs: Mapping[str, torch.Tensor] | None = None,
    name: str = "layer",
) -> tuple[list[torch.Tensor], int, dict]:
    """Run ``work(lo, hi)`` on this rank's slice and all-gather the results on every rank.

    ``work`` returns per-row tensors (first dimension ``hi − lo``; same dtypes and trailing shapes on every rank,
    also for an empty slice) and an iteration count. Returns the full tensors (rows ``0:n_rows``, on the
    collective's device), the largest count over ranks and timing info. Every rank must call this with the
    same ``n_rows``, ``tile`` and ``inputs`` (named tensors, compared across ranks first). If ``work`` raises on
    any rank, every rank raises (see :func:`run_agreed`).
    """
    _check_group(group)
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    parts = row_partition(n_rows, tile, world)
    lo, hi = parts[rank]
    dev = _comm_device(group)
    _check_same_inputs(inputs or {}, group, dev, name)
    t0 = time.perf_counter()
    pieces, iters = run_agreed(lambda: _synchronized(work(lo, hi), dev), group, what=f"{name}: refining the rows")
    t1 = time.perf_counter()
    most = torch.tensor([iters], dtype=torch.long, device=dev)
    dist.all_reduce(most, op=dist.ReduceOp.MAX, group=group)
    full = _all_gather_rows(pieces, [b - a for a, b in parts], group, dev)
    info = {"world_size": world, "rank": rank, "rows": (lo, hi), "seconds": t1 - t0,
            "wait_seconds": time.perf_counter() - t1}
    return full, int(most.item()), info


def _synchronized(result: T, dev: torch.device) -> T:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)  # the busy time includes the slice's queued GPU work
    return result


def _raise_everywhere(error: Exception | None, group: dist.ProcessGroup, name: str) -> None:
    """Some rank failed: the failing ranks raise their own exception, the others one naming them."""
    reports: list = [None] * dist.get_world_size(group)
    mine = None if error is None else (type(error).__name__, str(error), isinstance(error, InputError))
    dist.all_gather_object(reports, mine, group=group)
    if error is not None:
        raise error
    failures = {r: (m[0], m[1]) for r, m in enumerate(reports) if m is not None}
    bad_input = all(m[2] for m in reports if m is not None)
    failed = "; ".join(f"rank {r} ({kind}: {message})" for r, (kind, message) in failures.items())
    raise DistributedError(f"{name} failed on {failed}", failures, bad_input=bad_input)


def _fingerprint(t: torch.Tensor) -> torch.Tensor:
    """Shape and three float64 sums (plain, row-weighted, column-weighted) of a 2-D tensor, as int64 bits."""
    rows = t.sum(dim=1, dtype=torch.float64)
    cols = t.sum(dim=0, dtype=torch.float64)
    sums = torch.stack([
        rows.sum(),
        (rows * torch.arange(1, rows.numel() + 1, dtype=torch.float64, device=t.device)).sum(),
        (cols * torch.arange(1, cols.numel() + 1, dtype=torch.float64, device=t.device)).sum(),
    ]).cpu()
    return torch.cat([torch.tensor(list(t.shape), dtype=torch.long), sums.view(torch.long)])


def _check_same_inputs(
    inputs: Mapping[str, torch.Tensor], group: dist.ProcessGroup, dev: torch.device, name: str
) -> None:
    """Raise on every rank if any rank's 2-D ``inputs`` differ from rank 0's (their fingerprints are compared)."""
    if not inputs:
        return
    mine = torch.stack([_fingerprint(t) for t in inputs.values()]).to(dev)
    every = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(every, mine, group=group)
    for r, theirs in enumerate(every[1:], start=1):
        differ = [key for i, key in enumerate(inputs) if not torch.equal(theirs[i], every[0][i])]
        if differ:
            raise DistributedError(
                f"{name}: the ranks' inputs differ ({', '.join(differ)} of rank {r} differ from rank 0's): every "
                f"rank must run the same model, calibration data and settings for the rows to be split"
            )


def _all_gather_rows(
    pieces: list[torch.Tensor], counts: list[int], group: dist.ProcessGroup, dev: torch.device
) -> list[torch.Tensor]:
    """Concatenate every rank's per-row ``pieces`` in rank order (one all-gather of their bytes)."""
    n = pieces[0].shape[0]
    layout = [(t.dtype, tuple(t.shape[1:])) for t in pieces]
    cols = [t.reshape(n, math.prod(t.shape[1:])).contiguous().view(torch.uint8) for t in pieces]
    packed = torch.cat(cols, dim=1).to(dev)
    buf = torch.zeros(max(counts), packed.shape[1], dtype=torch.uint8, device=dev)
    buf[:n] = packed
    every = [torch.empty_like(buf) for _ in counts]
    dist.all_gather(every, buf, group=group)
    rows = torch.cat([b[:c] for b, c in zip(every, counts)])
    out, col = [], 0
    for (dtype, shape), piece in zip(layout, cols):
        width = piece.shape[1]
        own = rows[:, col : col + width].clone(memory_format=torch.contiguous_format)  # its own storage
        out.append(own.view(dtype).reshape(rows.shape[0], *shape))
        col += width
    return out
