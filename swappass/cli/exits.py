"""Exit statuses of the ``swappass`` command, and the one place that maps errors to them.

0 done; 1 the work ran but a check of its result failed (:class:`~swappass.core.errors.CheckError`, e.g. ONNX
verification), or an unexpected error (a bug: one line on stderr, the traceback in ``swappass-error.log``);
2 bad input (:class:`~swappass.core.errors.InputError`, the lm layer's :class:`~swappass.lm.errors.LMInputError`,
another rank's bad input under torchrun, or a file system that refuses a write: full, read-only, no permission);
3 nothing could be pruned (:class:`~swappass.core.errors.NothingPrunedError`); 130 interrupted. Every known error
ends as one line on stderr, never a traceback.
"""
from __future__ import annotations

import errno
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Callable

from ..core.errors import CheckError, InputError, NothingPrunedError, SwappassError
from ..lm.errors import LMInputError
from ..refine.distributed import DistributedError
from .atomic import storage_errno

__all__ = [
    "EXIT_OK", "EXIT_FAILED_CHECK", "EXIT_BAD_INPUT", "EXIT_NOTHING_PRUNED", "EXIT_INTERRUPTED", "ERROR_LOG",
    "ENVIRONMENT_ERRNOS", "exit_status", "run_command", "write_error_log",
]

EXIT_OK, EXIT_FAILED_CHECK, EXIT_BAD_INPUT, EXIT_NOTHING_PRUNED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
ERROR_LOG = "swappass-error.log"
# file system errors that say where the files go is unusable (bad input), not that swappass is wrong
ENVIRONMENT_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "ENOTDIR", "EISDIR", "EFBIG")
    if hasattr(errno, name)
)


def _environment_error(exc: BaseException) -> bool:
    return not isinstance(exc, SwappassError) and storage_errno(exc) in ENVIRONMENT_ERRNOS


def exit_status(exc: BaseException) -> int:
    """The exit status for an error that ended a command."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, NothingPrunedError):
        return EXIT_NOTHING_PRUNED
    if isinstance(exc, (InputError, LMInputError)) or (isinstance(exc, DistributedError) and exc.bad_input):
        return EXIT_BAD_INPUT
    if _environment_error(exc):
        return EXIT_BAD_INPUT
    if isinstance(exc, CheckError):
        return EXIT_FAILED_CHECK
    return EXIT_FAILED_CHECK


def write_error_log(exc: BaseException, log_dir: Path | None, name: str) -> Path | None:
    """Write ``exc``'s traceback to ``log_dir/swappass-error.log`` (a rank > 0 of torchrun: ``…-rankN.log``), or
    to the temporary directory when that cannot be written; returns the file (None if nothing could be)."""
    rank = int(os.environ.get("RANK", "0") or 0)
    file_name = ERROR_LOG if rank == 0 else ERROR_LOG.replace(".log", f"-rank{rank}.log")
    text = f"swappass {name}: {' '.join(sys.argv)}\n" + "".join(traceback.format_exception(exc))
    for where in ([log_dir] if log_dir is not None else []) + [Path(tempfile.gettempdir())]:
        try:
            where.mkdir(parents=True, exist_ok=True)
            path = where / file_name
            path.write_text(text)
            return path
        except OSError:
            continue
    return None


def run_command(command: Callable[[], int], name: str, log_dir: Path | None = None, debug: bool = False) -> int:
    """Run one command; a known error (or Ctrl-C) becomes a line on stderr and its exit status. An unexpected
    error becomes one line too (exit 1); its traceback goes to ``log_dir/swappass-error.log`` and, with
    ``debug``, to stderr."""
    try:
        return command()
    except KeyboardInterrupt:
        print(f"swappass {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (SwappassError, LMInputError) as exc:
        status = exit_status(exc)
        prefix = "swappass: error" if status in (EXIT_BAD_INPUT, EXIT_NOTHING_PRUNED) else f"swappass {name}"
        print(f"{prefix}: {exc}", file=sys.stderr)
        return status
    except Exception as exc:
        if not _environment_error(exc):
            return _unexpected(exc, name, log_dir, debug)
        filename = getattr(exc, "filename", None)
        where = f" {filename}" if filename else ""
        print(f"swappass: error: cannot write or read{where}: {os.strerror(storage_errno(exc))}; free space, fix the "
              f"permissions or choose another location", file=sys.stderr)
        return EXIT_BAD_INPUT


def _unexpected(exc: Exception, name: str, log_dir: Path | None, debug: bool) -> int:
    log = write_error_log(exc, log_dir, name)
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    where = f"the traceback is in {log}" if log is not None else "no traceback file could be written"
    print(f"swappass {name}: unexpected error {type(exc).__name__}: {first} ({where}; --debug prints it; "
          f"please report it)", file=sys.stderr)
    return EXIT_FAILED_CHECK
