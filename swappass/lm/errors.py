"""The lm layer's errors. The layer imports nothing of swappass, so these do not derive from
:class:`swappass.core.errors.SwappassError`; the command line maps :class:`LMInputError` to exit status 2
(:mod:`swappass.cli.exits`), like every other bad input."""
from __future__ import annotations

__all__ = ["LMInputError", "ModelLoadError", "DataNotFoundError", "CalibrationError", "CalibrationTextWarning"]


class LMInputError(Exception):
    """Base: a model, a text or a calibration source cannot be used; the message says what to do."""


class ModelLoadError(LMInputError, RuntimeError):
    """A model could not be found or loaded; the message says what was tried and what to do."""


class DataNotFoundError(LMInputError, FileNotFoundError):
    """A data file is missing; the message says where swappass looked."""


class CalibrationError(LMInputError, ValueError):
    """The calibration source is missing, unusable or too small; the message says what to change."""


class CalibrationTextWarning(UserWarning):
    """A calibration text that can be used but says little (it tokenizes to one repeated token)."""
