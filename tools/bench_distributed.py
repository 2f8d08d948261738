"""Speed-up of the 1-swap refinement split across GPUs (swappass.refine.distributed): 1, 2 and 4 ranks in one run.

For each world size N of ``--gpus`` (default 1 2 4), N fresh processes (one per GPU, NCCL; gloo with ``--device
cpu``) are joined through :func:`swappass.refine.distributed.init_distributed` (N = 1: no process group, the plain
single-process path) and refine the same layers with ``refine_mask(..., group=group)``: the Gram groups of one
LLaMA-3.1-8B decoder block as the graph pass refines them — q/k/v rows concatenated (6144 × 4096), o (4096 × 4096),
gate/up (28672 × 4096), down (4096 × 14336) — with random weights (std 0.02) and a synthetic Gram matrix with
outlier channels and correlated inputs, Wanda warm start. Every rank builds the same inputs (same seeds, same
device type); refine_mask checks that they agree.

Reported per group and N: wall time from a barrier to the end of the call (gather included), the speed-up
against N = 1, each rank's busy time (its own slice; the spread shows the load balance) and whether the masks,
swaps and errors are identical to N = 1 (sha256 of their bytes).

    python tools/bench_distributed.py --gpus 1 2 4 --iters 100 --json out.json    # multi-GPU machine
    python tools/bench_distributed.py --device cpu --tiny                        # CPU (gloo), tiny shapes
"""
from __future__ import annotations

import os

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast off, before anything can start NCCL

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (name, rows, d_in): one decoder block's refine_mask calls (prune_weights concatenates a Gram group's rows)
LLAMA3_8B = [("qkv", 4096 + 1024 + 1024, 4096), ("o", 4096, 4096), ("gate_up", 2 * 14336, 4096),
             ("down", 4096, 14336)]
SMOLLM2 = [("qkv", 576 + 192 + 192, 576), ("o", 576, 576), ("gate_up", 2 * 1536, 576), ("down", 576, 1536)]
TINY = [("qkv", 64 + 32 + 32, 64), ("o", 64, 64), ("gate_up", 2 * 224, 64), ("down", 64, 224)]
SHAPES = {"llama3-8b": LLAMA3_8B, "smollm2": SMOLLM2, "tiny": TINY}


