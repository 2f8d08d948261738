"""Quality benchmark: SmolLM2-135M, WikiText-2 perplexity and layer errors for every pruning method (issue 7).

    python tools/bench_quality.py --device cuda --out runs/quality table2 figure1   # (a) and (c)
    python tools/bench_quality.py --device cuda --out runs/quality table1 new       # (b) and (d)
    python tools/bench_quality.py --quick --out /tmp/quality table2 table1 figure1 new   # tiny sizes, CPU

Tables (subcommands, any order; each row runs once per output directory and is reused by later tables):

* ``table2``  -- the paper's Table 2 analogue: perplexity of Wanda, Wanda + DSnoT, Wanda + SparseSwaps, RIA,
  RIA + DSnoT, RIA + SparseSwaps at 60% per row and 2:4 (``--iters`` swap iterations, default 100).
* ``table1``  -- the Table 1 analogue: mean relative layer error reduction and perplexity against the number of
  swap iterations (``--sweep``, default 0 1 2 5 10 25 50 100 200) at 50% and 60% per row, Wanda warm start.
* ``figure1`` -- the Figure 1 analogue: relative error reduction per block and projection of the 60% Wanda +
  SparseSwaps run, as ``figure1.png`` (if matplotlib is installed) and ``figure1.csv``.
* ``new``     -- beyond the paper, at ``unstructured:0.6``: Wanda (layer-wide ranking), + SparseSwaps with
  cross-row moves, + refit; SparseGPT with its own weight update; SparseGPT warm start + SparseSwaps + refit;
  and per-row 60% Wanda + SparseSwaps + refit.
* ``refit``   -- with a weight update at the deployment pattern 2:4 (and per row 60%): SparseGPT with its own
  update (its N:M baseline), Wanda / RIA / SparseGPT warm starts + SparseSwaps + refit.
* ``orders``  -- calibration order (issue 18): Wanda + SparseSwaps at 60% and 2:4 and Wanda + SparseSwaps + refit
  at 2:4, each in the ``level`` and ``block`` order, with calibration seeds ``--seeds`` (default 0 1 2): every row,
  then mean ± std over the seeds.
* ``rounds``  -- refinement that knows about the refit: Wanda + SparseSwaps + refit at 2:4 and 60%, swaps-then-refit
  (``refit_rounds`` 1) against 3 alternated rounds, over the same seeds.

Protocol: the model in float32 (``swappass.lm.models.load_model``); calibration on ``--nsamples`` random windows of
``--seqlen`` tokens of WikiText-2 *valid* (``swappass.lm.data.calibration_windows``, seed ``--seed``; Wanda's loader
rule); sequential calibration (the pass's default); evaluation on WikiText-2 raw *test*
(``swappass.lm.data.perplexity_windows``: rows joined with "\\n\\n", non-overlapping ``--eval-seqlen`` windows,
all of them unless ``--eval-windows``). TF32 is off (fp32 matmuls). The dense perplexity comes first.

Lease-friendly: the model is loaded once and every row prunes a deep copy of it; calibration windows, evaluation
windows and the dense perplexity are computed once per process (the dense one is also kept in the output
directory). Each finished row is appended at once to ``OUT/results.jsonl`` (summary) and ``OUT/sites.jsonl``
(per-site errors) and ``OUT/results.md`` is rewritten, so a timeout loses at most the row in flight; rerunning
the same command with the same ``--out`` skips the rows already there. ``--time-budget S`` stops before a row
that would likely end after ``S`` seconds (estimate: the slowest row so far). At most 5 files are written.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import swappass as sp  # noqa: E402
from swappass.lm import data, evaluate  # noqa: E402
from swappass.lm.models import load_model  # noqa: E402

SWEEP = (0, 1, 2, 5, 10, 25, 50, 100, 200)
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TABLES = ("table2", "table1", "figure1", "new", "refit", "orders", "rounds")


# ------------------------------------------------------------------------------------------------ rows
@dataclass(frozen=True)
class Spec:
    """One pruning run: the options of :func:`swappass.sparsify` (``max_iters`` only counts for swaps)."""

    pattern: str
    warm_start: str
    refine: str = "none"
    refit: str = "none"
    max_iters: int = 0
    order: str = "level"  # the calibration order (sparsify's ``sequential``)
    seed: int | None = None  # the calibration seed; None: --seed
    refit_rounds: int = 1

    def normalized(self) -> "Spec":
        refine, iters = self.refine, self.max_iters
        if refine == "swaps" and iters == 0:
            refine = "none"  # zero swap iterations is the warm start
        if refine != "swaps":
            iters = 0
        return Spec(self.pattern, self.warm_start, refine, self.refit, iters, self.order, self.seed,
                    self.refit_rounds)

    @property
    def key(self) -> str:
        s = self.normalized()
        key = f"{s.pattern}|{s.warm_start}|{s.refine}|{s.refit}|{s.max_iters}"
        # later fields only when not the default, so that earlier rows keep their keys
        return key + (f"|order={s.order}" if s.order != "level" else "") + (
            f"|seed={s.seed}" if s.seed is not None else "") + (
            f"|rounds={s.refit_rounds}" if s.refit_rounds != 1 else "")

    @property
    def config(self) -> str:
        """The row's method and pattern, without order and seed (what mean ± std groups by)."""
        s = self.normalized()
        return f"{s.pattern}|{s.warm_start}|{s.refine}|{s.refit}|{s.max_iters}|rounds={s.refit_rounds}"

    @property
    def label(self) -> str:
        s = self.normalized()
        name = {"wanda": "Wanda", "ria": "RIA", "magnitude": "Magnitude", "sparsegpt": "SparseGPT"}[s.warm_start]
        if s.refine == "dsnot":
            name += " + DSnoT"
        elif s.refine == "swaps":
            name += f" + SparseSwaps ({s.max_iters} it)"
        if s.refit == "lstsq":
            name += " + refit" + (f" ({s.refit_rounds} alternated rounds)" if s.refit_rounds > 1 else "")
        elif s.refit == "sparsegpt":
            name += " (own update)"
        if s.order != "level":
            name += f" [{s.order} order]"
        if s.seed is not None:
            name += f" [seed {s.seed}]"
        return name


