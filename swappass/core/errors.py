"""The one exception hierarchy of swappass; the command line maps it to exit statuses (:mod:`swappass.cli.exits`).

* :class:`SwappassError` -- the base: every error swappass raises on purpose derives from it.
* :class:`InputError` -- bad input: an argument, a tensor, a model, a file or a setting cannot be used. The
  message names the input and what to change. Also a ``ValueError``. Exit status 2.
* :class:`CheckError` -- the work ran but its result failed a check (e.g. ONNX verification). Exit status 1.

Errors of one kind subclass these (:class:`NonFiniteActivationError`, ``CaptureError``, ``ExportError`` …), so
that callers can catch the kind they handle and the command line still knows the exit status of each.
:class:`NothingPrunedError` has an exit status of its own (3). :class:`CalibrationWarning` is the warning for
calibration data that runs but says little (all-zero or collinear inputs of a site).
"""
from __future__ import annotations

__all__ = [
    "SwappassError", "InputError", "CheckError", "NonFiniteActivationError", "NoCalibrationDataError",
    "PatternViolationError", "NothingPrunedError", "CalibrationWarning",
]


class SwappassError(Exception):
    """Base of every error swappass raises on purpose."""


class InputError(SwappassError, ValueError):
    """An input cannot be used; the message names it and what to change (command line: exit status 2)."""


class CheckError(SwappassError):
    """The work ran, but its result failed a check; the message names what failed (command line: exit status 1)."""


class NonFiniteActivationError(InputError, FloatingPointError):
    """Calibration inputs of a site contain NaN or Inf (the message names the site and the input channels)."""


class NoCalibrationDataError(InputError, RuntimeError):
    """A statistic or a site was used before any calibration input reached it (the message names it)."""


class PatternViolationError(CheckError):
    """A pruned weight breaks its sparsity pattern or its mask (a kept count, an N:M block, a non-zero where the
    mask prunes, a non-finite value); the message names the parameter and the first offending row or block."""


class NothingPrunedError(InputError):
    """Every selected site was skipped (the pattern fits none of them); the message gives the reason per kind of
    site (command line: exit status 3, nothing is written)."""


class CalibrationWarning(UserWarning):
    """Calibration data that runs but cannot inform a mask: a site whose inputs are all zero or all collinear
    (the same vector up to scale on every token)."""
