"""The README's two quick-start commands: CI runs the first verbatim, and the second one's `swappass prune`
part runs here on the real SmolLM2-135M (with small calibration sizes and iterations appended)."""
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def bench_main_job():
    spec = importlib.util.spec_from_file_location("bench_main_job", REPO / "tools" / "bench_main_job.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ci_runs_the_readme_test_command_verbatim():
    readme = [line for line in (REPO / "README.md").read_text().splitlines()
              if line.startswith("python3 -m pip install") and "pytest" in line]
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert len(readme) == 1 and readme[0] in ci, "README.md's test command and .ci/run differ"
    assert ci[-1] == readme[0]  # the last thing CI does


@pytest.mark.slow
def test_readme_main_job_runs_on_smollm2(tmp_path):
    tool = bench_main_job()
    argv = tool.readme_main_command()
    assert argv[:3] == ["swappass", "prune", "smollm2-135m"] and "--onnx" in argv and "2:4" in argv
    out = tmp_path / "out"
    small = ["--nsamples", "2", "--seqlen", "32", "--iters", "2", "--no-progress"]  # later options win
    cmd = tool.executable(tool.with_out(argv, out)) + small
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "210 pruned, 0 skipped, 1 ignored" in proc.stdout  # the report table was printed
    assert "— PASSED" in proc.stdout and "210/210 pruned weights verified" in proc.stdout
    record = json.loads((out / "swappass.json").read_text())
    assert record["recipe"]["pattern"] == "2:4" and record["recipe"]["nsamples"] == 2
    assert record["onnx"]["passed"] and (out / "model.onnx").is_file()
    assert all(c["top1"] == 1.0 for c in record["onnx"]["checks"])  # onnxruntime predicts PyTorch's next tokens
