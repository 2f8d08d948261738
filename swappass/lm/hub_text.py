"""WikiText-2 from the Hugging Face hub, for users without a local data directory: fetched once, kept as files.

:func:`fetch_wikitext2` loads one split with the ``datasets`` package (dataset ``Salesforce/wikitext``; its own
download cache applies) and writes it under ``<swappass cache>/data`` in the layout of the shared data directory,
so that every later run reads a plain file (and the run's recipe can hash it):

* ``test``: ``wikitext-2-raw-v1``, split ``test``, blank rows dropped → ``wikitext-2-raw/wiki.test.raw``;
* ``valid``: ``wikitext-2-v1`` (word-tokenized), split ``validation`` → ``wikitext-2/valid.txt``; the dataset
  stores the original file's blank lines (``" \\n"``) as empty rows, which are written back as such.

The rows are the lines of the original files (each ending with ``\\n``); the perplexity protocol
(:func:`swappass.lm.data.perplexity_windows`) joins them with blank lines either way.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from . import models
from .errors import DataNotFoundError

__all__ = ["HUB_DATASET", "HUB_CONFIGS", "cached_data_dir", "fetch_wikitext2"]

HUB_DATASET = "Salesforce/wikitext"
HUB_CONFIGS = {"test": ("wikitext-2-raw-v1", "test"), "valid": ("wikitext-2-v1", "validation")}


def cached_data_dir() -> Path:
    """Where fetched texts are kept: ``<swappass cache>/data`` (``$SWAPPASS_CACHE``, default ~/.cache/swappass)."""
    return models.cache_dir() / "data"


def _rows_to_text(split: str, rows) -> str:
    if split == "test":
        return "".join(r for r in rows if r)
    return "".join(r if r else " \n" for r in rows)


def fetch_wikitext2(split: str, target: Path, looked: str) -> Path:
    """Download WikiText-2 ``split`` (``"test"``/``"valid"``) from the hub into ``target``; returns ``target``.

    ``looked``: where the caller looked for a local copy (for the error message). Raises
    :class:`DataNotFoundError` naming what to do when ``datasets`` is missing, the hub is unreachable or the
    download fails.
    """
    config, hub_split = HUB_CONFIGS[split]
    use = ("--calib self (data-free) or --calib FILE" if split == "valid" else "--text FILE")
    where = f"WikiText-2 {split} is not in a local data directory ({looked})"
    try:
        import datasets
    except ImportError:
        raise DataNotFoundError(
            f"{where}, and fetching it from the Hugging Face hub needs the `datasets` package "
            f"(pip install datasets); or set SWAPPASS_DATA to a directory holding {target.parent.name}/, or use {use}"
        ) from None
    if not models.hub_reachable():
        raise DataNotFoundError(f"{where}, and the Hugging Face hub is unreachable from here; set SWAPPASS_DATA or use "
                                f"{use}")
    print(f"swappass: fetching WikiText-2 {split} once from the Hugging Face hub ({HUB_DATASET}, {config}) into "
          f"{target}", file=sys.stderr, flush=True)
    try:
        rows = datasets.load_dataset(HUB_DATASET, config, split=hub_split)["text"]
    except Exception as exc:  # network, hub, dataset format: all end here
        raise DataNotFoundError(f"{where}, and loading {HUB_DATASET} ({config}, {hub_split}) failed "
                                f"({type(exc).__name__}: {str(exc)[:300]}); set SWAPPASS_DATA or use {use}") from exc
    text = _rows_to_text(split, rows)
    if not text.strip():
        raise DataNotFoundError(f"{HUB_DATASET} ({config}, {hub_split}) gave no text; set SWAPPASS_DATA or use {use}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, target)  # atomic: a concurrent run sees the whole file or none
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
