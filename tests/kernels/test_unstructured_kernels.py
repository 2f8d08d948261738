"""The fast row-search kernel on unstructured masks (rows keep different counts, some none or all).

On CPU through the Triton interpreter, as tests/test_kernels_triton.py does.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

import swappass as sp  # noqa: E402
from swappass.kernels import triton_search as ts  # noqa: E402
from swappass.kernels.torch_search import search_rows_torch  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def layer(R, d, seed):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(R, d, generator=g, dtype=torch.float64) * (0.2 + 2 * torch.rand(R, 1, generator=g, dtype=torch.float64))
    X = torch.randn(d, 2 * d, generator=g, dtype=torch.float64) * (0.3 + torch.rand(d, 1, generator=g, dtype=torch.float64))
    return W, X @ X.T


def test_row_kernel_handles_uneven_kept_counts():
    W, G = layer(9, 40, 1)
    keep = sp.warm_start(W, G, "unstructured:0.6", "wanda")
    keep[0], keep[1] = False, True  # an empty and a full row: no feasible swap, +inf
    assert len(set(keep.sum(dim=1).tolist())) > 3
    c = (W * ~keep) @ G
    ref = search_rows_torch(W, c, keep, G, G.diagonal())
    w32, c32, G32 = (t.float().to(DEVICE) for t in (W, c, G))
    got = ts.row_search(w32, c32, keep.to(DEVICE), G32, G32.diagonal().contiguous())
    assert torch.isinf(got.delta[:2]).all() and torch.isinf(ref.delta[:2]).all()
    assert torch.equal(got.u[2:].cpu(), ref.u[2:]) and torch.equal(got.p[2:].cpu(), ref.p[2:])
    torch.testing.assert_close(got.delta[2:].double().cpu(), ref.delta[2:], rtol=1e-4, atol=1e-4 * float(ref.delta[2:].abs().max()))


def test_unstructured_refinement_with_the_triton_backend_matches_torch(monkeypatch):
    from swappass.kernels import registry

    if DEVICE == "cpu":  # the registry offers Triton on CUDA only; the interpreter runs the same kernel here
        monkeypatch.setattr(registry, "available_backends", lambda device: ["triton"])
    W, G = layer(8, 32, 2)
    W, G = W.float().to(DEVICE), G.float().to(DEVICE)
    mask0 = sp.warm_start(W, G, "unstructured:0.5", "wanda")
    fast = sp.refine_mask(W, G, mask0, "unstructured:0.5", max_iters=20, backend="triton")
    plain = sp.refine_mask(W, G, mask0, "unstructured:0.5", max_iters=20, backend="torch")
    assert fast.info["backend"] == "triton"
    assert torch.equal(fast.mask, plain.mask) and torch.equal(fast.swaps, plain.swaps)
