"""Which GPU refinement loop a search carries: the bound-pruned one for wide per-row float32 groups only."""
import pytest
import torch

from swappass.core.patterns import parse_pattern
from swappass.kernels.gpu import BOUND_MIN_D_IN, use_bounded_loop


@pytest.mark.parametrize("flag, pattern, d, dtype, expected", [
    (None, "0.6", BOUND_MIN_D_IN, torch.float32, True),
    (None, "0.6", BOUND_MIN_D_IN - 1, torch.float32, False),   # narrow: the dense loop is faster
    ("1", "0.6", 64, torch.float32, True),                     # forced at every width
    ("0", "0.6", 2 * BOUND_MIN_D_IN, torch.float32, False),    # turned off
    (None, "2:4", 2 * BOUND_MIN_D_IN, torch.float32, False),   # N:M: no bound-pruned loop
    (None, "0.6", 2 * BOUND_MIN_D_IN, torch.float64, False),   # the kernels are float32
])
def test_bounded_loop_choice(monkeypatch, flag, pattern, d, dtype, expected):
    if flag is None:
        monkeypatch.delenv("SWAPPASS_GPU_BOUND", raising=False)
    else:
        monkeypatch.setenv("SWAPPASS_GPU_BOUND", flag)
    G = torch.empty(d, d, dtype=dtype, device="meta")
    assert use_bounded_loop(parse_pattern(pattern), G) is expected
