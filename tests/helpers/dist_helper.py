"""Run a function in N CPU processes joined by a gloo process group (for tests/test_distributed.py).

Each worker runs with one intra-op thread (as torchrun sets by default); the single-process references in the
tests run with one thread too, so that the comparison is about the split, not about the thread count.
"""
from __future__ import annotations

import os
import traceback
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(rank: int, world: int, init_file: str, out_dir: str, fn, timeout_s: float) -> None:
    torch.set_num_threads(1)
    os.environ["DIST_HELPER_OUT"] = out_dir
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))
    try:
        result = {"ok": fn(rank, world, dist.group.WORLD)}
    except Exception as exc:
        result = {"error": exc, "type": type(exc).__name__, "message": str(exc), "trace": traceback.format_exc()}
    save_result(rank, result)
    try:
        dist.destroy_process_group()
    except Exception:
        pass


def save_result(rank: int, result: dict) -> None:
    """Write a worker's result where :func:`run_ranks` reads it (a worker about to exit abruptly may call it)."""
    torch.save(result, Path(os.environ["DIST_HELPER_OUT"]) / f"rank{rank}.pt")


def run_ranks(fn, world: int, tmp_path: Path, *, timeout_s: float = 60.0, collective_timeout_s: float = 20.0):
    """Run ``fn(rank, world, group)`` in ``world`` fresh processes; returns each rank's result dict (or None if it
    wrote none) and the exit codes. Processes still running after ``timeout_s`` are killed and reported as hung."""
    ctx = mp.get_context("spawn")
    init_file = tmp_path / "pg_init"
    out_dir = tmp_path / "results"
    out_dir.mkdir(exist_ok=True)
    procs = [ctx.Process(target=_entry, args=(r, world, str(init_file), str(out_dir), fn, collective_timeout_s))
             for r in range(world)]
    for p in procs:
        p.start()
    hung = []
    for r, p in enumerate(procs):
        p.join(timeout_s)
        if p.is_alive():
            hung.append(r)
            p.kill()
            p.join()
    results = []
    for r in range(world):
        f = out_dir / f"rank{r}.pt"
        results.append(torch.load(f, weights_only=False) if f.exists() else None)
    return results, [p.exitcode for p in procs], hung


def one_thread():
    """Context manager: torch intra-op threads = 1 inside (the workers' setting)."""
    class _One:
        def __enter__(self):
            self.n = torch.get_num_threads()
            torch.set_num_threads(1)

        def __exit__(self, *exc):
            torch.set_num_threads(self.n)

    return _One()


def hard_exit(code: int) -> None:
    os._exit(code)
