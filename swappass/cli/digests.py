"""File digests: the SHA-256 and size of a file, recorded when it is written and checked when it is used again.

:func:`file_digest` gives ``{"sha256": hex, "bytes": n}``; :func:`digest_problem` says what is wrong with a file
against such a record (missing, truncated, grown, other content). :func:`cached_file_sha256` hashes a file once
per version of it: the digest is kept in the swappass cache (``file-digests.json``) under the file's path, size,
modification and change times, inode and device, and only for files that were not modified in the
:data:`RACY_SECONDS` before they were hashed (a write in the same clock tick cannot hide behind an equal time).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["file_sha256", "file_digest", "digest_problem", "cached_file_sha256", "DIGEST_CACHE", "RACY_SECONDS"]

DIGEST_CACHE = "file-digests.json"
RACY_SECONDS = 2.0
_CACHE_ENTRIES = 4096


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 4 MiB pieces)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: str | Path) -> dict[str, Any]:
    """``{"sha256": hex, "bytes": size}`` of the file at ``path``."""
    path = Path(path)
    return {"sha256": file_sha256(path), "bytes": path.stat().st_size}


def digest_problem(path: str | Path, recorded: dict[str, Any]) -> str | None:
    """What is wrong with the file at ``path`` against its ``recorded`` digest, or None when it matches."""
    path = Path(path)
    if not path.is_file():
        return "is missing"
    size, want = path.stat().st_size, recorded.get("bytes")
    if want is not None and size != want:
        kind = "truncated" if size < want else "longer than written"
        return f"has {size} bytes where {want} were written ({kind})"
    if file_sha256(path) != recorded.get("sha256"):
        return "does not match its recorded SHA-256 (damaged or replaced)"
    return None


def _cache_path() -> Path:
    from ..lm.models import cache_dir

    return cache_dir() / DIGEST_CACHE


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def cached_file_sha256(path: str | Path) -> str:
    """:func:`file_sha256`, taken from the digest cache when this version of the file was hashed before."""
    from .atomic import write_json_atomic

    real = str(Path(path).resolve())
    st = os.stat(real)
    try:
        cache_file = _cache_path()
    except OSError:  # no writable cache: hash every time
        return file_sha256(real)
    cache = _read_cache(cache_file)
    entry = cache.get(real)
    if isinstance(entry, dict) and entry.get("stamp") == _stamp(st) and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    started = time.time()
    digest = file_sha256(real)
    if os.stat(real).st_mtime_ns == st.st_mtime_ns and started - st.st_mtime_ns / 1e9 > RACY_SECONDS:
        cache = _read_cache(cache_file)  # another process may have added entries meanwhile
        cache.pop(real, None)
        cache[real] = {"stamp": _stamp(st), "sha256": digest}
        while len(cache) > _CACHE_ENTRIES:
            cache.pop(next(iter(cache)))
        try:
            write_json_atomic(cache_file, cache)
        except OSError:
            pass
    return digest
