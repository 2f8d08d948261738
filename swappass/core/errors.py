"""The one exception hierarchy of swappass; the command line maps it to exit statuses (:mod:`swappass.cli.exits`).

* :class:`SwappassError` -- the base: every error swappass raises on purpose derives from it.
* :class:`InputError` -- bad input: an argument, a tensor, a model, a file or a setting cannot be used. The
  message names the input and what to change. Also a ``ValueError``. Exit status 2.
* :class:`CheckError` -- the work ran but its result failed a check (e.g. ONNX verification). Exit status 1.

Errors of one kind subclass these (:class:`NonFiniteActivationError`, ``CaptureError``, ``ExportError`` …), so
that callers can catch the kind they handle and the command line still knows the exit status of each.
"""
from __future__ import annotations

__all__ = ["SwappassError", "InputError", "CheckError", "NonFiniteActivationError", "NoCalibrationDataError"]


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
