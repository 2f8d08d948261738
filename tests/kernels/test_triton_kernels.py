"""The Triton search kernels against the plain torch search (on CPU through the Triton interpreter)."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton")

from swappass.core.patterns import parse_pattern  # noqa: E402
from swappass.kernels import triton_search as ts  # noqa: E402
from swappass.kernels.torch_search import nm_diag_blocks, search_nm_torch, search_rows_torch  # noqa: E402
from swappass.methods.warmstart import mask_from_scores  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def problem(R, d, pattern, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(R, d, generator=g, dtype=torch.float64)
    X = torch.randn(d, 2 * d, generator=g, dtype=torch.float64) * (0.3 + torch.rand(d, 1, generator=g, dtype=torch.float64))
    G = X @ X.T
    keep = mask_from_scores(torch.rand(R, d, generator=g), pattern)
    c = (w * ~keep) @ G
    return [t.to(DEVICE) for t in (w, c, keep, G)]


def assert_same_choice(got, ref, w, c, keep, G):
    # identical pair wherever the float64 best is separated from the runner-up by more than fp32 round-off
    assert torch.equal(got.u.cpu(), ref.u.cpu()) and torch.equal(got.p.cpu(), ref.p.cpu())
    torch.testing.assert_close(got.delta.double().cpu(), ref.delta.cpu(), rtol=1e-4, atol=1e-4 * float(ref.delta.abs().max()))


@pytest.mark.parametrize("R, d, pattern", [(5, 24, "0.5"), (7, 40, "0.6"), (3, 33, "0.7"), (17, 64, "0.25")])
@pytest.mark.parametrize("config", [(4, 8, 8, 1), (16, 32, 16, 4)])
def test_row_kernel_matches_torch(R, d, pattern, config):
    w, c, keep, G = problem(R, d, pattern, seed=R + d)
    ref = search_rows_torch(w, c, keep, G, G.diagonal())
    got = ts.row_search(w.float(), c.float(), keep, G.float(), G.diagonal().float(), config=config)
    assert_same_choice(got, ref, w, c, keep, G)


@pytest.mark.parametrize("R, d, pattern", [(5, 24, "2:4"), (9, 64, "4:8"), (4, 32, "1:4"), (3, 48, "2:8")])
def test_nm_kernel_matches_torch(R, d, pattern):
    w, c, keep, G = problem(R, d, pattern, seed=R * d)
    m = parse_pattern(pattern).m
    blocks = nm_diag_blocks(G, m)
    ref = search_nm_torch(w, c, keep, blocks, G.diagonal(), m)
    got = ts.nm_search(w.float(), c.float(), keep, blocks.float(), G.diagonal().float(), m, BR=4)
    assert_same_choice(got, ref, w, c, keep, G)


def test_ties_inactive_rows_and_infeasible_rows():
    d = 16
    w = torch.ones(4, d, device=DEVICE)
    G = torch.eye(d, device=DEVICE)
    keep = torch.zeros(4, d, dtype=torch.bool, device=DEVICE)
    keep[:, 3::2] = True
    keep[2] = True  # nothing pruned: no feasible pair
    c = (w * ~keep) @ G
    active = torch.tensor([True, False, True, True], device=DEVICE)
    got = ts.row_search(w, c, keep, G, G.diagonal(), active=active, config=(2, 8, 8, 1))
    assert got.delta[1] == float("inf") and got.delta[2] == float("inf")
    assert (int(got.u[0]), int(got.p[0])) == (3, 0)  # every pair ties: lowest u, then lowest p
    assert (int(got.u[3]), int(got.p[3])) == (3, 0)
    nm_keep = torch.tensor([[False, True, True, False] * 4] * 4, device=DEVICE)
    c = (w * ~nm_keep) @ G
    nm = ts.nm_search(w, c, nm_keep, nm_diag_blocks(G, 4), G.diagonal(), 4, active=active)
    assert nm.delta[1] == float("inf")
    assert (int(nm.u[0]), int(nm.p[0])) == (1, 0)


@pytest.mark.parametrize("pattern", ["0.6", "2:4"])
def test_device_loop_with_triton_search_equals_host_loop(pattern):
    """The no-host-sync refinement loop (CUDA path) gives the host loop's masks, swaps and iterations."""
    import swappass as sp
    from swappass.kernels.gpu import make_triton_search
    from swappass.refine.loop import refine_batch, refine_batch_device

    w, _, _, G = problem(12, 32, pattern, seed=3)
    w, G = w.float(), G.float()
    mask = sp.warm_start(w, G, pattern, "wanda")
    search = make_triton_search(parse_pattern(pattern), G)
    k_dev, k_host = mask.clone(), mask.clone()
    s_dev, it_dev = refine_batch_device(w, k_dev, G, search, 40, 1e-6, 16, check_every=3)
    torch_search = (
        (lambda w_, c_, k_: search_rows_torch(w_, c_, k_, G, G.diagonal()))
        if pattern == "0.6"
        else (lambda w_, c_, k_: search_nm_torch(w_, c_, k_, nm_diag_blocks(G, 4), G.diagonal(), 4))
    )
    s_host, it_host = refine_batch(w, k_host, G, torch_search, 40, 1e-6, 16)
    assert torch.equal(k_dev, k_host) and torch.equal(s_dev, s_host) and it_dev == it_host
    assert int(s_host.sum()) > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Gluon kernels need an NVIDIA GPU (no interpreter)")
