"""cli: the ``swappass`` command and its jobs (the top layer; may import every other layer).

``main`` builds the command and runs it through ``exits`` (the one mapping from errors to exit statuses);
``prune_command`` / ``prune`` (with ``recipe``, ``ranks`` under torchrun, ``output_dir``, ``checkpoint``, ``plot``),
``eval`` and ``export_command`` / ``export`` are the commands and their jobs; ``options`` is what they share.
"""
from .exits import EXIT_BAD_INPUT, EXIT_FAILED_CHECK, EXIT_INTERRUPTED, EXIT_OK
from .main import build_parser, main

__all__ = ["build_parser", "main", "EXIT_OK", "EXIT_FAILED_CHECK", "EXIT_BAD_INPUT", "EXIT_INTERRUPTED"]
