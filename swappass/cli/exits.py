"""Exit statuses of the ``swappass`` command, and the one place that maps errors to them.

0 done; 1 the work ran but a check of its result failed (:class:`~swappass.core.errors.CheckError`, e.g. ONNX
verification); 2 bad input (:class:`~swappass.core.errors.InputError`, the lm layer's
:class:`~swappass.lm.errors.LMInputError`, or another rank's bad input under torchrun); 130 interrupted. Every
:class:`~swappass.core.errors.SwappassError` ends as one line on stderr, never a traceback.
"""
from __future__ import annotations

import sys
from typing import Callable

from ..core.errors import CheckError, InputError, SwappassError
from ..lm.errors import LMInputError
from ..refine.distributed import DistributedError

__all__ = ["EXIT_OK", "EXIT_FAILED_CHECK", "EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "exit_status", "run_command"]

EXIT_OK, EXIT_FAILED_CHECK, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def exit_status(exc: BaseException) -> int:
    """The exit status for an error that ended a command."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, (InputError, LMInputError)) or (isinstance(exc, DistributedError) and exc.bad_input):
        return EXIT_BAD_INPUT
    if isinstance(exc, CheckError):
        return EXIT_FAILED_CHECK
    return EXIT_FAILED_CHECK


def run_command(command: Callable[[], int], name: str) -> int:
    """Run one command; a known error (or Ctrl-C) becomes a line on stderr and its exit status."""
    try:
        return command()
    except KeyboardInterrupt:
        print(f"swappass {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (SwappassError, LMInputError) as exc:
        status = exit_status(exc)
        prefix = "swappass: error" if status == EXIT_BAD_INPUT else f"swappass {name}"
        print(f"{prefix}: {exc}", file=sys.stderr)
        return status
