"""Numerical verification of an exported file: onnxruntime outputs against PyTorch outputs.

An output passes when ``max |ort − torch| <= atol + rtol · max |torch|`` (and both are finite in the same
places). For language-model logits (``(batch, seq, vocab)``) the top-1 agreement of the next-token predictions
is reported too, over the positions the attention mask keeps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ..core.errors import CheckError

__all__ = ["VerificationError", "OutputCheck", "compare_outputs", "second_inputs", "default_tolerances"]


class VerificationError(CheckError):
    """An exported file failed its verification (outputs against PyTorch, or the sparsity audit)."""


@dataclass
class OutputCheck:
    """One output on one input set."""

    inputs: str  # e.g. "example 2×8"
    output: str
    max_abs: float
    max_rel: float  # max_abs / max |torch output|
    tolerance: float  # the allowed max_abs
    passed: bool
    top1: float | None = None  # fraction of positions whose argmax agrees (LM logits only)
    top1_positions: int = 0
    note: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def default_tolerances(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for comparing onnxruntime with PyTorch at a parameter dtype."""
    if dtype in (torch.float16, torch.bfloat16):
        return 1e-2, 1e-2
    return 1e-3, 1e-5  # fp32: SmolLM2-135M measures ~1e-5 relative; a wrong weight or mask gives > 1e-2


def _shape_label(inputs: Mapping[str, torch.Tensor]) -> str:
    first = next(iter(inputs.values()))
    return "×".join(str(s) for s in first.shape[:2])


def compare_outputs(
    session,
    reference: Callable[..., Sequence[torch.Tensor]],
    inputs: Mapping[str, torch.Tensor],
    output_names: Sequence[str],
    label: str,
    rtol: float,
    atol: float,
    lm_outputs: Sequence[str] = (),
) -> list[OutputCheck]:
    """Run ``session`` (an ``onnxruntime.InferenceSession``) and ``reference(*inputs.values())`` and compare."""
    label = f"{label} {_shape_label(inputs)}"
    with torch.no_grad():
        expected = [t.detach().float().cpu().numpy() for t in reference(*inputs.values())]
    feeds = {k: v.detach().cpu().numpy() for k, v in inputs.items()}
    try:
        got = session.run(list(output_names), feeds)
    except Exception as exc:  # a shape the file cannot take, a kernel error: a failed check, not a crash
        return [OutputCheck(label, name, float("inf"), float("inf"), 0.0, False, note=f"onnxruntime failed: {exc}")
                for name in output_names]
    mask = inputs.get("attention_mask")
    checks = []
    for name, ref, out in zip(output_names, expected, got):
        checks.append(_compare_one(label, name, ref, np.asarray(out, dtype=np.float32), rtol, atol,
                                   name in lm_outputs, mask))
    return checks


def _compare_one(label, name, ref, out, rtol, atol, is_lm, mask) -> OutputCheck:
    if ref.shape != out.shape:
        return OutputCheck(label, name, float("inf"), float("inf"), 0.0, False,
                           note=f"shape {out.shape} from onnxruntime, {ref.shape} from PyTorch")
    finite_ref, finite_out = np.isfinite(ref), np.isfinite(out)
    scale = float(np.abs(ref[finite_ref]).max()) if finite_ref.any() else 0.0
    tolerance = atol + rtol * scale
    note = ""
    same_nonfinite = np.array_equal(finite_ref, finite_out) and np.array_equal(ref[~finite_ref], out[~finite_out])
    if not same_nonfinite:
        max_abs = float("inf")
        note = "non-finite values differ"
    else:
        max_abs = float(np.abs(ref[finite_ref] - out[finite_ref]).max()) if finite_ref.any() else 0.0
    check = OutputCheck(label, name, max_abs, max_abs / scale if scale else max_abs, tolerance,
                        max_abs <= tolerance, note=note)
    if is_lm and ref.ndim == 3:
        keep = mask.cpu().numpy().astype(bool) if mask is not None else None
        if keep is None or keep.shape != ref.shape[:2]:  # no mask, or the encoder's of an encoder-decoder
            keep = np.ones(ref.shape[:2], dtype=bool)
        agree = (ref.argmax(-1) == out.argmax(-1))[keep]
        check.top1, check.top1_positions = float(agree.mean()) if agree.size else 1.0, int(agree.size)
    return check


def second_inputs(
    example: Mapping[str, torch.Tensor],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    vocab_size: int | None = None,
    max_length: int | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor] | None:
    """Inputs of a different batch and sequence length than ``example``, for the dynamic axes named
    ``batch`` and ``sequence``. None when no input has such an axis.

    Token ids are drawn from ``[0, vocab_size)``, ``attention_mask`` is ones with the last row right-padded by
    two, ``position_ids`` count up, other integer inputs reuse the example's values, float inputs are normal
    with the example's mean and std.
    """
    sizes: dict[str, int] = {}
    for name, axes in dynamic_axes.items():
        for axis, dim in axes.items():
            sizes.setdefault(dim, int(example[name].shape[axis]))
    if not sizes:
        return None
    new = {dim: size + 1 for dim, size in sizes.items()}
    if "sequence" in sizes:
        seq = sizes["sequence"]
        new["sequence"] = seq + 3 if max_length is None or seq + 3 <= max_length else max(1, seq - 1)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in example.items():
        shape = list(t.shape)
        for axis, dim in dynamic_axes.get(name, {}).items():
            shape[axis] = new[dim]
        out[name] = _fill(name, t, shape, g, vocab_size)
    return out


def _fill(name: str, t: torch.Tensor, shape: list[int], g: torch.Generator, vocab_size: int | None) -> torch.Tensor:
    if t.dtype == torch.bool or name == "attention_mask":
        x = torch.ones(shape, dtype=t.dtype)
        if x.dim() == 2 and x.shape[0] > 1 and x.shape[1] > 3:
            x[-1, -2:] = 0
        return x
    if t.is_floating_point():
        std = float(t.float().std()) if t.numel() > 1 else 1.0
        return (torch.randn(shape, generator=g) * (std or 1.0) + float(t.float().mean())).to(t.dtype)
    if name == "position_ids" and len(shape) == 2:
        return torch.arange(shape[1], dtype=t.dtype).expand(shape).contiguous()
    if name.endswith("input_ids") and vocab_size:
        return torch.randint(0, vocab_size, shape, generator=g, dtype=t.dtype)
    values = t.flatten().unique()
    return values[torch.randint(0, len(values), shape, generator=g)].to(t.dtype)
