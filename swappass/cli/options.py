"""What the commands share: model dtypes, the device option, site selectors, the help formatter."""
from __future__ import annotations

import argparse
from typing import Sequence

import torch

from ..core.errors import InputError

__all__ = ["DTYPES", "resolve_device", "split_selectors", "HelpFormatter"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` if available else ``cpu``; checks that the device exists (raises :class:`InputError`)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"--device {name!r} is not a device (use auto, cpu, cuda, cuda:1 …)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available here; use --device cpu")
    return str(dev)


def split_selectors(values: Sequence[str] | None) -> list[str] | None:
    """``--targets a,b --targets c`` -> ``["a", "b", "c"]`` (a ``re:`` selector is kept whole)."""
    if values is None:
        return None
    out: list[str] = []
    for v in values:
        out.extend([v] if v.startswith("re:") else [x for x in v.split(",") if x])
    return out


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: …)`` only for options whose default is a value (not None / False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)
