"""Quiet third-party output: the progress bars and log lines of transformers, huggingface_hub and datasets.

The command line shows its own progress; what the libraries print on their own (``Loading weights`` and
``Writing model shards`` bars, the GGUF de-quantization bar, hub download bars, loading notices) is noise there.
:func:`set_quiet` turns it off (or back on for ``--verbose``) process-wide; :func:`is_quiet` tells the loaders
whether to hide the bars that the libraries do not let one switch off.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
from typing import Iterator

__all__ = ["set_quiet", "is_quiet", "hidden_gguf_progress"]

_QUIET = False


def set_quiet(quiet: bool = True) -> None:
    """Silence (``True``) or restore (``False``) the libraries' progress bars and info/warning logs."""
    global _QUIET
    _QUIET = bool(quiet)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error() if quiet else hf_logging.set_verbosity_warning()
        hf_logging.disable_progress_bar() if quiet else hf_logging.enable_progress_bar()
    except ImportError:
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        disable_progress_bars() if quiet else enable_progress_bars()
    except ImportError:
        pass
    try:  # only if it is installed; importing it costs a second
        if importlib.util.find_spec("datasets") is not None:
            from datasets.utils.logging import disable_progress_bar, enable_progress_bar

            disable_progress_bar() if quiet else enable_progress_bar()
    except (ImportError, ValueError):
        pass


def is_quiet() -> bool:
    """Whether :func:`set_quiet` silenced the libraries."""
    return _QUIET


@contextlib.contextmanager
def hidden_gguf_progress() -> Iterator[None]:
    """Within the block (when quiet), transformers' GGUF de-quantization runs without its own tqdm bar (it does
    not follow transformers' progress-bar switch)."""
    module = None
    if _QUIET:
        try:
            module = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
        except ImportError:
            module = None
    if module is None or not hasattr(module, "tqdm"):
        yield
        return
    original = module.tqdm
    module.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        module.tqdm = original
