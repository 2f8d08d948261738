"""The precision of the Linear layers' matmuls while a causal LM samples its own calibration data.

Sampling 16 sequences at a time on a CPU is bound by reading the weights: every step streams all of them from
memory for 16 tokens (SmolLM2-135M: 540 MB in float32 per step). On a CPU with native bfloat16 matmuls
(AVX512-BF16 or AMX: oneDNN's kernels accumulate in float32), a bfloat16 copy of the weights halves that
traffic; on this project's 2-core VM sampling ran 1.47x faster side by side (146 vs 100 tokens/s; 111 vs 240 in
one process at a quieter moment; docs/BENCHMARKS.md).
Only the Linear layers change: attention, norms, the KV cache and the sampling's softmax stay in the model's
dtype. The sequences then come from the model with its weights rounded to bfloat16, a distribution within
bfloat16's rounding of the float32 one; ``"float32"`` keeps the model's own matmuls.

:func:`resolve_matmul_precision` turns ``"auto"`` into a dtype (bfloat16 for a float32 model on such a CPU,
else the model's own); :func:`linears_in` applies it for the duration of a ``with`` block and restores the
model on exit (no weight of the model is touched). With bfloat16 on such a CPU the copies are held in oneDNN's
blocked layout for the step's row count (``torch.ops.mkldnn._reorder_linear_weight``, what inductor's CPU
freezing uses), so a call does not reorder its weight again; the products are bit-identical to
``F.linear`` in bfloat16 (tests/lm/test_calibration.py) and the matmuls ran 1.5x faster per step
(``tools/bench_sampling.py``, docs/BENCHMARKS.md). Where the packed kernel is missing, ``F.linear`` runs.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .errors import CalibrationError

__all__ = ["MATMUL_PRECISIONS", "native_bfloat16_cpu", "resolve_matmul_precision", "linears_in",
           "packed_bfloat16_weight"]

MATMUL_PRECISIONS = ("auto", "float32", "bfloat16")


def native_bfloat16_cpu() -> bool:
    """Whether this CPU runs bfloat16 matmuls natively (oneDNN with AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_matmul_precision(model: nn.Module, precision: str = "auto") -> torch.dtype | None:
    """The dtype the Linear layers of ``model`` multiply in while sampling, or None for the model's own.

    ``"auto"``: bfloat16 when the model's parameters are float32 on the CPU and the CPU has native bfloat16
    matmuls, else None; ``"float32"``: None for a float32 model; ``"bfloat16"``: bfloat16 (slow on CPUs without
    native support).
    """
    if precision not in MATMUL_PRECISIONS:
        raise CalibrationError(f"unknown sampling matmul precision {precision!r}; use one of {MATMUL_PRECISIONS}")
    param = next(iter(model.parameters()), None)
    if param is None:
        return None
    if precision == "bfloat16":
        return None if param.dtype == torch.bfloat16 else torch.bfloat16
    if precision == "float32":
        return None if param.dtype == torch.float32 else torch.float32
    if param.dtype == torch.float32 and param.device.type == "cpu" and native_bfloat16_cpu():
        return torch.bfloat16
    return None


@contextmanager
def linears_in(model: nn.Module, dtype: torch.dtype | None, rows: int | None = None) -> Iterator[None]:
    """Within the block, every ``nn.Linear`` of ``model`` computes ``linear(x.to(dtype), W', b')`` with copies
    ``W'``/``b'`` of its parameters in ``dtype``, cast back to ``x``'s dtype; ``dtype=None`` changes nothing.
    ``rows``: the rows most calls multiply (e.g. the sequences sampled together), which sets the packed layout
    of bfloat16 copies on the CPU (see the module docstring); any row count gives the same products.

    The copies live only inside the block (memory: the Linear weights once more in ``dtype``); the modules'
    ``forward`` is restored on exit, also after an exception.
    """
    if dtype is None:
        yield
        return
    patched: list[nn.Linear] = []
    try:
        for module in model.modules():
            if isinstance(module, nn.Linear) and "forward" not in vars(module):
                module.forward = _linear_forward_in(module, dtype, rows)
                patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward


def _linear_forward_in(module: nn.Linear, dtype: torch.dtype, rows: int | None):
    weight = module.weight.detach().to(dtype)
    bias = None if module.bias is None else module.bias.detach().to(dtype)
    packed = packed_bfloat16_weight(weight, rows or 1)
    if packed is not None:
        def forward(x: torch.Tensor) -> torch.Tensor:
            return torch.ops.mkldnn._linear_pointwise(x.to(dtype), packed, bias, "none", [], "").to(x.dtype)

        return forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(dtype), weight, bias).to(x.dtype)

    return forward


def packed_bfloat16_weight(weight: torch.Tensor, rows: int) -> torch.Tensor | None:
    """``weight`` (d_out × d_in, bfloat16, CPU) in oneDNN's blocked layout for ``rows``-row products, or None
    where that is unavailable (another dtype or device, no native bfloat16, a torch without the op)."""
    if weight.dtype != torch.bfloat16 or weight.device.type != "cpu" or weight.dim() != 2 or not native_bfloat16_cpu():
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight, rows)
    except (AttributeError, RuntimeError):
        return None
