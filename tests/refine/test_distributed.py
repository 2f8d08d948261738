"""Rows across processes (swappass.refine.distributed): N ranks give the single-process result bit for bit.

The multi-process tests start 2 CPU processes joined by gloo (tests/helpers/dist_helper.py); every worker runs with one
intra-op thread, and so does every test here (the single-process references).
"""
from __future__ import annotations

import pytest
import torch
from dist_helper import hard_exit, one_thread, run_ranks, save_result

import swappass as sp
from swappass import kernels
from swappass.core import rowtiles
from swappass.core.patterns import NMSparsity
from swappass.kernels.torch_search import SwapChoice, nm_diag_blocks, search_nm_torch, search_rows_torch
from swappass.refine.distributed import row_partition

# (d_out, d_in, pattern, dtype, backend, extra refine_mask arguments). CPU row tile: 64 rows.
CASES = [
    (200, 48, "0.6", torch.float32, "cpu", {}),  # 4 tiles, the last one short: 2 + 2 tiles
    (200, 48, "0.6", torch.float64, "torch", {"resync_every": 3}),
    (130, 32, "2:4", torch.float32, "torch", {"resync_every": 5}),  # 3 tiles: 1 + 2
    (130, 32, "4:8", torch.float64, "cpu", {}),
    (64, 40, "0.6", torch.float32, "cpu", {}),  # one tile: rank 1 refines nothing
    (1, 32, "0.5", torch.float32, "cpu", {}),  # fewer rows than ranks
    (200, 48, "0.6", torch.float32, "device-loop", {"resync_every": 4}),  # the loop the GPU backends run
    (130, 32, "2:4", torch.float64, "device-loop", {}),
]
DEVICE_LOOP = "device-loop"


def _make_device_loop_search(pattern, G):
    """The torch search behind the GPU backends' contract (an ``active`` row flag), so that refine_mask runs
    its device-side loop (no host synchronisation per iteration) on the CPU."""
    gdiag = G.diagonal().contiguous()
    if isinstance(pattern, NMSparsity):
        blocks = nm_diag_blocks(G, pattern.m)
        base = lambda w, c, keep: search_nm_torch(w, c, keep, blocks, gdiag, pattern.m)  # noqa: E731
    else:
        base = lambda w, c, keep: search_rows_torch(w, c, keep, G, gdiag)  # noqa: E731

    def search(w, c, keep, active=None):
        best = base(w, c, keep)
        if active is None:
            return best
        return SwapChoice(torch.where(active, best.delta, torch.full_like(best.delta, float("inf"))), best.u, best.p)

    search.supports_active = True
    return search


@pytest.fixture(autouse=True)
def device_loop_backend_and_one_thread():
    """Every test here: the device-loop backend registered, one intra-op thread (the workers' setting)."""
    register_device_loop_backend()
    with one_thread():
        yield
    kernels.unregister_backend(DEVICE_LOOP)


def register_device_loop_backend():
    kernels.register_backend(DEVICE_LOOP, lambda device: True, _make_device_loop_search)
FIELDS = ("mask", "loss_before", "loss_after", "swaps")


def make_case(i: int):
    d_out, d_in, pattern, dtype, backend, extra = CASES[i]
    g = torch.Generator().manual_seed(100 + i)
    W = torch.randn(d_out, d_in, generator=g, dtype=dtype)
    X = torch.randn(d_in, 3 * d_in, generator=g, dtype=dtype) * (0.1 + torch.rand(d_in, 1, generator=g, dtype=dtype))
    X[1::2] += 0.7 * X[::2][: X[1::2].shape[0]]  # correlated channels: swaps interact
    G = X @ X.T
    mask = sp.warm_start(W, G, pattern, "wanda")
    return W, G, mask, pattern, dict(max_iters=40, backend=backend, **extra)


def _result(res) -> dict:
    return {**{f: getattr(res, f) for f in FIELDS}, "iters": res.iters}


def assert_same_result(got: dict, ref: dict, what: str) -> None:
    for f in FIELDS:
        assert got[f].dtype == ref[f].dtype and torch.equal(got[f], ref[f]), f"{what}: {f} differs"
    assert got["iters"] == ref["iters"], what


