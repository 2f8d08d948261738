"""Progress of an export: each stage (load, capture, translate, build, write, audit, verify) says when it starts
and how long it took, on stderr, so that a user sees something within seconds; the times go into the report.
"""
from __future__ import annotations

import contextlib
import sys
import time
from typing import IO, Iterator

__all__ = ["StageLog"]


class StageLog:
    """Times named stages; with ``enabled`` prints ``export: <stage> …`` at the start and ``… 12.3 s`` at the
    end. ``seconds`` maps each stage to its wall time (a stage run twice adds up)."""

    def __init__(self, enabled: bool = True, prefix: str = "export", stream: IO[str] | None = None) -> None:
        self.enabled = enabled
        self.prefix = prefix
        self.stream = stream
        self.seconds: dict[str, float] = {}

    def _print(self, text: str) -> None:
        if self.enabled:
            print(f"{self.prefix}: {text}", file=self.stream or sys.stderr, flush=True)

    @contextlib.contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[None]:
        """``with log.stage("capture", "torch.export"):`` — prints the start and the time taken."""
        self._print(f"{name}{f' ({detail})' if detail else ''} …")
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            self.seconds[name] = self.seconds.get(name, 0.0) + dt
            self._print(f"{name} {dt:.1f} s")

    def note(self, text: str) -> None:
        """One line of information between stages."""
        self._print(text)

    def bar(self, name: str, total: int, unit: str):
        """A tqdm bar on stderr for a stage with countable steps (disabled when the log is)."""
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=f"{self.prefix}: {name}", unit=unit, disable=not self.enabled,
                    file=self.stream or sys.stderr, leave=False)
