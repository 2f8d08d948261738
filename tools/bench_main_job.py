"""Time the README's main job (`swappass prune smollm2-135m ... --onnx`) exactly as written there.

    python tools/bench_main_job.py --threads 1 2          # one run per thread count, side by side
    python tools/bench_main_job.py --extra --iters 10     # append options (later options win)

The command is read from README.md (the quick-start line that installs and runs `swappass prune`); only its
`swappass prune ...` part runs (nothing is installed), with `--out` pointed to a temporary directory. Reported:
wall time of the whole command (process start to exit), the job's own phases from `swappass.json`
(model load, calibration data, pruning, saving, ONNX export and verification), peak RSS, and the mean relative
error reduction. SmolLM2 must be in the swappass cache already (the first run's download is not timed).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_main_command(readme: Path = REPO / "README.md") -> list[str]:
    """The `swappass prune ...` part of the README's main-job line, as argv (starting with 'swappass')."""
    for line in readme.read_text().splitlines():
        if line.startswith("python3 -m pip install") and "&& swappass prune " in line:
            return shlex.split(line.split("&& ", 2)[2])
    raise SystemExit("README.md has no quick-start line `python3 -m pip install ... && swappass prune ...`")


def with_out(argv: list[str], out: Path) -> list[str]:
    argv = list(argv)
    i = argv.index("--out")
    argv[i + 1] = str(out)
    return argv


def executable(argv: list[str]) -> list[str]:
    """`swappass` from PATH if installed, else `python -m swappass` from this checkout."""
    return argv if shutil.which("swappass") else [sys.executable, "-m", "swappass", *argv[1:]]


def run_once(argv: list[str], threads: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="swappass-main-job-") as tmp:
        out = Path(tmp) / "out"
        cmd = executable(with_out(argv, out))
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd + ["--no-progress"], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
            raise SystemExit(f"the command failed with exit status {proc.returncode}")
        record = json.loads((out / "swappass.json").read_text())
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # GiB (ru_maxrss is in KiB on Linux)
    onnx = record.get("onnx") or {}
    return {
        "threads": threads, "wall_s": wall, **{f"{k}_s": v for k, v in record.get("timings", {}).items()},
        "onnx_export_s": onnx.get("export_seconds"), "onnx_verify_s": onnx.get("verify_seconds"),
        "onnx_passed": onnx.get("passed"), "peak_rss_gib_so_far": rss,
        "mean_reduction": record["report"]["mean_relative_reduction"], "sites": len(record["report"]["sites"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1], help="OMP_NUM_THREADS values, one run each")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="options appended to the command")
    args = ap.parse_args()
    argv = readme_main_command() + args.extra
    print("command:", shlex.join(argv))
    for threads in args.threads:
        res = run_once(argv, threads)
        print(json.dumps({k: (round(v, 4 if k == "mean_reduction" else 2) if isinstance(v, float) else v)
                          for k, v in res.items()}))


if __name__ == "__main__":
    main()
