"""Data-free calibration speed (`--calib self`): tokens per second of sample_sequences, per checkout and thread
count, in alternating subprocesses of one session.

    python tools/bench_sampling.py --baseline be2ab5a --threads 1 2 --rounds 3    # SmolLM2, 16 x 128 tokens
    python tools/bench_sampling.py --nsamples 16 --seqlen 32

Each run is a fresh process (`PYTHONPATH` = the checkout, `torch.set_num_threads(N)`) that loads SmolLM2-135M from
the swappass cache and times `swappass.lm.calibration.sample_sequences` alone (the model load is not timed),
reporting wall and process CPU seconds, tokens per second and a hash of the sampled tokens (the same for a
checkout at every thread count when the sampling is deterministic). The load average before each run is
recorded: on a shared machine, compare runs of one session only.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_main_job import export_revision  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import hashlib, json, sys, time, torch
n, seqlen, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
from swappass.lm.calibration import sample_sequences
from swappass.lm.models import load_model
model, tok = load_model("smollm2-135m")
t, c = time.perf_counter(), time.process_time()
seqs = sample_sequences(model, tok, nsamples=n, seqlen=seqlen, seed=0, progress=False)
wall, cpu = time.perf_counter() - t, time.process_time() - c
ids = torch.cat(seqs)
import swappass
print(json.dumps({"package": swappass.__file__, "wall_s": wall, "cpu_s": cpu, "tok_per_s": n * seqlen / wall,
                  "tokens_sha": hashlib.sha256(ids.numpy().tobytes()).hexdigest()[:16]}))
"""


def run(checkout: Path, n: int, seqlen: int, threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(checkout)
    load = os.getloadavg()[0]
    # cwd = the checkout: `python -c` puts the working directory first on sys.path
    proc = subprocess.run([sys.executable, "-c", CHILD, str(n), str(seqlen), str(threads)], env=env,
                          cwd=checkout, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{checkout}: {proc.stderr[-2000:]}")
    return {"checkout": str(checkout), "threads": threads, "load_avg_before": round(load, 2),
            **json.loads(proc.stdout.strip().splitlines()[-1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", metavar="REV", help="also run this revision of this repository")
    ap.add_argument("--checkout", type=Path, default=REPO)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--nsamples", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=128)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        checkouts = [args.checkout.resolve()]
        if args.baseline:
            checkouts.insert(0, export_revision(args.baseline, Path(tmp)))
        variants = [(c, t) for c in checkouts for t in args.threads]
        runs = []
        for r in range(args.rounds):
            for checkout, threads in (variants if r % 2 == 0 else variants[::-1]):
                res = run(checkout, args.nsamples, args.seqlen, threads)
                runs.append(res)
                print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in res.items()}), flush=True)
    print(f"\nmedian tokens/s, {args.nsamples} x {args.seqlen} tokens:")
    for checkout, threads in variants:
        rates = [x["tok_per_s"] for x in runs if x["checkout"] == str(checkout) and x["threads"] == threads]
        print(f"  {checkout} threads={threads}: {statistics.median(rates):.1f} tok/s "
              f"({', '.join(f'{x:.1f}' for x in rates)})")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2) + "\n")


if __name__ == "__main__":
    main()
