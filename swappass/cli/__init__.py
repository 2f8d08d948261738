"""cli: the ``swappass`` command and its jobs (the top layer; may import every other layer).

``main`` builds the command and runs it through ``exits`` (the one mapping from errors to exit statuses);
``prune_command`` / ``prune`` (with ``recipe`` and ``fingerprint``, ``ranks`` under torchrun, ``preflight``,
``output_dir``, ``checkpoint``, ``saving``, ``repair``, ``plot``), ``eval`` and ``export_command`` / ``export`` are
the commands and their jobs; ``options``, ``atomic`` and ``digests`` are what they share.
"""
from .exits import EXIT_BAD_INPUT, EXIT_FAILED_CHECK, EXIT_INTERRUPTED, EXIT_NOTHING_PRUNED, EXIT_OK
from .main import build_parser, main

__all__ = ["build_parser", "main", "EXIT_OK", "EXIT_FAILED_CHECK", "EXIT_BAD_INPUT", "EXIT_NOTHING_PRUNED",
           "EXIT_INTERRUPTED"]
