"""Streaming Gram matrix ``G = sum_t x_t x_tᵀ`` of a layer's calibration inputs (never stores X)."""
from __future__ import annotations

import warnings

import torch

from .streaming import StreamingStatistic

__all__ = ["GramAccumulator", "gram_product", "gram_degeneracy", "COLLINEAR_TOLERANCE"]

# ‖G‖_F² ≥ (1 − this)·(tr G)² counts as rank 1 (real data stays far below; rank 1 gives 1 up to round-off)
COLLINEAR_TOLERANCE = 1e-5


def gram_product(x: torch.Tensor, tf32: bool = False) -> torch.Tensor:
    """``xᵀx`` for ``x`` of shape (tokens, d_in); on CUDA with TF32 tensor cores exactly when ``tf32`` is set,
    whatever the global ``torch.backends.cuda.matmul.allow_tf32`` says (restored afterwards).

    For ``x`` upcast from fp16/bf16 the TF32 inputs are exact (their mantissas fit TF32's 10 bits), but the tensor
    cores' float32 accumulation is coarser than a float32 GEMM's: on an H100, with 16,384 tokens per batch, the
    median entry error is ~3e-5 relative (float32 GEMM: ~1e-6) for a 4.4-5.2x faster product
    (tools/check_gram_precision.py, docs/BENCHMARKS.md).
    """
    if not x.is_cuda:
        return x.T @ x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # newer torch warns about the legacy flag
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            return x.T @ x
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous


class GramAccumulator(StreamingStatistic):
    """Accumulates ``G = Σ x xᵀ`` (``d_in × d_in``) over batches of any leading shape ``(..., d_in)``.

    Args:
        d_in: feature size of the layer input.
        dtype: accumulation dtype, ``torch.float32`` (default) or ``torch.float64``.
        device: where G lives; defaults to the device of the first batch.
        name: the site(s) this accumulator serves, used in error messages.
        tf32: compute the products of fp16/bf16 CUDA batches on TF32 tensor cores (4.4-5.2x faster on an H100, but
            10-40x less precise than the default float32 GEMM; see :func:`gram_product`). Off by default: G is a
            float32 GEMM's, also when TF32 is enabled globally.

    ``tokens`` counts the rows ``x_t`` seen. ``G`` is the unnormalised sum; Wanda's per-channel statistic
    is ``G.diag() / tokens``.
    """

    kind = "Gram accumulation"
    missing = "Gram matrix"
    state_names = ("gram",)

    def __init__(
        self,
        d_in: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        name: str = "layer",
        tf32: bool = False,
    ) -> None:
        super().__init__(d_in, dtype, device, name)
        self.tf32 = bool(tf32)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Add the outer products of the rows of ``x`` (shape ``(..., d_in)``)."""
        if x.shape[-1] != self.d_in:
            raise self.input_error(
                f"calibration input has last dimension {x.shape[-1]}, expected d_in = {self.d_in} "
                f"(input shape {tuple(x.shape)})"
            )
        self.check_floating(x, complex_ok=True)
        x2 = x.reshape(-1, self.d_in)
        if x2.shape[0] == 0:
            return
        if not self.seen:
            self.allocate(x2.device, (self.d_in, self.d_in))
        xc = x2.to(dtype=self.dtype)
        half_on_tf32 = self.tf32 and xc.is_cuda and self.dtype == torch.float32 and x2.dtype in (
            torch.float16, torch.bfloat16)
        prod = gram_product(xc, tf32=half_on_tf32)
        bad = ~torch.isfinite(prod.diagonal())
        if bool(bad.any()):
            self.raise_nonfinite(bad)
        self.gram += prod.to(self.gram.device)
        self.tokens += x2.shape[0]
        self.batches += 1

    @property
    def G(self) -> torch.Tensor:
        """The accumulated ``d_in × d_in`` Gram matrix (symmetric)."""
        self.require_data()
        return self.gram

    def __repr__(self) -> str:
        return f"GramAccumulator({self.name!r}, d_in={self.d_in}, tokens={self.tokens}, dtype={self.dtype})"


@torch.no_grad()
def gram_degeneracy(G: torch.Tensor) -> str | None:
    """Why the Gram matrix ``G`` (``d_in × d_in``, the sum of ``x xᵀ`` over calibration tokens) cannot inform a
    mask, or None when it can: ``"<what>: <what it means>"``.

    * all zero (``tr G = 0``): every input was zero, every mask has the same error (zero), and the masks are
      decided by index ties;
    * rank 1 (``‖G‖_F² = (tr G)²``, Cauchy–Schwarz equality for a positive semidefinite matrix): every token's
      input is the same vector up to scale (e.g. constant activations, or a text of one repeated token), so the
      mask fits that one direction only.

    O(d_in²); no copy of G unless its squared entries overflow float32.
    """
    if G.is_complex() or G.numel() == 0:
        return None
    trace = float(G.diagonal().sum(dtype=torch.float64))
    if not trace > 0.0:
        return "all calibration inputs are zero: every mask has the same error (0), so the mask is arbitrary"
    if G.shape[0] > 1:
        rows = torch.linalg.vector_norm(G, dim=1).double()  # per row in G's dtype, summed in float64: accurate
        if not bool(torch.isfinite(rows).all()):  # squares beyond float32: scaled, |entries| ≤ 1 (Cauchy–Schwarz)
            top = G.diagonal().abs().max()
            rows = torch.linalg.vector_norm(G / top, dim=1).double() * float(top)
        if float((rows * rows).sum()) >= (1.0 - COLLINEAR_TOLERANCE) * trace * trace:
            return ("the calibration inputs are collinear, the same vector up to scale on every token: the mask fits "
                    "that one direction only")
    return None
