"""The thread count of each stage: --threads, OMP_NUM_THREADS, or automatic from the cores free now."""
from __future__ import annotations

import pytest
import torch

import swappass as sp
from swappass.cli import threads
from swappass.core.errors import InputError


@pytest.fixture(autouse=True)
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_option_then_environment_then_auto(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.ThreadPolicy.from_option("2").fixed == 2
    policy = threads.ThreadPolicy.from_option("auto")
    assert (policy.fixed, policy.source) == (3, "OMP_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "not-a-number")
    assert threads.ThreadPolicy.from_option(None).fixed is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.ThreadPolicy.from_option("auto").fixed is None
    for bad in ("0", "-1", "many"):
        with pytest.raises(InputError, match="--threads"):
            threads.ThreadPolicy.from_option(bad)


def test_enter_sets_torch_and_records_each_stage():
    policy = threads.ThreadPolicy.from_option("1")
    assert policy.enter("pruning") == 1 and torch.get_num_threads() == 1
    assert policy.to_dict() == {"policy": "--threads=1", "pruning": 1}


@pytest.mark.parametrize("cores,busy,expected", [(2, 0.0, 2), (2, 0.3, 2), (2, 0.7, 1), (2, 1.9, 1), (2, 5.0, 1),
                                                 (8, 2.2, 6), (1, 0.0, 1)])
def test_auto_leaves_the_cores_others_keep_busy(monkeypatch, cores, busy, expected):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "physical_cores", lambda: cores)
    monkeypatch.setattr(threads, "busy_cores_elsewhere", lambda seconds=threads.PROBE_SECONDS: busy)
    assert threads.ThreadPolicy.from_option("auto").count() == expected


def test_probes_of_this_machine():
    assert 1 <= threads.physical_cores() <= (torch.get_num_threads() + 64)
    assert threads.busy_cores_elsewhere(0.05) >= 0.0


def test_cgroup_quota_caps_the_cores(monkeypatch, tmp_path):
    original = threads.Path

    def fake_path(p):
        return tmp_path / "cpu.max" if str(p) == "/sys/fs/cgroup/cpu.max" else original(p)

    (tmp_path / "cpu.max").write_text("100000 100000\n")
    monkeypatch.setattr(threads, "Path", fake_path)
    assert threads.physical_cores() == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.physical_cores() >= 1


@pytest.mark.parametrize("pattern", ["2:4", "0.6"])
def test_the_thread_count_does_not_change_the_refinement(pattern):
    # Wide enough that MKL and the kernel really use both threads: Gram products and row-tile matmuls, the loop.
    g = torch.Generator().manual_seed(0)
    X = torch.randn(1024, 384, generator=g)
    W = torch.randn(200, 384, generator=g)
    results = []
    for n in (1, 2):
        torch.set_num_threads(n)
        acc = sp.GramAccumulator(384)
        acc.update(X)
        mask = sp.warm_start(W, acc.G, pattern, "wanda")
        res = sp.refine_mask(W, acc.G, mask, pattern, max_iters=30)
        results.append((acc.G, res.mask, res.loss_after))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1]) and torch.equal(results[0][2], results[1][2])