def table2_specs(iters: int) -> list[Spec]:
    return [Spec(p, w, r, "none", iters if r == "swaps" else 0)
            for p in ("0.6", "2:4") for w in ("wanda", "ria") for r in ("none", "dsnot", "swaps")]


def table1_specs(sweep: list[int]) -> list[Spec]:
    return [Spec(p, "wanda", "swaps", "none", k) for p in ("0.5", "0.6") for k in sweep]


def figure1_spec(iters: int) -> Spec:
    return Spec("0.6", "wanda", "swaps", "none", iters)


def new_specs(iters: int) -> list[Spec]:
    u = "unstructured:0.6"
    return [
        Spec(u, "wanda"),
        Spec(u, "wanda", "swaps", "none", iters),
        Spec(u, "wanda", "swaps", "lstsq", iters),
        Spec(u, "sparsegpt", "none", "sparsegpt"),
        Spec(u, "sparsegpt", "swaps", "lstsq", iters),
        Spec("0.6", "wanda", "swaps", "lstsq", iters),
    ]


def refit_specs(iters: int) -> list[Spec]:
    return [
        Spec("2:4", "sparsegpt", "none", "sparsegpt"),
        Spec("2:4", "wanda", "swaps", "lstsq", iters),
        Spec("2:4", "ria", "swaps", "lstsq", iters),
        Spec("2:4", "sparsegpt", "swaps", "lstsq", iters),
        Spec("0.6", "ria", "swaps", "lstsq", iters),
    ]


