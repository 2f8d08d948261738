"""``swappass prune`` launched with 2 CPU ranks (gloo): the single-process output, written once; bad input fails
every rank. Each launch is a pair of fresh processes (a few seconds each on a small CPU)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import SMALL, save_tiny_run_inputs
from dist_helper import one_thread
from safetensors.torch import load_file

from swappass import cli
from swappass.cli.checkpoint import LevelCheckpoints
from swappass.cli.output_dir import CHECKPOINT_DIR, RUN_FILE
from swappass.core.masks import MASKS_FILE, load_masks

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
TIMEOUT_S = 180


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_run_inputs(tmp_path_factory.mktemp("tiny"))


def torchrun(tmp_path: Path, *args) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 -m swappass prune ARGS``; each output line starts with ``[default<rank>]:``."""
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--tee", "3",
         "--log-dir", str(tmp_path / "logs"), "-m", "swappass", "prune", *map(str, args)],
        capture_output=True, text=True, env=ENV, timeout=TIMEOUT_S,
    )


def prune_one_process(*args) -> int:
    with one_thread():  # torchrun's ranks run one thread each: the same arithmetic
        return cli.main(["prune", *map(str, args)])


def lines_of(rank: int, text: str) -> list[str]:
    prefix = f"[default{rank}]:"
    return [line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)]


def assert_same_model(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), f"weights of {a} and {b} differ"
    ma, mb = load_masks(a / MASKS_FILE), load_masks(b / MASKS_FILE)
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k].mask, mb[k].mask) for k in ma), "masks differ"
    ra, rb = (json.loads((d / RUN_FILE).read_text())["report"]["sites"] for d in (a, b))
    keys = ("name", "status", "loss_warm", "loss_final", "swaps", "iters", "sparsity", "level", "tokens")
    assert [{k: r[k] for k in keys} for r in ra] == [{k: r[k] for k in keys} for r in rb]


def test_torchrun_prune_writes_the_single_process_result_once_and_resumes_across_world_sizes(
        tiny, tmp_path, monkeypatch, capsys):
    model_dir, text = tiny
    args = [model_dir, "--pattern", "2:4", "--calib", text, *SMALL]
    assert prune_one_process(*args, "--out", tmp_path / "one") == 0
    one = json.loads((tmp_path / "one" / RUN_FILE).read_text())
    assert one["distributed"] == {"world_size": 1, "backend": None} and one["report"]["settings"]["world_size"] == 1
    assert sum(r["swaps"] or 0 for r in one["report"]["sites"]) > 0, "the refinement swapped something"

    run = torchrun(tmp_path, *args, "--out", tmp_path / "two", "--onnx", "--plot")
    assert run.returncode == 0, run.stderr[-3000:]  # torchrun exits 0 only when every rank did
    out = tmp_path / "two"
    assert_same_model(tmp_path / "one", out)
    record = json.loads((out / RUN_FILE).read_text())
    assert record["distributed"] == {"world_size": 2, "backend": "gloo"} and "world_size" not in record["recipe"]
    assert record["report"]["settings"]["world_size"] == 2, "sparsify split the rows over the 2 ranks"
    assert record["recipe"] == one["recipe"] and record["onnx"]["passed"] is True
    assert {"model.safetensors", MASKS_FILE, "model.onnx", "reduction.png"} <= set(record["files"])
    assert not (out / CHECKPOINT_DIR).exists()
    assert sum("written to" in line for line in lines_of(0, run.stdout)) == 1
    assert sum("PASSED" in line for line in lines_of(0, run.stdout)) == 1  # the ONNX report, rank 0's
    assert lines_of(1, run.stdout) == [], "rank 1 prints nothing"
    assert not [line for line in lines_of(1, run.stderr) if line.startswith("swappass:")]

    # a run interrupted in one process resumes with two ranks (world size is not in the recipe), same model
    real_save = LevelCheckpoints.save_level

    def save_then_stop(self, state):
        real_save(self, state)
        if state.level == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(LevelCheckpoints, "save_level", save_then_stop)
    resumed = tmp_path / "resumed"
    assert prune_one_process(*args, "--out", resumed) == cli.EXIT_INTERRUPTED
    assert LevelCheckpoints(resumed / CHECKPOINT_DIR).finished_levels() == 4
    monkeypatch.setattr(LevelCheckpoints, "save_level", real_save)
    run = torchrun(tmp_path, *args, "--out", resumed)
    assert run.returncode == 0, run.stderr[-3000:]
    assert any("resuming: levels 0–3 are done" in line for line in lines_of(0, run.stderr))
    assert json.loads((resumed / RUN_FILE).read_text())["resumed_levels"] == 4
    assert_same_model(tmp_path / "one", resumed)

    # and the two-rank output is this run's for a single process too: nothing to prune again
    capsys.readouterr()
    assert prune_one_process(*args, "--out", out) == 0
    assert "already holds this run" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_ranks(*args) -> list[tuple[int, str]]:
    """``python -m swappass prune ARGS`` as torchrun starts its 2 ranks (the env:// variables), so that each
    rank's own exit status and stderr are seen (torchrun stops the others once one fails). (code, stderr) per
    rank; a rank still running after the timeout is killed and fails the test as hung."""
    port = free_port()
    procs = []
    for rank in range(2):
        env = {**ENV, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, "-m", "swappass", "prune", *map(str, args)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results, hung = [], []
    for rank, proc in enumerate(procs):
        try:
            _, err = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            hung.append(rank)
        results.append((proc.returncode, err))
    assert not hung, f"ranks {hung} hung: {[err[-2000:] for _, err in results]}"
    return results


def test_bad_input_fails_every_rank_with_the_message(tiny, tmp_path):
    model_dir, text = tiny
    # checked by every rank: each reports its own error
    out = tmp_path / "out"
    for code, err in launch_two_ranks(model_dir, "--out", out, "--calib", text, *SMALL, "--pattern", "3:2"):
        assert code == cli.EXIT_BAD_INPUT and "--pattern '3:2'" in err, err[-2000:]
    assert not out.exists()

    # checked by rank 0 alone (the output directory): rank 1 exits with rank 0's message
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a swappass run\n")
    for code, err in launch_two_ranks(model_dir, "--out", foreign, "--calib", text, *SMALL):
        assert code == cli.EXIT_BAD_INPUT and "holds no swappass run" in err, err[-2000:]
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