def make_layer(rows: int, d_in: int, device: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (rows × d_in, std 0.02) and G = X Xᵀ of synthetic activations (outlier channels, low-rank mix)."""
    g = torch.Generator(device=device).manual_seed(seed)
    tokens = 4096
    W = torch.randn(rows, d_in, generator=g, device=device) * 0.02
    X = torch.randn(d_in, tokens, generator=g, device=device)
    X = X * (0.05 + torch.rand(d_in, 1, generator=g, device=device) ** 4 * 5)
    X = X + 0.3 * (torch.randn(d_in, 64, generator=g, device=device) @ torch.randn(64, tokens, generator=g,
                                                                                   device=device))
    return W, X @ X.T


def digest(res) -> str:
    h = hashlib.sha256()
    for t in (res.mask, res.swaps, res.loss_before, res.loss_after):
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def worker(rank: int, world: int, port: int, args: argparse.Namespace, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    import swappass as sp
    from swappass.refine import distributed

    backend = "gloo" if args.device == "cpu" else "nccl"
    group = distributed.init_distributed(backend=backend)
    device = torch.device("cpu") if args.device == "cpu" else (
        distributed.rank_device(group) if group is not None else torch.device("cuda", 0))
    if device.type == "cuda":
        torch.cuda.set_device(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if group is not None:
            torch.distributed.barrier(group)

    rows = []
    for i, (name, n_rows, d_in) in enumerate(SHAPES[args.shapes]):
        for pattern in args.patterns:
            W, G = make_layer(n_rows, d_in, device, seed=1000 + i)
            mask = sp.warm_start(W, G, pattern, "wanda")
            if args.warmup and i == 0 and pattern == args.patterns[0]:  # kernel compilation, allocator
                sp.refine_mask(W, G, mask, pattern, max_iters=1, backend=args.backend, group=group)
            sync()
            t0 = time.perf_counter()
            res = sp.refine_mask(W, G, mask, pattern, max_iters=args.iters, backend=args.backend, group=group)
            sync()
            wall = time.perf_counter() - t0
            dist_info = res.info.get("distributed", {})
            rows.append(dict(group=name, shape=f"{n_rows}x{d_in}", pattern=pattern, world=world, rank=rank,
                             wall_s=wall, busy_s=dist_info.get("seconds", wall), rows=list(dist_info.get("rows",
                             (0, n_rows))), iters=res.iters, swaps=int(res.swaps.sum()),
                             reduction=res.relative_reduction, backend=res.info["backend"], digest=digest(res)))
            del W, G, mask, res
    Path(out_dir, f"world{world}_rank{rank}.json").write_text(json.dumps(rows))
    distributed.close_distributed(group)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_world(world: int, args: argparse.Namespace, out_dir: Path) -> list[dict]:
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, world, port, args, str(out_dir))) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(args.timeout)
    failed = [r for r, p in enumerate(procs) if p.exitcode != 0]
    for p in procs:
        if p.is_alive():
            p.kill()
    if failed:
        raise SystemExit(f"world size {world}: rank(s) {failed} failed or timed out (exit codes "
                         f"{[p.exitcode for p in procs]})")
    return [row for r in range(world) for row in json.loads((out_dir / f"world{world}_rank{r}.json").read_text())]


def summarize(results: list[dict]) -> list[dict]:
    """One line per (group, pattern, world): slowest rank's wall time, busy times, speed-up, identical to N=1."""
    lines = {}
    for row in results:
        key = (row["group"], row["pattern"], row["world"])
        line = lines.setdefault(key, dict(group=row["group"], shape=row["shape"], pattern=row["pattern"],
                                          world=row["world"], wall_s=0.0, busy_s=[], digests=set(),
                                          iters=row["iters"], swaps=row["swaps"], reduction=row["reduction"],
                                          backend=row["backend"]))
        line["wall_s"] = max(line["wall_s"], row["wall_s"])
        line["busy_s"].append(row["busy_s"])
        line["digests"].add(row["digest"])
    out = list(lines.values())
    base = {(x["group"], x["pattern"]): x for x in out if x["world"] == min(r["world"] for r in out)}
    for x in out:
        b = base[(x["group"], x["pattern"])]
        x["speedup"] = b["wall_s"] / x["wall_s"]
        x["identical"] = x["digests"] == b["digests"] and len(x["digests"]) == 1
    for x in out:
        x["digests"] = sorted(x["digests"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--gpus", type=int, nargs="+", default=None,
                    help="world sizes to run, one after the other (default: 1 2 4 on cuda, 1 2 on cpu)")
    ap.add_argument("--shapes", choices=sorted(SHAPES), default="llama3-8b",
                    help="one decoder block of this model (smollm2: SmolLM2-135M; tiny: hidden 64, FFN 224)")
    ap.add_argument("--tiny", dest="shapes", action="store_const", const="tiny", help="same as --shapes tiny")
    ap.add_argument("--patterns", nargs="+", default=["0.6"])
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per CPU rank (same for every N)")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false",
                    help="skip the 1-iteration call before timing (kernel compilation)")
    ap.add_argument("--timeout", type=float, default=580.0, help="seconds per world size before giving up")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    worlds = args.gpus or ([1, 2, 4] if args.device == "cuda" else [1, 2])
    if args.device == "cuda":
        have = torch.cuda.device_count()
        if max(worlds) > have:
            raise SystemExit(f"--gpus {worlds} needs {max(worlds)} GPUs, {have} visible")
        print(f"GPUs: {have} × {torch.cuda.get_device_name(0)}; torch {torch.__version__}; "
              f"NCCL_NVLS_ENABLE={os.environ['NCCL_NVLS_ENABLE']}", flush=True)
    else:
        print(f"CPU: {os.cpu_count()} cores, {args.threads} thread(s) per rank; torch {torch.__version__}", flush=True)
    import tempfile

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for world in worlds:
            t0 = time.perf_counter()
            results += run_world(world, args, Path(tmp))
            print(f"world size {world}: done in {time.perf_counter() - t0:.1f} s (processes, setup, all groups)",
                  flush=True)
    lines = summarize(results)
    print(f"\n{'group':8s} {'shape':11s} {'pattern':7s} {'N':>2s} {'wall s':>8s} {'speed-up':>8s} "
          f"{'busy s per rank':>28s} {'iters':>5s} {'swaps':>10s} {'reduction':>9s}  identical to N={worlds[0]}")
    for x in lines:
        busy = " ".join(f"{b:.3f}" for b in x["busy_s"])
        print(f"{x['group']:8s} {x['shape']:11s} {x['pattern']:7s} {x['world']:2d} {x['wall_s']:8.3f} "
              f"{x['speedup']:8.2f} {busy:>28s} {x['iters']:5d} {x['swaps']:10d} {x['reduction']:9.4f}  "
              f"{'yes' if x['identical'] else 'NO'}")
    for world in worlds:
        mine = [x for x in lines if x["world"] == world]
        base = [x for x in lines if x["world"] == worlds[0]]
        total, total_base = sum(x["wall_s"] for x in mine), sum(x["wall_s"] for x in base)
        print(f"all groups, N={world}: {total:.3f} s, speed-up {total_base / total:.2f}, "
              f"identical: {all(x['identical'] for x in mine)}")
    if args.json:
        args.json.write_text(json.dumps(dict(args={k: str(v) for k, v in vars(args).items()}, lines=lines,
                                             ranks=results), indent=1))
    if not all(x["identical"] for x in lines):
        raise SystemExit("the split result differs from the single-process one")


if __name__ == "__main__":
    main()