def _seeded(spec: Spec, seed: int, default_seed: int) -> Spec:
    """``spec`` at calibration seed ``seed`` (the --seed one keeps the plain key, so earlier rows are reused)."""
    return Spec(spec.pattern, spec.warm_start, spec.refine, spec.refit, spec.max_iters, spec.order,
                None if seed == default_seed else seed, spec.refit_rounds)


def order_specs(iters: int, seeds: list[int], default_seed: int) -> list[Spec]:
    configs = [("0.6", "none"), ("2:4", "none"), ("2:4", "lstsq")]
    return [_seeded(Spec(p, "wanda", "swaps", r, iters, order), seed, default_seed)
            for p, r in configs for order in ("level", "block") for seed in seeds]


def rounds_specs(iters: int, seeds: list[int], default_seed: int) -> list[Spec]:
    return [_seeded(Spec(p, "wanda", "swaps", "lstsq", iters, refit_rounds=k), seed, default_seed)
            for p in ("2:4", "0.6") for k in (1, 3) for seed in seeds]


def table_specs(table: str, args: argparse.Namespace) -> list[Spec]:
    """The rows of one table (subcommand), in their order."""
    return {
        "table2": lambda: table2_specs(args.iters),
        "table1": lambda: table1_specs(args.sweep),
        "figure1": lambda: [figure1_spec(args.iters)],
        "new": lambda: new_specs(args.iters),
        "refit": lambda: refit_specs(args.iters),
        "orders": lambda: order_specs(args.iters, args.seeds, args.seed),
        "rounds": lambda: rounds_specs(args.iters, args.seeds, args.seed),
    }[table]()


# ------------------------------------------------------------------------------------------------ summaries
def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def summarize(report: sp.SparsifyReport) -> dict:
    """Layer-level numbers of one run: mean relative reductions, total errors, swaps, moves, sparsity."""
    rows = report.pruned
    refined = [r for r in rows if r.refine not in (None, "none")]
    kept = sum((1 - r.sparsity) * r.shape[0] * r.shape[1] for r in rows)
    total = sum(r.shape[0] * r.shape[1] for r in rows)
    return {
        "sites": len(rows),
        "sites_refined": len(refined),
        "mean_rel_reduction": _mean([r.relative_reduction for r in rows]),
        "mean_rel_reduction_refined_sites": _mean([r.relative_reduction for r in refined]),
        "mean_rel_reduction_with_refit": _mean([r.relative_reduction_refit for r in rows]),
        "sites_error_increased": sum(r.loss_final > r.loss_warm * (1 + 1e-6) for r in rows),
        "loss_warm_total": sum(r.loss_warm for r in rows),
        "loss_final_total": sum(r.loss_final for r in rows),
        "loss_refit_total": sum(r.loss_refit for r in rows) if rows and rows[0].refit not in (None, "none") else None,
        "swaps": sum(r.swaps for r in rows),
        "cross_moves": sum(r.cross_moves for r in rows),
        "sparsity": 1 - kept / total if total else None,
        "prune_compute_seconds": sum(r.seconds for r in rows),
    }


def site_rows(report: sp.SparsifyReport) -> list[dict]:
    keep = ("name", "shape", "level", "refine", "refit", "loss_warm", "loss_final", "loss_refit", "swaps",
            "cross_moves", "iters", "seconds", "reason")
    return [{k: v for k, v in r.to_dict().items() if k in keep} for r in report.pruned]


