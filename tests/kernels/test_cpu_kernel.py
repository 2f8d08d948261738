"""The compiled CPU swap search (swappass.kernels.cpu) against the plain torch search and the reference."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import swappass as sp
from swappass import kernels
from swappass.core.patterns import NMSparsity, parse_pattern
from swappass.kernels import cpu
from swappass.kernels.torch_search import nm_diag_blocks, search_nm_torch, search_rows_torch
from swappass.refine.reference import best_swap_reference

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def compiled_library():
    """Every test here exercises the compiled kernel: a compiler that exists must build it."""
    if cpu.find_compiler() is None:
        pytest.skip("no C++ compiler on this machine: only the fallback path can run")
    return cpu.load_library()


def make_rows(R, d, pattern, seed, dtype=torch.float64, method="wanda"):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(R, d, generator=g, dtype=dtype)
    X = torch.randn(d, 2 * d, generator=g, dtype=dtype) * (0.2 + torch.rand(d, 1, generator=g, dtype=dtype))
    G = X @ X.T
    G = (G + G.T) / 2
    keep = sp.warm_start(W, G, pattern, method)
    return W, G, keep, (W * ~keep) @ G


def torch_search(pattern, W, G, keep, c):
    pattern = parse_pattern(pattern)
    gd = G.diagonal().contiguous()
    if isinstance(pattern, NMSparsity):
        return search_nm_torch(W, c, keep, nm_diag_blocks(G, pattern.m), gd, pattern.m)
    return search_rows_torch(W, c, keep, G, gd)


def cpu_search(pattern, W, G, keep, c):
    search = kernels.make_search("cpu", parse_pattern(pattern), G)
    assert isinstance(search, (cpu.RowSearch, cpu.NMSearch)), "the compiled kernel, not the fallback"
    return search(W, c, keep)


def assert_same_choice(got, ref):
    assert torch.equal(got.u, ref.u)
    assert torch.equal(got.p, ref.p)
    # Same operations in the same order as torch, without FMA contraction: bit-identical scores.
    assert torch.equal(got.delta, ref.delta)


# ------------------------------------------------------------------------ agreement with the torch search
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "pattern,d",
    [("0.6", 96), ("0.5", 37), ("0.6", 129), ("2:4", 96), ("4:8", 104), ("1:4", 36), ("2:4", 20), ("1:2", 22),
     ("2:3", 39), ("5:16", 80)],  # N:M with blocks inside a vector (M = 2, 4, 8) and de-interleaved (M = 3, 16)
)
def test_same_choice_as_torch(pattern, d, dtype):
    for seed in range(3):
        R = 67  # several tiles of rows, the last one partial
        W, G, keep, c = make_rows(R, d, pattern, seed, dtype)
        assert_same_choice(cpu_search(pattern, W, G, keep, c), torch_search(pattern, W, G, keep, c))


@pytest.mark.parametrize("pattern", ["0.6", "2:4"])
def test_same_choice_as_float64_reference(pattern):
    W, G, keep, c = make_rows(9, 40, pattern, 4)
    got = cpu_search(pattern, W, G, keep, c)
    for i in range(W.shape[0]):
        delta, u, p = best_swap_reference(W[i], G, keep[i], pattern)
        assert (int(got.u[i]), int(got.p[i])) == (u, p)
        assert float(got.delta[i]) == pytest.approx(delta, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("pattern", ["0.6", "2:4"])
def test_mid_refinement_states(pattern):
    # After some swaps c is no longer the warm start's: the kernel still matches along the whole path.
    W, G, keep, c = make_rows(16, 48, pattern, 8, torch.float32)
    search_cpu = kernels.make_search("cpu", parse_pattern(pattern), G)
    for _ in range(5):
        ref = torch_search(pattern, W, G, keep, c)
        assert_same_choice(search_cpu(W, c, keep), ref)
        rows = torch.arange(W.shape[0])
        keep[rows, ref.u], keep[rows, ref.p] = False, True
        c = (W * ~keep) @ G


# ------------------------------------------------------------------------ ties and edge cases
@pytest.mark.parametrize("pattern", ["0.5", "2:4", "4:8", "3:6"])
def test_ties_go_to_lowest_u_then_p(pattern):
    # Constant weights and G = I: every feasible pair has ΔL = 0 exactly.
    d, R = 72, 20
    G = torch.eye(d, dtype=torch.float64)
    W = torch.ones(R, d, dtype=torch.float64)
    keep = sp.warm_start(torch.rand(R, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64), G,
                         pattern, "magnitude")
    c = (W * ~keep) @ G
    got = cpu_search(pattern, W, G, keep, c)
    assert torch.all(got.delta == 0)
    for i in range(R):
        kept, pruned = keep[i].nonzero()[:, 0], (~keep[i]).nonzero()[:, 0]
        u = int(kept[0])
        if isinstance(parse_pattern(pattern), NMSparsity):
            m = parse_pattern(pattern).m
            pruned = pruned[pruned // m == u // m]
        assert (int(got.u[i]), int(got.p[i])) == (u, int(pruned[0]))
    assert_same_choice(got, torch_search(pattern, W, G, keep, c))


def test_ties_late_in_the_row():
    # The only kept weights and the tied pruned ones sit past the first vectors and tiles of the row.
    d = 200
    G = torch.eye(d)
    W = torch.ones(3, d)
    keep = torch.zeros(3, d, dtype=torch.bool)
    keep[0, [150, 199]] = True
    keep[1, [3, 170]] = True
    keep[2, :-1] = True
    c = (W * ~keep) @ G
    got = cpu_search("0.5", W, G, keep, c)
    assert got.u.tolist() == [150, 3, 0] and got.p.tolist() == [0, 0, 199]
    assert_same_choice(got, torch_search("0.5", W, G, keep, c))


@pytest.mark.parametrize("pattern", ["0.6", "2:4"])
def test_rows_at_their_optimum(pattern):
    W, G, mask, _ = make_rows(12, 32, pattern, 5)
    res = sp.refine_mask(W, G, mask, pattern, max_iters=200, backend="torch")
    keep = res.mask
    c = (W * ~keep) @ G
    got = cpu_search(pattern, W, G, keep, c)
    assert torch.all(got.delta >= -1e-12 * res.loss_after)  # nothing left to gain
    assert_same_choice(got, torch_search(pattern, W, G, keep, c))


def test_rows_without_a_feasible_pair():
    W, G, keep, _ = make_rows(4, 33, "0.5", 2)
    keep[0] = True  # nothing pruned
    keep[1] = False  # nothing kept
    c = (W * ~keep) @ G
    got = cpu_search("0.5", W, G, keep, c)
    assert got.delta[:2].tolist() == [float("inf")] * 2
    assert got.u[:2].tolist() == [0, 0] and got.p[:2].tolist() == [0, 0]
    assert torch.isfinite(got.delta[2:]).all()
    assert_same_choice(got, torch_search("0.5", W, G, keep, c))
    W4, G4, keep4, _ = make_rows(3, 16, "2:4", 2)
    keep4[0] = True
    c4 = (W4 * ~keep4) @ G4
    got4 = cpu_search("2:4", W4, G4, keep4, c4)
    assert got4.delta[0] == float("inf") and (int(got4.u[0]), int(got4.p[0])) == (0, 0)
    assert_same_choice(got4, torch_search("2:4", W4, G4, keep4, c4))


def test_non_contiguous_inputs():
    W, G, keep, c = make_rows(10, 50, "0.6", 3)
    ref = torch_search("0.6", W, G, keep, c)
    Wt = W.T.contiguous().T  # column-major view
    big = torch.zeros(10, 60, dtype=c.dtype)
    big[:, 5:55] = c
    kt = keep.T.contiguous().T
    assert not (Wt.is_contiguous() or big[:, 5:55].is_contiguous() or kt.is_contiguous())
    assert_same_choice(cpu_search("0.6", Wt, G, kt, big[:, 5:55]), ref)
    Gt = G.T.contiguous().T  # a non-contiguous G at construction time
    assert_same_choice(kernels.make_search("cpu", parse_pattern("0.6"), Gt)(W, c, keep), ref)
    W4, G4, keep4, c4 = make_rows(10, 48, "2:4", 3)
    assert_same_choice(cpu_search("2:4", W4.T.contiguous().T, G4, keep4, c4), torch_search("2:4", W4, G4, keep4, c4))


def test_thread_count_does_not_change_the_choice():
    W, G, keep, c = make_rows(33, 64, "0.6", 6, torch.float32)
    search = kernels.make_search("cpu", parse_pattern("0.6"), G)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = search(W, c, keep)
    finally:
        torch.set_num_threads(before)
    assert_same_choice(search(W, c, keep), one)


def test_empty_batch_and_bad_inputs():
    W, G, keep, c = make_rows(4, 24, "0.5", 0)
    search = kernels.make_search("cpu", parse_pattern("0.5"), G)
    empty = search(W[:0], c[:0], keep[:0])
    assert empty.delta.shape == empty.u.shape == (0,)
    with pytest.raises(ValueError, match="float64 like G"):
        search(W.float(), c.float(), keep)
    with pytest.raises(ValueError, match=r"\(rows, 24\)"):
        search(W[:, :20], c[:, :20], keep[:, :20])
    with pytest.raises(ValueError, match="keep bool"):
        search(W, c, keep.to(torch.uint8))


# ------------------------------------------------------------------------ refine_mask through the backend
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("pattern", ["0.6", "2:4", "4:8"])
def test_refine_mask_cpu_equals_torch(pattern, dtype):
    W, G, mask, _ = make_rows(24, 64, pattern, 9, dtype, method="magnitude")
    fast = sp.refine_mask(W, G, mask, pattern, max_iters=40, backend="cpu")
    plain = sp.refine_mask(W, G, mask, pattern, max_iters=40, backend="torch")
    assert fast.info["backend"] == "cpu"
    assert torch.equal(fast.mask, plain.mask)
    assert torch.equal(fast.swaps, plain.swaps)
    assert fast.iters == plain.iters
    assert torch.equal(fast.loss_after, plain.loss_after)
    assert fast.swaps.sum() > 0


@pytest.mark.parametrize("pattern,dtype", [("0.6", torch.float64), ("0.5", torch.float32), ("2:4", torch.float32),
                                           ("1:4", torch.float64)])
@pytest.mark.parametrize("max_iters,resync_every", [(0, 16), (1, 16), (7, 3), (30, 1), (30, 0), (200, 16)])
def test_fused_loop_equals_the_python_loop(pattern, dtype, max_iters, resync_every):
    # The C++ loop (search, accept, c update; Python resyncs) against refine.py's loop around the torch search.
    W, G, mask, _ = make_rows(21, 40, pattern, 12, dtype, method="magnitude")
    kw = dict(max_iters=max_iters, resync_every=resync_every)
    fast = sp.refine_mask(W, G, mask, pattern, backend="cpu", **kw)
    plain = sp.refine_mask(W, G, mask, pattern, backend="torch", **kw)
    assert torch.equal(fast.mask, plain.mask)
    assert torch.equal(fast.swaps, plain.swaps)
    assert fast.iters == plain.iters
    if max_iters == 200:
        assert fast.iters < 200, "every row reached its 1-swap optimum"
    small = sp.refine_mask(W, G, mask, pattern, backend="cpu", batch_rows=4, **kw)
    assert torch.equal(small.mask, plain.mask) and small.iters == plain.iters


def test_fused_loop_equals_the_python_loop_around_the_same_kernel():
    W, G, mask, _ = make_rows(30, 64, "0.6", 13, torch.float32)
    Gs = (G + G.T) / 2
    search = kernels.make_search("cpu", parse_pattern("0.6"), Gs)
    from swappass.refine.loop import refine_batch

    k_fused, k_loop = mask.clone(), mask.clone()
    s_fused, it_fused = refine_batch(W, k_fused, Gs, search, 50, 1e-6, 16)
    s_loop, it_loop = refine_batch(W, k_loop, Gs, lambda w, c, k: search(w, c, k), 50, 1e-6, 16)
    assert torch.equal(k_fused, k_loop) and torch.equal(s_fused, s_loop) and it_fused == it_loop


def _nm_case(case, dtype):
    """(W, G, keep, pattern) for the N:M fused loop: ties, partial last vectors, every in-lane block size."""
    if case == "ties":  # weights on a grid of 0.5 and an integer G: many equal scores, also across blocks
        g = torch.Generator().manual_seed(31)
        W = (torch.randn(24, 48, generator=g) * 2).round().to(dtype) / 2
        X = torch.randint(-2, 3, (48, 20), generator=g).to(dtype)
        G, pattern = X @ X.T, "2:4"
        return W, G, sp.warm_start(W, G, pattern, "magnitude"), pattern
    if case == "constant":  # every pair of every block scores exactly the same: lowest u, then lowest p
        W = torch.ones(6, 40, dtype=dtype)
        G = torch.eye(40, dtype=dtype) * 2 + 1
        keep = sp.warm_start(torch.rand(6, 40, generator=torch.Generator().manual_seed(2), dtype=dtype), G, "2:4",
                             "magnitude")
        return W, G, keep, "2:4"
    pattern, d = {"2:4-partial": ("2:4", 52), "1:2": ("1:2", 34), "4:8": ("4:8", 72), "3:8": ("3:8", 40),
                  "3:6": ("3:6", 42)}[case]
    W, G, keep, _ = make_rows(19, d, pattern, 32, dtype, method="magnitude")
    return W, G, keep, pattern


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", ["ties", "constant", "2:4-partial", "1:2", "4:8", "3:8", "3:6"])
@pytest.mark.parametrize("resync_every", [16, 1, 0])
def test_nm_fused_loop_equals_the_python_loop(case, dtype, resync_every):
    # NMSearch.refine_batch (search, accept and c update in C++) against refine.py's loop around the torch search.
    from swappass.refine.loop import refine_batch

    W, G, keep, pattern = _nm_case(case, dtype)
    search = kernels.make_search("cpu", parse_pattern(pattern), G)
    assert isinstance(search, cpu.NMSearch)
    gd, m = G.diagonal().contiguous(), parse_pattern(pattern).m
    blocks = nm_diag_blocks(G, m)
    k_fused, k_loop = keep.clone(), keep.clone()
    s_fused, it_fused = refine_batch(W, k_fused, G, search, 60, 1e-9, resync_every)
    s_loop, it_loop = refine_batch(W, k_loop, G, lambda w, c, k: search_nm_torch(w, c, k, blocks, gd, m), 60, 1e-9,
                                   resync_every)
    assert torch.equal(k_fused, k_loop) and torch.equal(s_fused, s_loop) and it_fused == it_loop
    assert s_loop.sum() > 0 or case == "constant"
    parse_pattern(pattern).check_mask(k_fused)  # swaps stayed inside the blocks


def test_fused_loops_take_the_callers_terms():
    # refine_rows hands the loop the warm start's (c, loss), computed once for the whole slice: same result.
    from swappass.core.rowtiles import row_errors

    for pattern in ("2:4", "0.6"):
        W, G, keep, _ = make_rows(70, 48, pattern, 33, torch.float32)
        search = kernels.make_search("cpu", parse_pattern(pattern), G)
        k_own, k_given = keep.clone(), keep.clone()
        s_own, it_own = search.refine_batch(W, k_own, G, 40, 1e-6, 16)
        c, loss = row_errors(W, keep, G)
        warm_loss = loss.clone()
        s_given, it_given = search.refine_batch(W, k_given, G, 40, 1e-6, 16, terms=(c, loss))
        assert torch.equal(k_own, k_given) and torch.equal(s_own, s_given) and it_own == it_given
        assert torch.all(loss <= warm_loss) and torch.any(loss < warm_loss)  # updated in place
        torch.testing.assert_close(loss, row_errors(W, k_given, G)[1], rtol=1e-4, atol=1e-4)
        with pytest.raises(ValueError, match="terms"):
            search.refine_batch(W, keep.clone(), G, 5, 1e-6, 16, terms=(c.double(), loss))


# ------------------------------------------------------------------------ the bound-pruned fused loop
def _fused(W, G, keep, bounded, max_iters=60, resync_every=16, rtol=1e-9):
    search = cpu.RowSearch(cpu.load_library(), G, bounded=bounded)
    k = keep.clone()
    swaps, iters = search.refine_batch(W, k, G, max_iters, rtol, resync_every)
    return k, swaps, iters, search


def _bound_case(case, dtype):
    """(W, G, keep, pattern) with traps for the bound: ties, a G that is not exactly symmetric, odd rows."""
    if case == "gaussian":
        W, G, keep, _ = make_rows(40, 96, "0.6", 21, dtype)
        pattern = "0.6"
    elif case == "ties":  # weights on a grid of 0.5 and an integer G: many equal scores and bounds
        g = torch.Generator().manual_seed(22)
        W = (torch.randn(40, 80, generator=g) * 2).round().to(dtype) / 2
        X = torch.randint(-2, 3, (80, 30), generator=g).to(dtype)
        G = X @ X.T
        pattern = "0.5"
        keep = sp.warm_start(W, G, pattern, "magnitude")
    elif case == "asymmetric":  # G[u, p] != G[p, u]: the update must read the columns of G, not its rows
        W, G, keep, _ = make_rows(40, 72, "0.6", 23, dtype)
        noise = torch.randn(G.shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
        G = G + 1e-3 * noise * G.diagonal().mean()
        pattern = None  # refine_mask's products read G the other way round: only the two fused loops compare
    else:  # rows that keep 1, d - 1, all or none of their inputs; one row in which one weight is zero
        W, G, keep, _ = make_rows(8, 40, "0.5", 24, dtype)
        keep[0] = False
        keep[0, 7] = True
        keep[1] = True
        keep[1, 39] = False
        keep[2] = True
        keep[3] = False
        W[4, 5] = 0.0
        pattern = None  # no per-row budget: only the two fused loops compare
    return W, G, keep, pattern


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", ["gaussian", "ties", "asymmetric", "extreme"])
@pytest.mark.parametrize("resync_every", [16, 1, 0])
def test_bounded_loop_equals_the_exhaustive_loop(case, dtype, resync_every):
    W, G, keep, pattern = _bound_case(case, dtype)
    k_ex, s_ex, it_ex, _ = _fused(W, G, keep, bounded=False, resync_every=resync_every)
    k_bd, s_bd, it_bd, search = _fused(W, G, keep, bounded=True, resync_every=resync_every)
    assert torch.equal(k_bd, k_ex) and torch.equal(s_bd, s_ex) and it_bd == it_ex
    assert s_ex.sum() > 0
    if pattern is not None:  # and both are refine_mask's plain torch loop
        ref = sp.refine_mask(W, G, keep, pattern, max_iters=60, rtol=1e-9, resync_every=resync_every, backend="torch")
        assert torch.equal(k_bd, ref.mask) and torch.equal(s_bd, ref.swaps)


def test_bounded_loop_scores_fewer_rows_of_G_than_the_exhaustive_one():
    W, G, keep, _ = _bound_case("gaussian", torch.float32)
    k, swaps, iters, search = _fused(W, G, keep, bounded=True, max_iters=200)
    kept = int(keep[0].sum())
    # The exhaustive loop scores every kept u in every search: at least kept × (swaps + 1) passes per row.
    exhaustive = kept * (swaps + 1)
    assert torch.all(search.passes <= exhaustive)
    assert search.passes.sum() < 0.5 * exhaustive.sum()


def test_auto_backend_picks_cpu():
    assert kernels.available_backends("cpu")[0] == "cpu"
    W, G, mask, _ = make_rows(4, 16, "0.5", 1)
    assert sp.refine_mask(W, G, mask, "0.5", max_iters=2).info["backend"] == "cpu"


def test_registered_on_import_without_heavy_modules():
    code = "import sys, swappass; from swappass import kernels; " \
           "print(kernels.available_backends('cpu'), 'transformers' in sys.modules, 'onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert out.stdout.split() == ["['cpu']", "False", "False"]


# ------------------------------------------------------------------------ build cache and fallback
@pytest.fixture
def fresh_loader(monkeypatch, tmp_path):
    """An unused loader building into an empty cache."""
    monkeypatch.setenv("SWAPPASS_CACHE", str(tmp_path))
    cpu.reset_loader()
    yield tmp_path
    cpu.reset_loader()


def _fallback_check(pattern="0.6"):
    W, G, keep, c = make_rows(8, 32, pattern, 2)
    with pytest.warns(RuntimeWarning, match="falling back to the plain torch search") as record:
        search = kernels.make_search("cpu", parse_pattern(pattern), G)
    assert not isinstance(search, (cpu.RowSearch, cpu.NMSearch))
    assert_same_choice(search(W, c, keep), torch_search(pattern, W, G, keep, c))
    return record


def test_fallback_when_no_compiler(fresh_loader, monkeypatch, recwarn):
    monkeypatch.setenv("SWAPPASS_CXX", str(fresh_loader / "no-such-compiler"))
    record = _fallback_check("0.6")
    assert "no-such-compiler" in str(record[0].message)
    recwarn.clear()
    search = kernels.make_search("cpu", parse_pattern("2:4"), torch.eye(8, dtype=torch.float64))  # no 2nd warning
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    W, G, mask, _ = make_rows(6, 32, "2:4", 3)
    fast = sp.refine_mask(W, G, mask, "2:4", max_iters=10, backend="cpu")
    assert torch.equal(fast.mask, sp.refine_mask(W, G, mask, "2:4", max_iters=10, backend="torch").mask)
    assert search is not None


def test_fallback_when_the_build_fails(fresh_loader, monkeypatch):
    broken = fresh_loader / "broken.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(cpu, "SOURCE", broken)
    record = _fallback_check("2:4")
    assert "exited with status" in str(record[0].message)
    assert not list((fresh_loader / "kernels").glob("*.tmp.so")), "no temporary file left behind"


def test_build_is_cached_and_reused(fresh_loader):
    cpu.load_library()
    built = list((fresh_loader / "kernels").glob("*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    cpu.reset_loader()  # a new process, in effect
    cpu.load_library()
    assert [p.stat().st_mtime_ns for p in (fresh_loader / "kernels").glob("*.so")] == [stamp]


def test_concurrent_builds_do_not_corrupt_the_cache(tmp_path):
    script = textwrap.dedent(
        """
        import torch
        from swappass import kernels
        from swappass.kernels import cpu
        from swappass.core.patterns import parse_pattern
        G = torch.eye(16)
        search = kernels.make_search("cpu", parse_pattern("0.5"), G)
        assert isinstance(search, cpu.RowSearch), cpu.library_error()
        w = torch.arange(1.0, 17.0)[None]
        keep = (torch.arange(16) % 2 == 0)[None]
        print(search(w, (w * ~keep) @ G, keep).u.item())
        """
    )
    env = {**os.environ, "SWAPPASS_CACHE": str(tmp_path), "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=REPO) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip() == "0"
    files = sorted(f.name for f in (tmp_path / "kernels").iterdir())
    assert len(files) == 1 and files[0].endswith(".so") and ".tmp" not in files[0]
