"""How many CPU threads each stage of a command uses: ``--threads``, else ``OMP_NUM_THREADS``, else automatic.

torch's intra-op threads (and with them the compiled swap search's OpenMP threads) serve every stage. A fixed
count has two failure modes on small machines: more threads than free cores make every parallel region wait for
a descheduled thread (on this project's shared 2-core VM, two threads ran the sampling 2–16× *slower* than one
while another job kept a core busy), and fewer leave cores idle. So the automatic choice is made per stage, when
the stage starts: the machine's physical cores available to this process, less the cores that other processes
kept busy over a short probe (:func:`busy_cores_elsewhere`), at least one. ``OMP_NUM_THREADS`` or ``--threads
N`` fix the count for every stage.

The thread count does not change the results of the default methods (the refinement's products run in fixed row
tiles and the kernel's rows are independent; tested); LAPACK's factorizations (SparseGPT's Cholesky) can differ
in the last bits between thread counts.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.errors import InputError

__all__ = ["ThreadPolicy", "physical_cores", "busy_cores_elsewhere", "parse_threads", "PROBE_SECONDS"]

PROBE_SECONDS = 0.25  # how long the automatic choice watches the other processes' CPU use
_KEEP_BOTH = 0.65  # a core counts as taken by others when they used more than this share of it


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (SMT siblings counted once), at most the cgroup's CPU
    quota; at least 1."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in allowed:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topo.joinpath("physical_package_id").read_text().strip(),
                       topo.joinpath("core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    quota = _cgroup_cpu_limit()
    return max(1, min(len(cores), quota) if quota else len(cores))


def _cgroup_cpu_limit() -> int | None:
    """CPUs granted by a cgroup v2 quota (``cpu.max``, e.g. a container's ``--cpus``), rounded up; None: none."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, -(-int(quota) // int(period)))


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy ticks of all CPUs, ticks of this process) from /proc, or None where /proc is missing."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    values = [int(x) for x in fields]
    busy = sum(values[:8]) - values[3] - values[4]  # all but idle and iowait (guest time is inside user)
    return busy, int(own[11]) + int(own[12])  # utime + stime of the whole process


def busy_cores_elsewhere(seconds: float = PROBE_SECONDS) -> float:
    """How many cores other processes kept busy during the next ``seconds`` (0.0 where it cannot be measured)."""
    first = _cpu_ticks()
    if first is None:
        return 0.0
    t0 = time.monotonic()
    time.sleep(seconds)
    second = _cpu_ticks()
    elapsed = time.monotonic() - t0
    if second is None or elapsed <= 0:
        return 0.0
    ticks = (second[0] - first[0]) - (second[1] - first[1])
    return max(0.0, ticks / os.sysconf("SC_CLK_TCK") / elapsed)


def parse_threads(value: str | int | None) -> int | None:
    """``--threads``: ``auto``/``None`` → None (automatic), else a positive count. Raises :class:`InputError`."""
    if value is None or value == "auto":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise InputError(f"--threads {value!r}: give a positive number of threads or 'auto'")
    return n


@dataclass
class ThreadPolicy:
    """The thread count of each stage: ``fixed`` (``--threads``, else ``OMP_NUM_THREADS``) or automatic.

    :meth:`enter` sets torch's intra-op threads for a stage and records the choice in :attr:`chosen`
    (stage → threads), which the run's ``swappass.json`` keeps.
    """

    fixed: int | None = None
    source: str = "auto"
    chosen: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_option(cls, value: str | int | None) -> "ThreadPolicy":
        n = parse_threads(value)
        if n is not None:
            return cls(n, "--threads")
        env = os.environ.get("OMP_NUM_THREADS", "").strip()
        if env:
            try:
                return cls(max(1, int(env.split(",")[0])), "OMP_NUM_THREADS")
            except ValueError:
                pass  # not a number: OpenMP ignores it too
        return cls()

    def count(self) -> int:
        """The threads a stage starting now gets."""
        if self.fixed is not None:
            return self.fixed
        cores = physical_cores()
        if cores == 1:
            return 1
        taken = int(busy_cores_elsewhere() + 1 - _KEEP_BOTH)  # cores others keep busy (rounded at _KEEP_BOTH)
        return max(1, min(cores, cores - taken))

    def enter(self, stage: str) -> int:
        """Set torch's threads for ``stage``; returns the count."""
        n = self.count()
        torch.set_num_threads(n)
        self.chosen[stage] = n
        return n

    def to_dict(self) -> dict:
        return {"policy": self.source if self.fixed is None else f"{self.source}={self.fixed}", **self.chosen}