# ------------------------------------------------------------------------------------------------ the bench
class Bench:
    """Holds the dense model, the data, the results of this output directory; runs rows on demand."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.t0 = time.perf_counter()
        self.slowest = 0.0
        self.stopped = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.manual_seed(0)
        t = time.perf_counter()
        self.model, self.tokenizer = load_model(args.model, dtype=torch.float32, device=args.device)
        self.calibs = {args.seed: data.calibration_windows(self.tokenizer, nsamples=args.nsamples,
                                                           seqlen=args.seqlen, seed=args.seed)}
        self.windows = data.perplexity_windows(self.tokenizer, seqlen=args.eval_seqlen, max_windows=args.eval_windows)
        self.protocol = self._protocol(time.perf_counter() - t)
        blocks = args.blocks
        self.targets = None if blocks is None else [rf"re:.*\.layers\.({'|'.join(map(str, range(blocks)))})\."]
        self.results = self._load_results()
        self.dense = self._dense()

    def _protocol(self, load_seconds: float) -> dict:
        a = self.args
        cuda = a.device.startswith("cuda")
        return {
            "model": a.model, "dtype": "float32", "device": torch.cuda.get_device_name() if cuda else platform.processor()
            or "cpu", "torch": torch.__version__, "quick": a.quick,
            "calibration": f"WikiText-2 valid, {a.nsamples} random windows x {a.seqlen} tokens (seed {a.seed})",
            "nsamples": a.nsamples, "seqlen": a.seqlen, "seed": a.seed, "batch_size": a.batch_size,
            "evaluation": f"WikiText-2 raw test, {len(self.windows)} windows x {a.eval_seqlen} tokens",
            "eval_windows": len(self.windows), "eval_seqlen": a.eval_seqlen, "backend": a.backend,
            "sequential": "per row (see its order)", "load_seconds": round(load_seconds, 1),
            "blocks": "all decoder blocks" if a.blocks is None else f"the first {a.blocks} decoder blocks only",
        }

    def fingerprint(self) -> dict:
        keys = ("model", "nsamples", "seqlen", "seed", "eval_windows", "eval_seqlen", "quick", "blocks")
        return {k: self.protocol[k] for k in keys} | {"device_type": self.args.device.split(":")[0]}

    def _load_results(self) -> dict[str, dict]:
        path = self.out / "results.jsonl"
        if not path.exists():
            return {}
        found = {}
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("fingerprint") == self.fingerprint():
                found[rec["key"]] = rec
        if found:
            print(f"reusing {len(found)} rows from {path}")
        return found

    # -------------------------------------------------------------------------------- running rows
    def _dense(self) -> dict:
        if "dense" in self.results:
            return self.results["dense"]
        t = time.perf_counter()
        ppl = evaluate.perplexity(self.model, self.windows, batch_size=self.args.eval_batch, progress=False)
        rec = {"key": "dense", "label": "Dense", "ppl": ppl, "eval_seconds": time.perf_counter() - t}
        self._save(rec, None)
        return rec

    def run(self, spec: Spec, tables: str) -> dict | None:
        """The row of ``spec`` (run now, or reused); None once the time budget is spent."""
        if spec.key in self.results:
            return self.results[spec.key]
        if self.stopped or self._over_budget():
            self.stopped = True
            return None
        s = spec.normalized()
        t = time.perf_counter()
        model = copy.deepcopy(self.model)
        model, report = sp.sparsify(
            model, self.calib(s.seed), pattern=s.pattern, warm_start=s.warm_start, refine=s.refine,
            refit=False if s.refit == "none" else s.refit, max_iters=s.max_iters, backend=self.args.backend,
            batch_size=self.args.batch_size, targets=self.targets, progress=False, sequential=s.order,
            refit_rounds=s.refit_rounds,
        )
        t_eval = time.perf_counter()
        ppl = evaluate.perplexity(model, self.windows, batch_size=self.args.eval_batch, progress=False)
        del model
        done = time.perf_counter()
        rec = {"key": spec.key, "label": spec.label, "config": spec.config, "tables": tables, **asdict(s),
               "calibration_seed": self.args.seed if s.seed is None else s.seed, "ppl": ppl,
               **summarize(report), "pass_seconds": t_eval - t, "eval_seconds": done - t_eval,
               "row_seconds": done - t, "backend_used": report.settings.get("backend"),
               "device": self.protocol["device"], "torch": self.protocol["torch"]}
        self.slowest = max(self.slowest, done - t)
        self._save(rec, report)
        print(f"  {spec.label:48s} {s.pattern:17s} ppl {ppl:9.3f}  reduction "
              f"{_pct(rec['mean_rel_reduction'])}  {done - t:6.1f} s", flush=True)
        return rec

    def calib(self, seed: int | None) -> list[torch.Tensor]:
        """The calibration windows of ``seed`` (None: --seed), drawn once per process."""
        seed = self.args.seed if seed is None else seed
        if seed not in self.calibs:
            self.calibs[seed] = data.calibration_windows(self.tokenizer, nsamples=self.args.nsamples,
                                                         seqlen=self.args.seqlen, seed=seed)
        return self.calibs[seed]

    def _over_budget(self) -> bool:
        budget = self.args.time_budget
        if budget is None:
            return False
        elapsed = time.perf_counter() - self.t0
        if elapsed + self.slowest > budget:
            print(f"time budget: {elapsed:.0f} s used, the next row may take {self.slowest:.0f} s more than the "
                  f"{budget:.0f} s allowed; stopping (rerun with the same --out to continue)", flush=True)
            return True
        return False

    def _save(self, rec: dict, report: sp.SparsifyReport | None) -> None:
        rec["fingerprint"] = self.fingerprint()
        self.results[rec["key"]] = rec
        with open(self.out / "results.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        if report is not None:
            with open(self.out / "sites.jsonl", "a") as f:
                f.write(json.dumps({"key": rec["key"], "fingerprint": rec["fingerprint"],
                                    "sites": site_rows(report)}) + "\n")
        (self.out / "results.md").write_text(self.markdown())

    # -------------------------------------------------------------------------------- output
    def markdown(self) -> str:
        p = self.protocol
        lines = [f"# swappass quality benchmark{' (QUICK MODE: tiny sizes, not results)' if p['quick'] else ''}", "",
                 f"Model {p['model']} ({p['dtype']}) on {p['device']}, torch {p['torch']}, backend {p['backend']}.",
                 f"Calibration: {p['calibration']}, sequential. Evaluation: {p['evaluation']}. "
                 f"Pruned: every Linear of {p['blocks']} (lm_head and embeddings never).", "",
                 f"Dense perplexity: {self.dense['ppl']:.3f}" if hasattr(self, "dense") else "", ""]
        machines = {r.get("device") for r in self.results.values() if r["key"] != "dense"}
        if len(machines) > 1:
            lines += ["Rows come from more than one machine: see the machine column (the dense perplexity, the "
                      f"header's machine and the settings are this process's, {p['device']}).", ""]
        for title, specs in self.sections():
            recs = [self.results.get(s.key) for s in specs]
            if not any(recs):
                continue
            head = "| method | pattern | ppl | mean rel. error reduction | on refined sites | with refit | " \
                   "error up (sites) | swaps | cross moves | pass s | eval s |"
            lines += [f"## {title}", "", head + (" machine |" if len(machines) > 1 else ""),
                      "|---" * (11 + (len(machines) > 1)) + "|"]
            for s, r in zip(specs, recs):
                lines.append(_md_row(s, r, machine=len(machines) > 1))
            lines.append("")
            if title.startswith(("(f)", "(g)")):
                lines += seed_summary(specs, recs)
        if (self.out / "figure1.png").exists() or (self.out / "figure1.csv").exists():
            lines += ["## (c) Figure 1 analogue", "", "Per-block, per-projection relative error reduction of the 60% "
                      "Wanda + SparseSwaps run: figure1.png, figure1.csv.", ""]
        return "\n".join(lines)

    def sections(self) -> list[tuple[str, list[Spec]]]:
        titles = {"table2": "(a) Table 2 analogue", "table1": "(b) Table 1 analogue: swap iterations (Wanda warm start)",
                  "new": "(d) Beyond the paper", "refit": "(e) With a weight update: 2:4 and per row",
                  "orders": "(f) Calibration order: level vs block, over calibration seeds",
                  "rounds": "(g) Refinement that knows about the refit: alternated rounds, over calibration seeds"}
        return [(title, table_specs(table, self.args)) for table, title in titles.items()]


def seed_summary(specs: list[Spec], recs: list[dict | None]) -> list[str]:
    """Mean ± sample std over the calibration seeds of each (method, pattern, order): perplexity and the mean
    relative layer error reduction (with refit: of the refitted weights)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for s, r in zip(specs, recs):
        if r is not None:
            groups.setdefault((s.config, s.order), []).append(r)
    lines = ["| method | pattern | order | seeds | ppl mean ± std | mean rel. error reduction ± std |",
             "|---|---|---|---|---|---|"]
    for (config, order), rows in groups.items():
        ppl = [r["ppl"] for r in rows]
        red = [r["mean_rel_reduction_with_refit"] if r.get("mean_rel_reduction_with_refit") is not None
               else r["mean_rel_reduction"] for r in rows]
        label = rows[0]["label"].split(" [")[0]
        lines.append(f"| {label} | {rows[0]['pattern']} | {order} | {len(rows)} | {_mean_std(ppl, 3)} | "
                     f"{_mean_std([100 * v for v in red], 2)}% |")
    return lines + [""]


