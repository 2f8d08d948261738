"""What every streaming statistic of a layer's calibration inputs shares: settings, input checks, device, state.

A statistic sees the layer's inputs batch by batch (``(..., d_in)``), never stores them, and keeps a few tensors
of sums (its *state*, allocated at the first batch on the batch's device or on ``device``). Subclasses
(:class:`~swappass.core.gram.GramAccumulator`, :class:`~swappass.core.channelstats.ChannelStats`) name their
state tensors in ``state_names`` and add to them in ``update``.
"""
from __future__ import annotations

import operator

import torch

from .errors import InputError, NoCalibrationDataError, NonFiniteActivationError

__all__ = ["StreamingStatistic"]

_SHOWN_CHANNELS = 8


class StreamingStatistic:
    """Base of the streaming statistics. ``kind`` names the statistic in messages; ``state_names`` its tensors.

    Args:
        d_in: feature size of the layer input. dtype: accumulation dtype, float32 or float64.
        device: where the state lives (default: the first batch's device). name: the site(s), for messages.

    ``tokens`` counts the input rows seen, ``batches`` the updates that added something.
    """

    kind = "statistics"
    missing = "statistics"  # what there is none of before the first batch ("no Gram matrix")
    state_names: tuple[str, ...] = ()

    def __init__(
        self, d_in: int, dtype: torch.dtype, device: torch.device | str | None = None, name: str = "layer"
    ) -> None:
        if dtype not in (torch.float32, torch.float64):
            raise InputError(f"{name}: {self.kind} dtype must be float32 or float64, got {dtype}")
        try:
            size = operator.index(d_in)
        except TypeError:
            size = 0
        if isinstance(d_in, bool) or size < 1:
            raise InputError(f"{name}: d_in must be a positive integer, got {d_in!r}")
        self.d_in = size
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else None
        self.name = name
        self.reset()

    # ------------------------------------------------------------------ for subclasses
    def check_floating(self, x: torch.Tensor, complex_ok: bool = False) -> None:
        """Raise :class:`InputError` unless ``x`` is a floating-point (or, if allowed, complex) tensor."""
        if not (x.is_floating_point() or (complex_ok and x.is_complex())):
            raise self.input_error(f"calibration input must be floating point, got {x.dtype}")

    def input_error(self, problem: str) -> InputError:
        """An :class:`InputError` for a batch this statistic cannot take, naming the site."""
        return InputError(f"{self.name}: {problem}")

    def allocate(self, batch_device: torch.device, *shapes: tuple[int, ...]) -> None:
        """Create the zeroed state tensors (one per ``state_names``) at the first batch."""
        if self.device is None:
            self.device = torch.device(batch_device)
        for attr, shape in zip(self.state_names, shapes):
            setattr(self, attr, torch.zeros(shape, dtype=self.dtype, device=self.device))

    @property
    def seen(self) -> bool:
        """Whether any calibration input has been added."""
        return getattr(self, self.state_names[0]) is not None

    def require_data(self) -> None:
        """Raise :class:`NoCalibrationDataError` before the first batch."""
        if not self.seen:
            raise NoCalibrationDataError(f"{self.name}: no calibration input was seen, so there is no {self.missing}")

    def raise_nonfinite(self, bad_channels: torch.Tensor) -> None:
        """Raise :class:`NonFiniteActivationError` naming the batch and the input channels flagged in
        ``bad_channels`` (bool, ``(d_in,)``)."""
        channels = bad_channels.nonzero().flatten()
        more = " ..." if channels.numel() > _SHOWN_CHANNELS else ""
        raise NonFiniteActivationError(
            f"{self.name}: calibration input batch {self.batches} contains NaN or Inf (input channels "
            f"{channels[:_SHOWN_CHANNELS].tolist()}{more}); check the model's numerics in this dtype, e.g. run "
            f"calibration in float32"
        )

    # ------------------------------------------------------------------ shared behaviour
    def to(self, device: torch.device | str) -> "StreamingStatistic":
        """Move the state (e.g. offload to CPU); later updates are accumulated there."""
        self.device = torch.device(device)
        for attr in self.state_names:
            value = getattr(self, attr)
            if value is not None:
                setattr(self, attr, value.to(self.device))
        return self

    def reset(self) -> None:
        """Forget everything seen (the settings stay)."""
        for attr in self.state_names:
            setattr(self, attr, None)
        self.tokens = 0
        self.batches = 0
