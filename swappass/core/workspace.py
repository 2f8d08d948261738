"""Where and in what precision the layer-level work runs: the work dtype and a memory plan from free memory."""
from __future__ import annotations

import torch

from .errors import InputError

__all__ = ["work_dtype", "available_bytes", "memory_plan"]


def work_dtype(*tensors: torch.Tensor | None, dtype: torch.dtype | None = None) -> torch.dtype:
    """``dtype`` if given (float32 or float64), else float64 when any tensor is float64, else float32."""
    if dtype is not None:
        if dtype not in (torch.float32, torch.float64):
            raise InputError(f"refinement dtype must be float32 or float64, got {dtype}")
        return dtype
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def available_bytes(device: torch.device) -> int:
    """Memory free now on ``device``: CUDA's free memory, or the host's MemAvailable (4 GiB if unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def memory_plan(d_out: int, d_in: int, device: torch.device, itemsize: int, batch_rows: int | None) -> tuple[int, int]:
    """Rows per refinement batch and the score-chunk budget (elements) from the memory available now.

    ``batch_rows`` given: kept as is. The budget is a quarter of the free memory, at most 1 GiB on the CPU and
    8 GiB on a GPU; a row costs ``d_in`` values of w, c and scratch (and the CPU loop's bound state) plus its mask.
    """
    avail = available_bytes(device)
    budget = max(64 << 20, min(avail // 4, (1 << 30) if device.type == "cpu" else (8 << 30)))
    chunk_elems = max(d_in * 8, budget // (3 * itemsize))
    if batch_rows is None:
        arrays = 4 if device.type == "cpu" else 3  # w, c, scratch (+ the CPU loop's bound state)
        per_row = d_in * (arrays * itemsize + 2)  # + mask
        batch_rows = max(1, min(d_out, budget // per_row))
    return int(batch_rows), int(chunk_elems)
