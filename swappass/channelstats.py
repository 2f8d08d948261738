"""Streaming per-input-channel statistics that DSnoT needs besides G (zyxxmu/DSnoT ``WrappedGPT.add_batch``).

For calibration sequences ``s = 1..S`` with ``n_s`` tokens each and input channel ``j``:

* ``mean_seq_sum[j] = (1/S) Σ_s Σ_{t∈s} x_tj`` -- the mean over sequences of the per-sequence token sum
  (the reference's ``sum_metric_row``; DSnoT's ``μ_j``). Its scale grows with the sequence length, and so does
  the meaning of DSnoT's absolute ``update_threshold``.
* ``var[j] = Σ_s n_s var_s[j] / Σ_s n_s`` with ``var_s`` the biased variance over the tokens of sequence ``s``
  (the reference's ``var``: a token-weighted running mean of per-forward-pass variances; the reference feeds one
  sequence per forward pass, so those are per-sequence variances).
* ``scaler_row[j] = (1/S) Σ_t x_tj²`` -- the reference's Wanda statistic (it divides by the number of sequences;
  Wanda's ranking does not depend on that scale).

Inputs are ``(..., seq, d_in)``: every leading index is one sequence; a 2-D ``(seq, d_in)`` input is one
sequence (the reference unsqueezes it the same way). Accumulated in float64 by default.
"""
from __future__ import annotations

import torch

from .gram import NonFiniteActivationError

__all__ = ["ChannelStats"]


class ChannelStats:
    """Accumulates DSnoT's per-channel ``mean_seq_sum``, ``var`` and ``scaler_row`` (module docstring).

    Args:
        d_in: feature size of the layer input. dtype: float64 (default) or float32.
        device: where the sums live (default: the first batch's device). name: the site, for error messages.
    """

    def __init__(
        self,
        d_in: int,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        name: str = "layer",
    ) -> None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"{name}: channel statistics dtype must be float32 or float64, got {dtype}")
        if d_in < 1:
            raise ValueError(f"{name}: d_in must be positive, got {d_in}")
        self.d_in = int(d_in)
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else None
        self.name = name
        self.sequences = 0
        self.tokens = 0
        self._sum: torch.Tensor | None = None
        self._sq: torch.Tensor | None = None
        self._var_tokens: torch.Tensor | None = None

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Add a batch of sequences ``x`` of shape ``(..., seq, d_in)`` (2-D: one sequence)."""
        if x.dim() < 2 or x.shape[-1] != self.d_in:
            raise ValueError(
                f"{self.name}: channel statistics need inputs of shape (..., seq, d_in = {self.d_in}), "
                f"got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(f"{self.name}: calibration input must be floating point, got {x.dtype}")
        seq = x.shape[-2]
        x3 = x.reshape(-1, seq, self.d_in)
        if x3.shape[0] == 0 or seq == 0:
            return
        if self._sum is None:
            dev = self.device if self.device is not None else x.device
            self.device = torch.device(dev)
            self._sum, self._sq, self._var_tokens = (
                torch.zeros(self.d_in, dtype=self.dtype, device=self.device) for _ in range(3)
            )
        xc = x3.to(device=self.device, dtype=self.dtype)
        if not bool(torch.isfinite(xc).all()):
            bad = (~torch.isfinite(xc)).any(dim=(0, 1)).nonzero().flatten()[:8].tolist()
            raise NonFiniteActivationError(
                f"{self.name}: calibration input contains NaN or Inf (input channels {bad}); check the model's "
                f"numerics in this dtype, e.g. run calibration in float32"
            )
        self._sum += xc.sum(dim=(0, 1))
        self._sq += xc.square().sum(dim=(0, 1))
        self._var_tokens += seq * xc.var(dim=1, unbiased=False).sum(dim=0)
        self.sequences += x3.shape[0]
        self.tokens += x3.shape[0] * seq

    def _need(self) -> None:
        if self._sum is None:
            raise RuntimeError(f"{self.name}: no calibration input was seen, so there are no channel statistics")

    @property
    def mean_seq_sum(self) -> torch.Tensor:
        """``μ_j``: mean over sequences of the per-sequence token sum, shape (d_in,)."""
        self._need()
        return self._sum / self.sequences

    @property
    def var(self) -> torch.Tensor:
        """Token-weighted mean of the per-sequence (biased) variances, shape (d_in,)."""
        self._need()
        return self._var_tokens / self.tokens

    @property
    def scaler_row(self) -> torch.Tensor:
        """``Σ_t x_tj² / sequences`` (the reference's Wanda statistic), shape (d_in,)."""
        self._need()
        return self._sq / self.sequences

    def to(self, device: torch.device | str) -> "ChannelStats":
        """Move the sums (e.g. offload to CPU); later updates are accumulated there."""
        self.device = torch.device(device)
        if self._sum is not None:
            self._sum, self._sq, self._var_tokens = (t.to(self.device) for t in (self._sum, self._sq, self._var_tokens))
        return self

    def reset(self) -> None:
        self._sum = self._sq = self._var_tokens = None
        self.sequences = self.tokens = 0

    def __repr__(self) -> str:
        return f"ChannelStats({self.name!r}, d_in={self.d_in}, sequences={self.sequences}, tokens={self.tokens})"
