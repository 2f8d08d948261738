"""Time the README's main job (`swappass prune smollm2-135m ... --onnx`) exactly as written there, for one or
more checkouts run alternately in the same session (so that they share the machine's load).

    python tools/bench_main_job.py                                    # this checkout, once
    python tools/bench_main_job.py --baseline HEAD~1 --rounds 3       # previous commit vs this one, alternately
    python tools/bench_main_job.py --checkout /path/a --checkout .    # any checkouts
    python tools/bench_main_job.py --omp-threads 1 --extra --iters 10 # OMP_NUM_THREADS=1; append options
    python tools/bench_main_job.py --omp-threads 1 2 unset --rounds 2 # thread-count variants, alternately

The command is read from this checkout's README.md (the quick-start line that installs and runs `swappass
prune`); only its `swappass prune ...` part runs (nothing is installed), with `--out` pointed to a temporary
directory and `--no-progress`, as `python -m swappass` from each checkout (`PYTHONPATH` = the checkout), without
`OMP_NUM_THREADS` unless `--omp-threads` is given (several values: one variant each; `unset` = none). `--baseline REV` exports that revision of this repository
(`git archive`) into a temporary directory and runs it first in every round (the order alternates by round).
Reported per run: the load average before it, the wall time of the whole command (process start to exit), the
job's phases from `swappass.json` (model load, calibration data, pruning, saving, ONNX export and verification),
the sampling rate of `--calib self`, the threads each stage used (when the checkout records them), the
process's peak RSS and the mean relative error reduction; then the median wall time per checkout and the ratio.
SmolLM2 must be in the swappass cache already (the first run's download is not timed).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tarfile
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


def export_revision(rev: str, into: Path) -> Path:
    """The tree of ``rev`` of this repository, written to ``into`` (a plain directory, not a worktree)."""
    archive = into / "rev.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), rev], check=True)
    target = into / "checkout"
    with tarfile.open(archive) as tar:
        tar.extractall(target)
    archive.unlink()
    return target


def executable(argv: list[str]) -> list[str]:
    """``argv`` (starting with 'swappass') as `python -m swappass ...` of the interpreter running this script
    (the checkout on ``PYTHONPATH`` is the one that runs)."""
    return [sys.executable, "-m", "swappass", *argv[1:]]


# `python -m swappass ARGS` that writes its own peak RSS (KiB) to argv[1] when it exits
_RUNNER = ("import atexit, resource, runpy, sys; path = sys.argv.pop(1); atexit.register(lambda: open(path, 'w')"
           ".write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))); sys.argv[0] = 'swappass'; "
           "runpy.run_module('swappass', run_name='__main__', alter_sys=True)")


def _option(argv: list[str], name: str, default: int) -> int:
    return int(argv[argv.index(name) + 1]) if name in argv else default


def run_once(checkout: Path, argv: list[str], omp_threads: str | None) -> dict:
    """One run of the job from ``checkout``; its timings and outcome."""
    with tempfile.TemporaryDirectory(prefix="swappass-main-job-") as tmp:
        out = Path(tmp) / "out"
        rss_file = Path(tmp) / "peak_rss_kib"
        cmd = [sys.executable, "-c", _RUNNER, str(rss_file), *with_out(argv, out)[1:], "--no-progress"]
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        env["PYTHONPATH"] = str(checkout)
        if omp_threads and omp_threads != "unset":
            env["OMP_NUM_THREADS"] = omp_threads
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        rss = int(rss_file.read_text()) / 2**20 if rss_file.is_file() else None  # KiB -> GiB
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
            raise SystemExit(f"{checkout}: the command failed with exit status {proc.returncode}")
        record = json.loads((out / "swappass.json").read_text())
    onnx = record.get("onnx") or {}
    timings = record.get("timings", {})
    tokens = _option(argv, "--nsamples", 128) * _option(argv, "--seqlen", 2048)
    res = {
        "checkout": str(checkout), "omp_threads": omp_threads or "unset", "load_avg_before": round(load, 2),
        "wall_s": wall,
        **{f"{k}_s": v for k, v in timings.items()},
        "onnx_export_s": onnx.get("export_seconds"), "onnx_verify_s": onnx.get("verify_seconds"),
        "onnx_passed": onnx.get("passed"), "peak_rss_gib": rss,
        "mean_reduction": record["report"]["mean_relative_reduction"], "sites": len(record["report"]["sites"]),
        "threads": record.get("threads"),
    }
    if "--calib" in argv and argv[argv.index("--calib") + 1] == "self" and timings.get("calibration_data"):
        res["sampling_tok_per_s"] = tokens / timings["calibration_data"]
    return res


def _fmt(res: dict) -> str:
    return json.dumps({k: (round(v, 4 if k == "mean_reduction" else 2) if isinstance(v, float) else v)
                       for k, v in res.items()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkout", action="append", type=Path, default=[],
                    help="a checkout to run (repeatable; default: this one)")
    ap.add_argument("--baseline", metavar="REV", help="also run this revision of this repository (first)")
    ap.add_argument("--rounds", type=int, default=1, help="runs per checkout, alternating")
    ap.add_argument("--omp-threads", nargs="+", default=["unset"],
                    help="OMP_NUM_THREADS of the runs: one variant per value ('unset': not set)")
    ap.add_argument("--json", type=Path, help="write every run's numbers here")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="options appended to the command")
    args = ap.parse_args()
    argv = readme_main_command() + args.extra
    print("command:", shlex.join(argv), flush=True)
    with tempfile.TemporaryDirectory(prefix="swappass-baseline-") as tmp:
        checkouts = [c.resolve() for c in args.checkout] or [REPO]
        if args.baseline:
            checkouts.insert(0, export_revision(args.baseline, Path(tmp)))
            print(f"baseline {args.baseline}: {checkouts[0]}", flush=True)
        runs: list[dict] = []
        variants = [(c, t) for c in checkouts for t in args.omp_threads]
        for r in range(args.rounds):
            for checkout, threads in (variants if r % 2 == 0 else variants[::-1]):
                res = run_once(checkout, argv, threads)
                res["round"] = r
                runs.append(res)
                print(_fmt(res), flush=True)
    print("\nmedian wall time per checkout and OMP_NUM_THREADS (same session):")
    medians = {}
    for checkout, threads in variants:
        walls = [x["wall_s"] for x in runs if x["checkout"] == str(checkout) and x["omp_threads"] == threads]
        medians[(checkout, threads)] = statistics.median(walls)
        print(f"  {checkout} OMP_NUM_THREADS={threads}: {medians[(checkout, threads)]:.1f} s over {len(walls)} "
              f"run(s) ({', '.join(f'{w:.1f}' for w in walls)})")
    if len(checkouts) > 1:
        for threads in args.omp_threads:
            base = medians[(checkouts[0], threads)]
            for checkout in checkouts[1:]:
                print(f"  OMP_NUM_THREADS={threads}: {checkout} vs {checkouts[0]}: "
                      f"x{base / medians[(checkout, threads)]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"command": argv, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
