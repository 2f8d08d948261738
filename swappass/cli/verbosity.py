"""What the command prints besides its own lines: third-party output off unless ``--verbose``.

Quiet (the default) silences the libraries' progress bars and notices (:func:`swappass.lm.quiet.set_quiet`) and
the ONNX exporter's log lines about optional operator libraries (e.g. ``torchvision is not installed. Skipping
torchvision::nms``). ``--verbose`` leaves everything as the libraries print it.
"""
from __future__ import annotations

import logging

from ..lm.quiet import set_quiet

__all__ = ["configure_output", "QUIET_LOGGERS"]

QUIET_LOGGERS = ("torch.onnx", "onnxscript")  # their warnings are about the exporter's set-up, not the model


def configure_output(verbose: bool) -> None:
    """Third-party output as ``--verbose`` asks (idempotent; process-wide)."""
    set_quiet(not verbose)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)
