"""The conformance zoo: a tiny random model of every architecture family through the whole pass.

For each family of ``tools/zoo_families.py`` (2 layers, small widths, the family's own features) it runs

1. **capture**: ``swappass.capture`` (torch.export, non-strict) on one calibration item;
2. **sites**: the Linear sites found in the graph, checked against an independent count from the module tree
   (every ``nn.Linear`` / ``Conv1D`` module, every other module's 2-D weight matrix, and one site per expert of
   every 3-D expert parameter);
3. **0.6** and **2:4**: ``swappass.sparsify`` on three calibration items; every pruned site holds its pattern
   exactly, its final error is at most its warm start's, its stored weights are zero where its mask prunes, no
   selected site is left unpruned, and the pruned model's outputs are finite;
4. **ONNX**: ``swappass.export_onnx`` of the 2:4 model with its masks, verified with onnxruntime (two input
   shapes) and the sparsity audit.

    python tools/zoo.py                          # every family, the table on stdout
    python tools/zoo.py --families Llama,Mixtral # some
    python tools/zoo.py --write-docs             # regenerate docs/ARCHITECTURES.md
    python tools/zoo.py --no-onnx --json out.json

``tests/test_zoo.py`` runs the families marked fast in CI and the rest with ``pytest --zoo``.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import swappass as sp  # noqa: E402
from swappass.core.masks import weight_key  # noqa: E402
from swappass.core.patterns import parse_pattern  # noqa: E402
from swappass.graph import find_sites  # noqa: E402
from zoo_families import FAMILIES, Family  # noqa: E402

STAGES = ("capture", "sites", "0.6", "2:4", "onnx")
DOC = REPO / "docs" / "ARCHITECTURES.md"
ITERS = 20
CALIB_ITEMS = 3


@dataclass
class StageResult:
    """One stage of one family: passed or not, what it found, and for a failure what the user can do."""

    ok: bool | None  # None: not run (an earlier stage failed)
    detail: str = ""
    remedy: str = ""


@dataclass
class FamilyResult:
    family: str
    model_class: str
    features: str
    stages: dict[str, StageResult] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(r.ok for r in self.stages.values())


class StageFailure(Exception):
    """A zoo check failed; ``remedy`` says what the user can do."""

    def __init__(self, message: str, remedy: str = "") -> None:
        super().__init__(message)
        self.remedy = remedy


# ------------------------------------------------------------------------------------------------ site count
def independent_sites(model: nn.Module, unused: dict[str, str]) -> dict[tuple[int, int | None], str]:
    """(id of the parameter, expert index or None) -> name, from the module tree alone (no graph): every
    ``nn.Linear`` / ``Conv1D`` weight, every other 2-D weight matrix that is not an embedding table, and one entry
    per expert of every 3-D parameter of a module with ``num_experts``. ``unused``: parameter names to leave out."""
    out: dict[tuple[int, int | None], str] = {}
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            continue
        for p_name, p in module.named_parameters(recurse=False):
            full = prefix + p_name
            if full in unused or not p.is_floating_point():
                continue
            if p.dim() == 2 and "embed" not in p_name and "position" not in p_name:
                out.setdefault((id(p), None), full)
            elif p.dim() == 3 and hasattr(module, "num_experts"):
                for e in range(p.shape[0]):
                    out.setdefault((id(p), e), weight_key(full, e))
    return out


def check_sites(family: Family, model: nn.Module, captured) -> str:
    found = find_sites(captured)
    graph = {(id(s.weight), s.expert): s.name for s in found}
    tree = independent_sites(model, family.unused)
    missing = sorted(tree[k] for k in tree.keys() - graph.keys())
    extra = sorted(graph[k] for k in graph.keys() - tree.keys())
    if missing or extra:
        raise StageFailure(
            f"graph sites differ from the module tree: not in the graph {missing[:4]}, not in the tree {extra[:4]}",
            "report it: a Linear computation the graph does not show is left dense")
    experts = sum(s.expert is not None for s in found)
    roles: dict[str, int] = {}
    for s in found:
        if s.role:
            roles[s.role] = roles.get(s.role, 0) + 1
    parts = [f"{experts} expert"] if experts else []
    parts += [f"{n} {role}" for role, n in roles.items()]
    skipped = [s for s in found if s.status == "skipped"]
    if skipped:
        parts.append(f"{len(skipped)} skipped: {skipped[0].name}, applied in slices" if "slices" in skipped[0].reason
                     else f"{len(skipped)} skipped: {skipped[0].name}")
    return f"{len(found)}" + (f" ({'; '.join(parts)})" if parts else "")


# ------------------------------------------------------------------------------------------------ sparsify
def check_sparsify(family: Family, pattern: str, items: list) -> tuple[str, nn.Module, object]:
    model = family.build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, report = sp.sparsify(model, items, pattern=pattern, max_iters=ITERS, targets=family.targets,
                                progress=False)
    params = dict(model.named_parameters())
    pat = parse_pattern(pattern)
    pending = [r.name for r in report.rows if r.status == "pending"]
    if pending:
        raise StageFailure(f"selected but not pruned: {pending[:4]}", "report it")
    if not report.pruned:
        raise StageFailure("no site was pruned", "check --targets / --ignore")
    for row in report.pruned:
        mask = row.mask()
        user = mask.T if row.transposed else mask
        pat.check_mask(user, where=row.name)
        stored = params[row.param].detach()
        stored = stored[row.expert] if row.expert is not None else stored
        if torch.count_nonzero(stored[~mask]):
            raise StageFailure(f"{row.name}: non-zero weights where the mask prunes", "report it")
        if not row.loss_final <= row.loss_warm * (1 + 1e-6) + 1e-12:
            raise StageFailure(f"{row.name}: final error {row.loss_final:.4g} above the warm start's "
                               f"{row.loss_warm:.4g}", "report it")
    quiet = [r.name for r in report.ignored + report.skipped if not r.reason]
    if quiet:
        raise StageFailure(f"left dense without a reason: {quiet[:4]}", "report it")
    with torch.no_grad():
        out = model(**family.inputs(model, seed=99))
    tensors = [v for v in (out.values() if isinstance(out, dict) else [out]) if isinstance(v, torch.Tensor)]
    if not tensors or not all(torch.isfinite(t).all() for t in tensors):
        raise StageFailure("the pruned model's outputs are not finite", "report it")
    mean = report.mean_relative_reduction
    detail = f"{len(report.pruned)} pruned, −{100 * mean:.0f}%" if not math.isnan(mean) else f"{len(report.pruned)}"
    return detail, model, report


def check_onnx(family: Family, model: nn.Module, report, directory: Path) -> str:
    example = family.inputs(model, seed=7, batch=2)
    second = family.inputs(model, seed=8, batch=3, seq=15)  # another batch and length, valid for the family
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = sp.export_onnx(model, example, directory / "model.onnx", masks=report.pruned_weights(),
                                verify_inputs=second, verbose=False)
    if not result.passed:
        raise StageFailure("; ".join(result.failures())[:300], "report it")
    checks = sum(1 for c in result.checks if c.passed)
    folded = [e.key for e in result.audit.entries if e.status == "folded"]
    notes = [f"{len(folded)} pruned weights folded into constants by the exporter ({', '.join(folded[:2])} …)"
             ] if folded else []
    notes += result.notes
    return f"{result.audit.summary().split(' pruned')[0]} audited, {checks} output checks" + (
        f"; {'; '.join(notes)}" if notes else "")


# ------------------------------------------------------------------------------------------------ run
def _failure(exc: BaseException) -> StageResult:
    text = " ".join(str(exc).split())
    remedy = getattr(exc, "remedy", "")
    return StageResult(False, f"{type(exc).__name__}: {text[:400]}", remedy)


def run_family(family: Family, onnx: bool = True) -> FamilyResult:
    """All stages of one family; a failed stage stops the ones that need it."""
    t0 = time.perf_counter()
    result = FamilyResult(family.name, family.model_class, family.features)
    stages = result.stages
    try:
        model = family.build()
        items = [family.inputs(model, seed=s) for s in range(CALIB_ITEMS)]
        captured = sp.capture(model, items[0])
        stages["capture"] = StageResult(True, captured.method)
    except Exception as exc:  # every failure becomes the family's row
        stages["capture"] = _failure(exc)
        return _finish(result, t0)
    for name, run in (("sites", lambda: check_sites(family, model, captured)),):
        try:
            stages[name] = StageResult(True, run())
        except Exception as exc:
            stages[name] = _failure(exc)
    pruned = None
    for pattern in ("0.6", "2:4"):
        try:
            detail, m, report = check_sparsify(family, pattern, items)
            stages[pattern] = StageResult(True, detail)
            pruned = (m, report) if pattern == "2:4" else pruned
        except Exception as exc:
            stages[pattern] = _failure(exc)
    if not onnx:
        stages["onnx"] = StageResult(None, "not run")
    elif pruned is None:
        stages["onnx"] = StageResult(None, "no pruned model")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                stages["onnx"] = StageResult(True, check_onnx(family, *pruned, Path(tmp)))
            except Exception as exc:
                stages["onnx"] = _failure(exc)
    return _finish(result, t0)


def _finish(result: FamilyResult, t0: float) -> FamilyResult:
    for stage in STAGES:
        result.stages.setdefault(stage, StageResult(None, "not run"))
    result.seconds = time.perf_counter() - t0
    return result


# ------------------------------------------------------------------------------------------------ output
def _cell(r: StageResult) -> str:
    return "✅" if r.ok else ("✗" if r.ok is False else "–")


def table(results: list[FamilyResult]) -> str:
    head = ["family", "class", "capture", "sites", "0.6", "2:4", "ONNX"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        s = r.stages
        lines.append(f"| {r.family} | `{r.model_class}` | {_cell(s['capture'])} | {_cell(s['sites'])} "
                     f"{s['sites'].detail if s['sites'].ok else ''} | {_cell(s['0.6'])} | {_cell(s['2:4'])} "
                     f"{s['2:4'].detail if s['2:4'].ok else ''} | {_cell(s['onnx'])} |")
    return "\n".join(lines)


def failures(results: list[FamilyResult]) -> list[str]:
    out = []
    for r in results:
        for stage, s in r.stages.items():
            if s.ok is False:
                out.append(f"* **{r.family}**, {stage}: {s.detail}" + (f" — what to do: {s.remedy}" if s.remedy else ""))
    return out


def document(results: list[FamilyResult], seconds: float) -> str:
    import transformers

    bad = failures(results)
    lines = [
        "# Architectures",
        "",
        "Generated by `python tools/zoo.py --write-docs` (do not edit by hand): a tiny randomly initialised model "
        "of each family, built from its transformers config (2 layers, hidden 32, FFN 64, 4 heads, with the "
        "family's own features), through every stage of the pass. `tests/test_zoo.py` runs the same checks "
        "(`pytest --zoo` for all families; CI runs the ones marked fast).",
        "",
        "* **capture**: `swappass.capture` (torch.export, non-strict) of one calibration item;",
        "* **sites**: the Linear sites of the graph equal an independent count from the module tree (every "
        "`nn.Linear` / `Conv1D`, every other 2-D weight matrix, one site per expert of each 3-D expert "
        "parameter); the cell gives the count (expert sites, and sites dense by default: MoE routers and "
        "shared-expert gates, a vision-language model's vision tower and projector);",
        "* **0.6**, **2:4**: `swappass.sparsify` (Wanda warm start, "
        f"{ITERS} swap iterations, {CALIB_ITEMS} calibration items): every pruned site holds the pattern exactly, its "
        "final error is at most its warm start's, its weights are zero where its mask prunes, no selected site is "
        "left unpruned and every dense site says why, and the pruned model's outputs are finite; the cell gives the "
        "pruned sites and the mean relative error reduction;",
        "* **ONNX**: `swappass.export_onnx` of the 2:4 model, verified with onnxruntime at two input shapes and by "
        "the sparsity audit of every pruned weight in the file.",
        "",
        f"Run: {time.strftime('%Y-%m-%d')}, transformers {transformers.__version__}, torch {torch.__version__}, "
        f"{platform.machine()} CPU, {seconds:.0f} s for {len(results)} families.",
        "",
        table(results),
        "",
        "## What each family keeps of its architecture",
        "",
        "| family | inputs | features |",
        "|---|---|---|",
    ]
    for r in results:
        fam = FAMILIES[r.family]
        lines.append(f"| {r.family} | {fam.kind} | {fam.features} |")
    lines += ["", "## Notes", ""]
    notes = [f"* **{r.family}**, sites: {r.stages['sites'].detail}" for r in results
             if r.stages["sites"].ok and "skipped" in r.stages["sites"].detail]
    notes += [f"* **{r.family}**, ONNX: {r.stages['onnx'].detail}" for r in results
              if r.stages["onnx"].ok and ";" in r.stages["onnx"].detail]
    lines += notes or ["None."]
    lines += ["", "## Failures", ""]
    lines += bad or ["None: every family prunes and exports."]
    lines += [
        "",
        "## Inputs the command line builds",
        "",
        "`swappass prune` calibrates from text. It builds `input_ids` for decoders and encoders, `input_ids` + "
        "`decoder_input_ids` (the text shifted right by the decoder start token) for encoder-decoders, and text-only "
        "`input_ids` for vision-language models (their language model's sites are the default targets). It does "
        "not build `input_features` (speech: Whisper) or `pixel_values` (vision: ViT, a vision-language model's "
        "vision tower) and says so; prune those from Python, where calibration items may be dicts of tensors: "
        "`swappass.sparsify(model, [{\"input_features\": …, \"decoder_input_ids\": …}, …])`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", help="comma-separated family names (default: all)")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX stage")
    parser.add_argument("--write-docs", action="store_true", help=f"write {DOC.relative_to(REPO)}")
    parser.add_argument("--json", type=Path, help="write the results as JSON")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.families.split(",")] if args.families else list(FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    results = []
    for name in names:
        res = run_family(FAMILIES[name], onnx=not args.no_onnx)
        print(f"{name}: {'ok' if res.passed else 'FAILED'} ({res.seconds:.1f} s)", file=sys.stderr, flush=True)
        results.append(res)
    seconds = time.perf_counter() - t0
    print(table(results))
    for line in failures(results):
        print(line)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2, ensure_ascii=False) + "\n")
    if args.write_docs:
        DOC.write_text(document(results, seconds))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        sys.exit(2)
