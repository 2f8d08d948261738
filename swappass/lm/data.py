"""Text data for calibration and evaluation: WikiText-2 files, calibration windows, perplexity windows.

:func:`wikitext2_path` finds WikiText-2 in a local data directory (:func:`data_dir`: ``$SWAPPASS_DATA``, else a
``shared/data`` above this package or the working directory), else in the swappass cache, else fetches it once
from the Hugging Face hub into the cache (:mod:`swappass.lm.hub_text`; needs the ``datasets`` package).

* :func:`calibration_windows`: ``nsamples`` random windows of ``seqlen`` tokens from one tokenized text,
  drawn like Wanda's loaders (``random.seed(seed)``; start ``randint(0, n − seqlen − 1)``).
* :func:`perplexity_windows`: the standard protocol (Wanda / SparseGPT): rows joined with ``"\\n\\n"`` (after
  CRLF → LF), tokenized once, cut into non-overlapping ``seqlen`` windows, remainder dropped.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import torch

from .errors import DataNotFoundError

__all__ = [
    "DataNotFoundError",
    "data_dir",
    "wikitext2_path",
    "read_text",
    "tokenize",
    "calibration_windows",
    "perplexity_windows",
]

WIKITEXT2 = {"test": "wikitext-2-raw/wiki.test.raw", "valid": "wikitext-2/valid.txt"}


def data_dir() -> Path:
    """The shared data directory: ``$SWAPPASS_DATA``, else the first ``shared/data`` above this package or cwd."""
    env = os.environ.get("SWAPPASS_DATA")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataNotFoundError(f"SWAPPASS_DATA={env} is not a directory")
        return path
    looked = []
    for start in (Path(__file__).resolve().parent, Path.cwd().resolve()):
        for parent in (start, *start.parents):
            candidate = parent / "shared" / "data"
            looked.append(str(candidate))
            if candidate.is_dir():
                return candidate
    raise DataNotFoundError(
        f"no shared/data directory found (looked in {looked[0]} and the directories above it, and above the "
        f"working directory); set SWAPPASS_DATA to the directory holding wikitext-2/ and wikitext-2-raw/"
    )


def wikitext2_path(split: str) -> Path:
    """``"test"``: WikiText-2 raw test (evaluation); ``"valid"``: WikiText-2 validation (calibration).

    The local data directory's file when there is one, else the swappass cache's copy, else a copy fetched now
    from the hub (:func:`swappass.lm.hub_text.fetch_wikitext2`). Raises :class:`DataNotFoundError` saying what
    was tried and what to do instead.
    """
    if split not in WIKITEXT2:
        raise ValueError(f"WikiText-2 split must be one of {sorted(WIKITEXT2)}, got {split!r}")
    try:
        local = data_dir() / WIKITEXT2[split]
        if local.is_file():
            return local
        looked = f"{local} does not exist"
    except DataNotFoundError as exc:
        looked = str(exc)
    from . import hub_text  # the hub fallback (and the model cache it shares) only when needed

    cached = hub_text.cached_data_dir() / WIKITEXT2[split]
    if cached.is_file():
        return cached
    return hub_text.fetch_wikitext2(split, cached, looked)


def read_text(path: str | Path) -> str:
    """A UTF-8 text file with CRLF line endings normalised to LF."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"text file {path} does not exist")
    return path.read_text(encoding="utf-8").replace("\r\n", "\n")


def tokenize(tokenizer, text: str) -> torch.Tensor:
    """Token ids of ``text`` as one ``(1, n)`` long tensor (no length limit warning)."""
    ids = tokenizer(text, return_tensors="pt", verbose=False).input_ids
    return ids.reshape(1, -1).long()


def calibration_windows(
    tokenizer,
    path: str | Path | None = None,
    *,
    text: str | None = None,
    nsamples: int = 128,
    seqlen: int = 2048,
    seed: int = 0,
) -> list[torch.Tensor]:
    """``nsamples`` windows ``(1, seqlen)`` of token ids at random positions of one tokenized text.

    The text is ``text`` if given, else the file ``path`` (default: WikiText-2 validation). Positions follow
    Wanda's WikiText-2 loader: ``random.seed(seed)``, then per window ``i = randint(0, n − seqlen − 1)``.
    """
    if nsamples < 1 or seqlen < 2:
        raise ValueError(f"need nsamples >= 1 and seqlen >= 2, got nsamples={nsamples}, seqlen={seqlen}")
    if text is None:
        text = read_text(path if path is not None else wikitext2_path("valid"))
    ids = tokenize(tokenizer, text)
    n = ids.shape[1]
    if n <= seqlen + 1:
        raise ValueError(f"the calibration text has {n} tokens, too few for windows of {seqlen} tokens")
    rng = random.Random(seed)
    windows = []
    for _ in range(nsamples):
        i = rng.randint(0, n - seqlen - 1)
        windows.append(ids[:, i : i + seqlen].clone())
    return windows


def perplexity_windows(
    tokenizer, path: str | Path | None = None, *, seqlen: int = 2048, max_windows: int | None = None
) -> list[torch.Tensor]:
    """Non-overlapping ``(1, seqlen)`` windows of the test text (default: WikiText-2 raw test).

    Rows (lines, each with its ``\\n``) are joined with ``"\\n\\n"`` as Wanda and SparseGPT join the dataset
    rows, tokenized once, cut into windows; the remainder is dropped. ``max_windows`` keeps the first ones.
    """
    if seqlen < 2:
        raise ValueError(f"seqlen must be at least 2, got {seqlen}")
    text = read_text(path if path is not None else wikitext2_path("test"))
    ids = tokenize(tokenizer, "\n\n".join(text.splitlines(keepends=True)))
    count = ids.shape[1] // seqlen
    if max_windows is not None:
        count = min(count, max_windows)
    if count == 0:
        raise ValueError(f"the text has {ids.shape[1]} tokens, fewer than one window of {seqlen}")
    return [ids[:, i * seqlen : (i + 1) * seqlen].clone() for i in range(count)]