def _mean_std(values: list[float], digits: int) -> str:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else float("nan")
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _md_row(spec: Spec, r: dict | None, machine: bool = False) -> str:
    """One table row; ``machine`` adds the machine the row ran on (``?`` for rows recorded without it)."""
    if r is None:
        return f"| {spec.label} | {spec.pattern} | not run |" + " |" * (8 + machine)
    refined = f"{_pct(r['mean_rel_reduction_refined_sites'])} ({r['sites_refined']})" if r["sites_refined"] else "-"
    return (f"| {r['label']} | {r['pattern']} | {r['ppl']:.3f} | {_pct(r['mean_rel_reduction'])} | {refined} | "
            f"{_pct(r['mean_rel_reduction_with_refit'])} | {r['sites_error_increased']} | {r['swaps']} | "
            f"{r['cross_moves']} | {r['pass_seconds']:.1f} | {r['eval_seconds']:.1f} |"
            + (f" {r.get('device', '?')} |" if machine else ""))


# ------------------------------------------------------------------------------------------------ figure 1
def figure1_matrix(out: Path, spec: Spec, fingerprint: dict | None) -> dict[str, list[float | None]] | None:
    """Relative error reduction per projection and block of ``spec``'s run, from ``out/sites.jsonl`` (the last
    record of that run; with ``fingerprint``, the last one of that protocol)."""
    path = out / "sites.jsonl"
    sites = None
    for line in path.read_text().splitlines() if path.exists() else []:
        rec = json.loads(line)
        if rec["key"] == spec.key and fingerprint in (None, rec["fingerprint"]):
            sites = rec["sites"]
    if sites is None:
        return None
    blocks = 1 + max(int(s["name"].split(".layers.")[1].split(".")[0]) for s in sites)
    matrix: dict[str, list[float | None]] = {p: [None] * blocks for p in PROJECTIONS}
    for s in sites:
        block, proj = int(s["name"].split(".layers.")[1].split(".")[0]), s["name"].rsplit(".", 1)[1]
        if proj in matrix and s["loss_warm"]:
            matrix[proj][block] = (s["loss_warm"] - s["loss_final"]) / s["loss_warm"]
    return matrix