@pytest.mark.parametrize("R, d, pattern", [(37, 96, "0.6"), (64, 130, "0.5"), (128, 512, "0.6"), (300, 256, "0.6")])
@pytest.mark.parametrize("config, prefetch", [((4, 8, 8, 8, 4, 1, 4), True), ((4, 4, 8, 8, 4, 2, 2), False),
                                              ((2, 4, 8, 8, 4, 2, 1), True)])
def test_gluon_kernel_matches_torch(R, d, pattern, config, prefetch):
    """Also covers d that is not a multiple of the tile (130, 96: G and the operands are padded)."""
    from swappass.kernels.gluon_search import row_search_gluon

    w, c, keep, G = problem(R, d, pattern, seed=R + d)
    ref = search_rows_torch(w, c, keep, G, G.diagonal())
    active = torch.ones(R, dtype=torch.bool, device=DEVICE)
    active[::5] = False
    got = row_search_gluon(w.float(), c.float(), keep, G.float(), G.diagonal().float(), active=active,
                           config=config, prefetch=prefetch)
    on = active.cpu()
    assert torch.all(got.delta[~active] == float("inf"))
    assert bool((got.u < d).all() and (got.p < d).all())
    assert torch.equal(got.u.cpu()[on], ref.u.cpu()[on]) and torch.equal(got.p.cpu()[on], ref.p.cpu()[on])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("pattern", ["0.6", "2:4"])
def test_refine_mask_cuda_backends_equal_torch(pattern):
    import swappass as sp
    from swappass import kernels

    w, _, _, G = problem(96, 128, pattern, seed=7)
    w, G = w.float(), G.float()
    mask = sp.warm_start(w, G, pattern, "wanda")
    ref = sp.refine_mask(w, G, mask, pattern, max_iters=30, backend="torch")
    for backend in kernels.available_backends("cuda"):
        got = sp.refine_mask(w, G, mask, pattern, max_iters=30, backend=backend)
        assert torch.equal(got.mask, ref.mask), backend
        assert torch.equal(got.swaps, ref.swaps) and got.iters == ref.iters, backend


def _dense_device_search(G):
    """The dense GPU search of the auto backend (Gluon on an NVIDIA GPU, the Triton kernel under the interpreter)."""
    from swappass.kernels.gpu import gluon_available, make_gluon_search, make_triton_search

    make = make_gluon_search if gluon_available(torch.device(DEVICE)) else make_triton_search
    return make(parse_pattern("0.6"), G)


@pytest.mark.parametrize("R, d, pattern, iters, resync, seed", [
    (12, 32, "0.6", 40, 16, 3), (20, 48, "0.5", 60, 7, 4), (9, 40, "0.75", 25, 0, 5), (33, 64, "0.6", 30, 4, 6),
])
def test_bounded_gpu_loop_takes_the_dense_loops_swaps(R, d, pattern, iters, resync, seed):
    """Bit for bit the dense device loop's masks, swaps and iterations, with fewer pairs scored."""
    import swappass as sp
    from swappass.kernels.gpu_bounded import BoundedRowLoop
    from swappass.refine.loop import refine_batch, refine_batch_device

    w, _, _, G = problem(R, d, pattern, seed=seed)
    w, G = w.float(), G.float()
    mask = sp.warm_start(w, G, pattern, "wanda")
    search = _dense_device_search(G)
    k_dense, k_bound = mask.clone(), mask.clone()
    s_dense, it_dense = refine_batch_device(w, k_dense, G, search, iters, 1e-6, resync)
    loop = BoundedRowLoop(G)
    s_bound, it_bound = refine_batch(w, k_bound, G, type("S", (), {"refine_batch": loop.refine_batch})(), iters,
                                     1e-6, resync)
    assert torch.equal(k_bound, k_dense) and torch.equal(s_bound, s_dense) and it_bound == it_dense
    assert int(s_dense.sum()) > 0
    assert sum(loop.scored) < sum(loop.kept)  # pairs skipped, not merely reordered


def test_bounded_gpu_loop_with_ties_and_a_residual():
    """Every pair ties (lowest u, then p wins) and a residual (refitted values against a target) is honoured."""
    from swappass.kernels.gpu_bounded import BoundedRowLoop
    from swappass.refine.loop import refine_batch, refine_batch_device

    d = 16
    G = torch.eye(d, device=DEVICE) + 0.25
    w = torch.ones(6, d, device=DEVICE)
    keep = torch.zeros(6, d, dtype=torch.bool, device=DEVICE)
    keep[:, 1::2] = True
    residual = torch.zeros_like(w)
    residual[3:, :4] = 0.5
    for res in (None, residual):
        k_dense, k_bound = keep.clone(), keep.clone()
        s_dense, it_dense = refine_batch_device(w, k_dense, G, _dense_device_search(G), 10, 1e-6, 4, residual=res)
        fused = type("S", (), {"refine_batch": BoundedRowLoop(G).refine_batch})()
        s_bound, it_bound = refine_batch(w, k_bound, G, fused, 10, 1e-6, 4, residual=res)
        assert torch.equal(k_bound, k_dense) and torch.equal(s_bound, s_dense) and it_bound == it_dense