# ------------------------------------------------------------------------------------------ single process
def test_row_partition_is_contiguous_tile_aligned_and_balanced():
    for n, tile, world in [(200, 64, 2), (130, 64, 2), (1, 64, 2), (0, 64, 3), (1000, 16, 7), (64, 64, 4)]:
        parts = row_partition(n, tile, world)
        assert len(parts) == world and parts[0][0] == 0 and parts[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:])), "contiguous, in rank order"
        assert all(lo % tile == 0 for lo, hi in parts if hi > lo), "slices start on a tile"
        tiles = [-(-(hi - lo) // tile) for lo, hi in parts]
        assert max(tiles) - min(tiles) <= 1 and sum(tiles) == -(-n // tile)
    with pytest.raises(ValueError, match="world"):
        row_partition(10, 64, 0)


def test_row_products_do_not_depend_on_the_rows_computed_together():
    # A plain `E @ G` gives a row other bits alone than among others (MKL's gemv against its gemm on this CPU,
    # shape-dependent kernels in cuBLAS); computed in row tiles, a row gets the same bits however rows are grouped.
    g = torch.Generator().manual_seed(0)
    d, n = 96, 129  # tiles 0:64, 64:128 and the lone row 128
    w = torch.randn(n, d, generator=g)
    keep = torch.rand(n, d, generator=g) > 0.6
    X = torch.randn(d, 2 * d, generator=g)
    G = X @ X.T
    c, loss = rowtiles.row_errors(w, keep, G)
    for lo, hi in [(0, 64), (64, 129), (128, 129)]:
        c_part, loss_part = rowtiles.row_errors(w[lo:hi], keep[lo:hi], G)
        assert torch.equal(c_part, c[lo:hi]) and torch.equal(loss_part, loss[lo:hi]), (lo, hi)
    for rows in ([5], [3, 70, 71, 128]):  # re-derive a few rows: their full-batch bits, the other rows untouched
        rows = torch.tensor(rows)
        c2, loss2 = torch.zeros_like(c), torch.zeros_like(loss)
        rowtiles.resync_rows(w, keep, G, c2, loss2, rows)
        assert torch.equal(c2[rows], c[rows]) and torch.equal(loss2[rows], loss[rows])
        others = torch.ones(n, dtype=torch.bool)
        others[rows] = False
        assert not c2[others].any() and not loss2[others].any()
    e = w * ~keep  # and they are the definition, to float32 round-off
    torch.testing.assert_close(c, e @ G, rtol=1e-4, atol=1e-5 * float(c.abs().max()))
    torch.testing.assert_close(loss, ((e @ G) * e).sum(1), rtol=1e-4, atol=0)


@pytest.mark.parametrize("i", [0, 2, 3, 6, 7])
def test_refine_is_bitwise_independent_of_batch_rows(i):
    W, G, mask, pattern, kw = make_case(i)
    ref = _result(sp.refine_mask(W, G, mask, pattern, **kw))
    for batch_rows in (1, 65, 128):
        res = sp.refine_mask(W, G, mask, pattern, batch_rows=batch_rows, **kw)
        assert res.info["batch_rows"] % 64 == 0 and res.info["backend"] == kw["backend"]
        assert_same_result(_result(res), ref, f"batch_rows={batch_rows}")


def test_group_none_is_the_single_process_path():
    W, G, mask, pattern, kw = make_case(0)
    res = sp.refine_mask(W, G, mask, pattern, group=None, **kw)
    assert "distributed" not in res.info


def test_a_group_without_torch_distributed_initialised_is_a_clear_error():
    W, G, mask, pattern, kw = make_case(5)
    with pytest.raises(sp.InputError, match="not initialized"):
        sp.refine_mask(W, G, mask, pattern, group=object(), **kw)


# ------------------------------------------------------------------------------------------ two processes
def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()  # q/k/v: 128 rows (2 tiles), gate/up: 384 (6), o/down: 64 (1)


def tiny_calib():
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, 96, (1, 16), generator=g) for _ in range(4)]


def sparsify_tiny(pattern: str, group=None):
    model, report = sp.sparsify(tiny_llama(), tiny_calib(), pattern=pattern, max_iters=30, progress=False,
                                group=group)
    rows = {r.name: (r.status, r.loss_warm, r.loss_final, r.swaps, r.iters) for r in report.rows}
    return {"state": {k: v.clone() for k, v in model.state_dict().items()}, "report": rows,
            "mean_reduction": report.mean_relative_reduction}


def refine_unstructured_case(group=None) -> dict:
    W, G, _, _, _ = make_case(0)
    mask = sp.warm_start(W, G, "unstructured:0.6", "wanda")
    return _result(sp.refine_mask(W, G, mask, "unstructured:0.6", max_iters=10, group=group))


def worker_equivalence(rank, world, group):
    register_device_loop_backend()
    out = {}
    for i in range(len(CASES)):
        W, G, mask, pattern, kw = make_case(i)
        res = sp.refine_mask(W, G, mask, pattern, group=group, batch_rows=1 if i % 2 else None, **kw)
        out[i] = {**_result(res), "slice": res.info["distributed"]["rows"]}
    out["unstructured"] = refine_unstructured_case(group)  # not split: every rank refines all, same result
    out["sparsify"] = sparsify_tiny("0.6", group)  # 2:4 through the whole launch: the torchrun test
    return out


def test_two_ranks_give_the_single_process_result_bit_for_bit(tmp_path):
    results, codes, hung = run_ranks(worker_equivalence, 2, tmp_path, timeout_s=120)
    assert not hung, f"ranks {hung} hung"
    for r, res in enumerate(results):
        assert res is not None and "ok" in res, f"rank {r} failed: {res and res.get('trace')}"
    got = [res["ok"] for res in results]
    for i in range(len(CASES)):
        W, G, mask, pattern, kw = make_case(i)
        ref = _result(sp.refine_mask(W, G, mask, pattern, **kw))
        for r in range(2):
            assert_same_result(got[r][i], ref, f"case {i} {CASES[i][:4]}, rank {r}")
        slices = [got[r][i]["slice"] for r in range(2)]
        assert slices == row_partition(CASES[i][0], 64, 2)
    assert got[0][0]["swaps"].sum() > 0, "the refinement did something"
    ref = refine_unstructured_case()
    for r in range(2):
        assert_same_result(got[r]["unstructured"], ref, f"unstructured, rank {r}")
    ref = sparsify_tiny("0.6")
    for r in range(2):
        mine = got[r]["sparsify"]
        assert mine["state"].keys() == ref["state"].keys()
        for name, value in ref["state"].items():
            assert torch.equal(mine["state"][name], value), f"{name} differs on rank {r}"
        assert repr(mine["report"]) == repr(ref["report"])  # exact floats; ignored sites hold nan
        assert mine["mean_reduction"] == ref["mean_reduction"]
    assert any(row[3] > 0 for row in ref["report"].values())


def worker_failures(rank, world, group):
    W, G, mask, pattern, kw = make_case(0)
    seen = {}
    # 1. rank 1 fails inside its slice: every rank raises, none waits forever
    import swappass.refine.rows as rows

    original = rows.refine_batch

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure on rank 1")

    if rank == 1:
        rows.refine_batch = broken
    try:
        sp.refine_mask(W, G, mask, pattern, **{**kw, "backend": "torch"}, group=group)
    except Exception as exc:
        seen["work"] = (type(exc).__name__, str(exc))
    rows.refine_batch = original
    # 2. the ranks' inputs differ (e.g. different calibration data): every rank refuses
    try:
        sp.refine_mask(W, G * (2.0 if rank == 1 else 1.0), mask, pattern, group=group, **kw)
    except Exception as exc:
        seen["inputs"] = (type(exc).__name__, str(exc))
    # 3. bad input on one rank only (a NaN weight): rank 1 raises its ValueError, rank 0 does not wait for it
    bad = W.clone()
    if rank == 1:
        bad[3, 5] = float("nan")
    try:
        sp.refine_mask(bad, G, mask, pattern, group=group, **kw)
    except Exception as exc:
        seen["bad_input"] = (type(exc).__name__, str(exc))
    # 4. rank-0-only work (writing files) that fails: rank 0 raises it, rank 1 learns of it
    from swappass.refine.distributed import main_process_only, main_process_shared

    try:
        main_process_only(lambda: 1 / 0, group, what="writing the output")
    except Exception as exc:
        seen["main_only"] = (type(exc).__name__, str(exc))
        seen["main_only_failures"] = getattr(exc, "failures", None)
    seen["main_only_ok"] = main_process_only(lambda: "written", group)
    seen["shared"] = main_process_shared(lambda: f"computed on rank {rank}", group)  # every rank gets rank 0's
    # 5. the group is still usable afterwards
    seen["after"] = _result(sp.refine_mask(W, G, mask, pattern, group=group, **kw))
    # 6. rank 1 dies without a word: rank 0's collective raises instead of waiting forever
    if rank == 1:
        save_result(rank, {"ok": seen})
        hard_exit(3)
    try:
        sp.refine_mask(W, G, mask, pattern, group=group, **kw)
    except Exception as exc:
        seen["dead_peer"] = type(exc).__name__
    return seen


def test_a_failing_rank_makes_every_rank_raise_without_hanging(tmp_path):
    results, codes, hung = run_ranks(worker_failures, 2, tmp_path, timeout_s=90, collective_timeout_s=15)
    assert not hung, f"ranks {hung} hung"
    assert codes[1] == 3, "rank 1 died as scripted"
    kind, msg = results[1]["ok"]["work"]  # the failing rank raises its own error
    assert kind == "RuntimeError" and msg == "injected failure on rank 1"
    assert results[1]["ok"]["inputs"][0] == "DistributedError"
    seen = results[0]["ok"]
    kind, msg = seen["work"]
    assert kind == "DistributedError" and "rank 1" in msg and "injected failure on rank 1" in msg
    kind, msg = seen["inputs"]
    assert kind == "DistributedError" and "inputs differ" in msg and "G of rank 1" in msg
    kind, msg = seen["bad_input"]
    assert kind == "DistributedError" and "rank 1 (InputError" in msg and "non-finite" in msg
    assert results[1]["ok"]["bad_input"][0] == "InputError"
    assert seen["main_only"][0] == "ZeroDivisionError" and seen["main_only_ok"] == "written"
    kind, msg = results[1]["ok"]["main_only"]
    assert kind == "DistributedError" and msg.startswith("writing the output failed on rank 0 (ZeroDivisionError")
    assert results[1]["ok"]["main_only_failures"] == {0: ("ZeroDivisionError", "division by zero")}
    assert results[1]["ok"]["main_only_ok"] is None
    assert seen["shared"] == results[1]["ok"]["shared"] == "computed on rank 0"
    W, G, mask, pattern, kw = make_case(0)
    assert_same_result(seen["after"], _result(sp.refine_mask(W, G, mask, pattern, **kw)), "after errors")
    assert "dead_peer" in seen, "rank 0 raised when its peer died"


# ------------------------------------------------------------------------------------------ torchrun launch
def test_example_under_torchrun_writes_the_single_process_model(tmp_path):
    """examples/distributed_prune.py with 2 ranks (torchrun, gloo): rank 0 alone writes and prints, and what it
    writes is the single-process run's model, masks and report."""
    import importlib.util
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    from swappass.core.masks import MASKS_FILE, load_masks

    repo = Path(__file__).resolve().parents[2]
    script = repo / "examples" / "distributed_prune.py"
    tiny_llama().save_pretrained(tmp_path / "tiny")
    common = [str(tmp_path / "tiny"), "--calib", "random", "--nsamples", "4", "--seqlen", "16", "--iters", "20",
              "--pattern", "2:4", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
         *common, "--out", str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=180,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("written to") == 1, "rank 0 alone prints the report"

    spec = importlib.util.spec_from_file_location("distributed_prune", script)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main([*common, "--out", str(tmp_path / "one")]) == 0

    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one), "weights bit for bit"
    m1, m2 = load_masks(tmp_path / "one" / MASKS_FILE), load_masks(tmp_path / "two" / MASKS_FILE)
    assert m1.keys() == m2.keys() and all(torch.equal(m1[k].mask, m2[k].mask) for k in m1)
    r1, r2 = (json.loads((tmp_path / d / "swappass_report.json").read_text()) for d in ("one", "two"))
    for r in (r1, r2):  # everything but the timings
        r.pop("seconds")
        for row in r["sites"]:
            row.pop("seconds")
    assert r2["settings"].pop("world_size") == 2 and r1["settings"].pop("world_size") == 1
    assert json.dumps(r1, sort_keys=True) == json.dumps(r2, sort_keys=True)  # exact floats, nan included
    assert sum(row["swaps"] or 0 for row in r1["sites"]) > 0