def write_figure1(out: Path, spec: Spec, fingerprint: dict | None, title: str) -> None:
    matrix = figure1_matrix(out, spec, fingerprint)
    if matrix is None:
        print(f"figure1: no run {spec.key} in {out / 'sites.jsonl'} (time budget?)")
        return
    blocks = len(next(iter(matrix.values())))
    csv = ["block," + ",".join(PROJECTIONS)]
    csv += [f"{b}," + ",".join("" if matrix[p][b] is None else f"{matrix[p][b]:.6f}" for p in PROJECTIONS)
            for b in range(blocks)]
    (out / "figure1.csv").write_text("\n".join(csv) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("figure1: matplotlib is not installed; wrote figure1.csv only (plot it elsewhere with --plot-only)")
        return
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for p in PROJECTIONS:
        ax.plot(range(blocks), [100 * v if v is not None else float("nan") for v in matrix[p]], marker="o",
                markersize=3, label=p)
    ax.set_xlabel("decoder block")
    ax.set_ylabel("relative layer error reduction (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "figure1.png", dpi=130)
    plt.close(fig)
    print(f"figure1: wrote {out / 'figure1.png'} and figure1.csv")


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tables", nargs="+", choices=TABLES, help="what to run (rows shared between tables run once)")
    ap.add_argument("--out", required=True, help="output directory (results.jsonl, sites.jsonl, results.md, figure1.*)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="smollm2-135m", help="alias, HF directory or .gguf file (swappass.lm.models)")
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-seqlen", type=int, default=2048)
    ap.add_argument("--eval-windows", type=int, default=None, help="default: all windows of the test file")
    ap.add_argument("--eval-batch", type=int, default=None, help="windows per forward (default 4 on cuda, 1 on cpu)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="calibration sequences per forward (default 8 on cuda, 1 on cpu)")
    ap.add_argument("--iters", type=int, default=100, help="swap iterations of tables (a), (c), (d), (e)")
    ap.add_argument("--sweep", type=int, nargs="+", default=list(SWEEP), help="iterations of table (b)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="calibration seeds of tables (f), (g)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--blocks", type=int, default=None,
                    help="prune only the first N decoder blocks (default: all; --quick: 2)")
    ap.add_argument("--time-budget", type=float, default=None, help="seconds; stop before a row likely to overrun")
    ap.add_argument("--plot-only", action="store_true",
                    help="figure1 only: plot from OUT/sites.jsonl without loading the model (e.g. on another machine)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes to check the script end to end: 4 x 128 calibration tokens, 4 x 256 evaluation "
                         "tokens, 2 swap iterations, sweep 0 1 2, the first 2 blocks pruned (explicit flags win)")
    args = ap.parse_args(argv)
    cuda = args.device.startswith("cuda")
    given = set(a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:]) if a.startswith("--"))
    if args.quick:
        for flag, value in (("nsamples", 4), ("seqlen", 128), ("eval_seqlen", 256), ("eval_windows", 4),
                            ("iters", 2), ("sweep", [0, 1, 2]), ("blocks", 2)):
            if "--" + flag.replace("_", "-") not in given:
                setattr(args, flag, value)
    args.batch_size = args.batch_size or (8 if cuda else 1)
    args.eval_batch = args.eval_batch or (4 if cuda else 1)
    return args


def figure1_title(model: str, iters: int, quick: bool) -> str:
    return f"{model}: SparseSwaps ({iters} it) over Wanda, 60% per row{' [QUICK MODE]' if quick else ''}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.plot_only:
        write_figure1(Path(args.out), figure1_spec(args.iters), None, figure1_title(args.model, args.iters, args.quick))
        return
    bench = Bench(args)
    p = bench.protocol
    print(f"{p['model']} on {p['device']}; calibration: {p['calibration']}; evaluation: {p['evaluation']}; "
          f"dense ppl {bench.dense['ppl']:.3f}", flush=True)
    for table in args.tables:
        print(f"[{table}]", flush=True)
        for spec in table_specs(table, args):
            bench.run(spec, table)
        if table == "figure1":
            write_figure1(bench.out, figure1_spec(args.iters), bench.fingerprint(),
                          figure1_title(args.model, args.iters, args.quick))
    (bench.out / "results.md").write_text(bench.markdown())
    print()
    print(bench.markdown())
    print(f"\ntotal {time.perf_counter() - bench.t0:.0f} s; results in {bench.out}")


if __name__ == "__main__":
    main()
