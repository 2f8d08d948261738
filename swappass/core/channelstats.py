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

from .streaming import StreamingStatistic

__all__ = ["ChannelStats"]


class ChannelStats(StreamingStatistic):
    """Accumulates DSnoT's per-channel ``mean_seq_sum``, ``var`` and ``scaler_row`` (module docstring).

    Args:
        d_in: feature size of the layer input. dtype: float64 (default) or float32.
        device: where the sums live (default: the first batch's device). name: the site, for error messages.
    """

    kind = "channel statistics"
    missing = "channel statistics"
    state_names = ("sums", "squares", "var_tokens")

    def __init__(
        self,
        d_in: int,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        name: str = "layer",
    ) -> None:
        super().__init__(d_in, dtype, device, name)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Add a batch of sequences ``x`` of shape ``(..., seq, d_in)`` (2-D: one sequence)."""
        if x.dim() < 2 or x.shape[-1] != self.d_in:
            raise self.input_error(
                f"channel statistics need inputs of shape (..., seq, d_in = {self.d_in}), got {tuple(x.shape)}"
            )
        self.check_floating(x)
        seq = x.shape[-2]
        x3 = x.reshape(-1, seq, self.d_in)
        if x3.shape[0] == 0 or seq == 0:
            return
        if not self.seen:
            self.allocate(x.device, (self.d_in,), (self.d_in,), (self.d_in,))
        xc = x3.to(device=self.device, dtype=self.dtype)
        finite = torch.isfinite(xc)
        if not bool(finite.all()):
            self.raise_nonfinite(~finite.all(dim=(0, 1)))
        self.sums += xc.sum(dim=(0, 1))
        self.squares += xc.square().sum(dim=(0, 1))
        self.var_tokens += seq * xc.var(dim=1, unbiased=False).sum(dim=0)
        self.sequences += x3.shape[0]
        self.tokens += x3.shape[0] * seq
        self.batches += 1

    @property
    def mean_seq_sum(self) -> torch.Tensor:
        """``μ_j``: mean over sequences of the per-sequence token sum, shape (d_in,)."""
        self.require_data()
        return self.sums / self.sequences

    @property
    def var(self) -> torch.Tensor:
        """Token-weighted mean of the per-sequence (biased) variances, shape (d_in,)."""
        self.require_data()
        return self.var_tokens / self.tokens

    @property
    def scaler_row(self) -> torch.Tensor:
        """``Σ_t x_tj² / sequences`` (the reference's Wanda statistic), shape (d_in,)."""
        self.require_data()
        return self.squares / self.sequences

    def reset(self) -> None:
        super().reset()
        self.sequences = 0

    def __repr__(self) -> str:
        return f"ChannelStats({self.name!r}, d_in={self.d_in}, sequences={self.sequences}, tokens={self.tokens})"
