"""Streaming Gram matrix ``G = sum_t x_t x_tᵀ`` of a layer's calibration inputs (never stores X)."""
from __future__ import annotations

import torch

__all__ = ["GramAccumulator", "NonFiniteActivationError"]


class NonFiniteActivationError(FloatingPointError):
    """Calibration inputs of a site contain NaN or Inf."""


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
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # newer torch warns about the legacy flag
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            return x.T @ x
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous


class GramAccumulator:
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

    def __init__(
        self,
        d_in: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        name: str = "layer",
        tf32: bool = False,
    ) -> None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"{name}: Gram accumulation dtype must be float32 or float64, got {dtype}")
        if d_in < 1:
            raise ValueError(f"{name}: d_in must be positive, got {d_in}")
        self.d_in = int(d_in)
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else None
        self.name = name
        self.tf32 = bool(tf32)
        self.tokens = 0
        self.batches = 0
        self._G: torch.Tensor | None = None

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Add the outer products of the rows of ``x`` (shape ``(..., d_in)``)."""
        if x.shape[-1] != self.d_in:
            raise ValueError(
                f"{self.name}: calibration input has last dimension {x.shape[-1]}, expected d_in = {self.d_in} "
                f"(input shape {tuple(x.shape)})"
            )
        if not (x.is_floating_point() or x.is_complex()):
            raise ValueError(f"{self.name}: calibration input must be floating point, got {x.dtype}")
        x2 = x.reshape(-1, self.d_in)
        if x2.shape[0] == 0:
            return
        device = self.device if self.device is not None else x2.device
        if self._G is None:
            self._G = torch.zeros(self.d_in, self.d_in, dtype=self.dtype, device=device)
            self.device = device
        xc = x2.to(device=x2.device, dtype=self.dtype)
        half_on_tf32 = self.tf32 and xc.is_cuda and self.dtype == torch.float32 and x2.dtype in (
            torch.float16, torch.bfloat16)
        prod = gram_product(xc, tf32=half_on_tf32)
        bad = ~torch.isfinite(prod.diagonal())
        if bool(bad.any()):
            channels = bad.nonzero().flatten()[:8].tolist()
            raise NonFiniteActivationError(
                f"{self.name}: calibration input batch {self.batches} contains NaN or Inf "
                f"(input channels {channels}{' ...' if int(bad.sum()) > 8 else ''}); check the model's "
                f"numerics in this dtype, e.g. run calibration in float32"
            )
        self._G += prod.to(self._G.device)
        self.tokens += x2.shape[0]
        self.batches += 1

    @property
    def G(self) -> torch.Tensor:
        """The accumulated ``d_in × d_in`` Gram matrix (symmetric)."""
        if self._G is None:
            raise RuntimeError(f"{self.name}: no calibration input was seen, so there is no Gram matrix")
        return self._G

    def to(self, device: torch.device | str) -> "GramAccumulator":
        """Move G (e.g. offload to CPU); later updates are accumulated there."""
        self.device = torch.device(device)
        if self._G is not None:
            self._G = self._G.to(self.device)
        return self

    def reset(self) -> None:
        self._G, self.tokens, self.batches = None, 0, 0

    def __repr__(self) -> str:
        return f"GramAccumulator({self.name!r}, d_in={self.d_in}, tokens={self.tokens}, dtype={self.dtype})"
