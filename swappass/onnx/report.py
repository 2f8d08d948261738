"""What :func:`swappass.export_onnx` wrote and how it verified: :class:`ExportReport`."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .audit import SparsityAudit
from .cache_verify import TokenCheck
from .verify import OutputCheck

__all__ = ["ExportReport", "megabytes", "describe_values"]


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how it verified. ``passed``: every check and the audit passed."""

    path: Path
    file_bytes: int
    opset: int
    inputs: dict[str, list]
    outputs: dict[str, list]
    external_data: Path | None = None
    dense_bytes: int | None = None  # file size without compaction, when compact=True
    compacted: list[str] = field(default_factory=list)
    checks: list[OutputCheck] = field(default_factory=list)
    audit: SparsityAudit | None = None
    verified: bool = True
    rtol: float = 0.0
    atol: float = 0.0
    notes: list[str] = field(default_factory=list)
    export_seconds: float = 0.0
    verify_seconds: float = 0.0
    kv_cache: bool = False  # a decoder with past_key_values / present (swappass.onnx.cache_adapter)
    exporter: str = "torch.onnx"  # or "onnxruntime-genai <version> model builder"
    runtime_config: Path | None = None  # genai_config.json beside the file (KV-cache decoders)
    token_checks: list[TokenCheck] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return (all(c.passed for c in self.checks) and all(t.passed for t in self.token_checks)
                and (self.audit is None or self.audit.passed))

    def failures(self) -> list[str]:
        """One line per failed check: which output on which inputs and by how much, or which weight and why."""
        out = []
        for c in self.checks:
            if not c.passed:
                what = c.note or (f"max |onnxruntime − PyTorch| = {c.max_abs:.3g} > tolerance {c.tolerance:.3g} "
                                  f"(relative {c.max_rel:.3g})")
                out.append(f"output {c.output!r} on {c.inputs} inputs: {what}")
        for t in self.token_checks:
            if not t.passed:
                out.append(f"greedy tokens of {t.runtime} on the {t.inputs}: {t.matched}/{t.tokens} identical to "
                           f"PyTorch's" + (f" ({t.note})" if t.note else ""))
        if self.audit is not None:
            for e in self.audit.failures:
                out.append(f"weight {e.parameter} ({e.initializer or 'not located'}): " + "; ".join(e.problems))
        return out

    def __str__(self) -> str:
        status = "PASSED" if self.passed else "FAILED"
        if not self.verified:
            status = "written, not verified"
        kind = ", KV-cache decoder" if self.kv_cache else ""
        lines = [f"swappass ONNX export: {self.path} ({megabytes(self.file_bytes)}, opset {self.opset}{kind}) — {status}"]
        lines.append(f"  exporter: {self.exporter}" + (f"; onnxruntime-genai config {self.runtime_config.name}"
                                                       if self.runtime_config else ""))
        lines.append("  inputs : " + describe_values(self.inputs))
        lines.append("  outputs: " + describe_values(self.outputs))
        if self.external_data is not None:
            lines.append(f"  weights: in the external data file {self.external_data.name}")
        if self.checks:
            lines.append(f"  onnxruntime vs PyTorch (pass: max|Δ| ≤ {self.atol:g} + {self.rtol:g}·max|PyTorch|):")
            lines.append(f"    {'inputs':<16} {'output':<24} {'max|Δ|':>9} {'relative':>9} {'top-1':>7}  result")
            for c in self.checks:
                top1 = f"{100 * c.top1:6.1f}%" if c.top1 is not None else "      -"
                result = "ok" if c.passed else "FAIL" + (f" ({c.note})" if c.note else f" > {c.tolerance:.2g}")
                lines.append(f"    {c.inputs:<16} {c.output:<24} {c.max_abs:9.2e} {c.max_rel:9.2e} {top1}  {result}")
        for t in self.token_checks:
            result = "ok" if t.passed else "FAIL"
            lines.append(f"  greedy tokens, {t.runtime} vs PyTorch ({t.inputs}): {t.matched}/{t.tokens} identical — "
                         f"{result}" + (f" ({t.note})" if t.note else ""))
        if self.audit is not None:
            pruned = [e for e in self.audit.entries if e.sparsity is not None]
            mean = sum(e.sparsity for e in pruned) / len(pruned) if pruned else 0.0
            patterns = ", ".join(sorted({e.pattern for e in self.audit.entries}))
            lines.append(f"  sparsity audit: {self.audit.summary()} (pattern {patterns}, "
                         f"mean sparsity {100 * mean:.1f}%)")
        if self.dense_bytes is not None:
            lines.append(f"  size: {megabytes(self.file_bytes)} with {len(self.compacted)} initializers stored compactly, "
                         f"{megabytes(self.dense_bytes)} dense")
        lines.extend(f"  note: {n}" for n in self.notes)
        if not self.passed:
            lines.extend(f"  FAILED: {f}" for f in self.failures())
        lines.append(f"  time: export {self.export_seconds:.1f} s, verification {self.verify_seconds:.1f} s"
                     + (" (" + ", ".join(f"{k} {v:.1f} s" for k, v in self.stage_seconds.items()) + ")"
                        if self.stage_seconds else ""))
        return "\n".join(lines)

    def write_json(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, default=str))

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "passed": self.passed,
            "verified": self.verified,
            "file_bytes": self.file_bytes,
            "dense_bytes": self.dense_bytes,
            "external_data": str(self.external_data) if self.external_data else None,
            "opset": self.opset,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "compacted": self.compacted,
            "rtol": self.rtol,
            "atol": self.atol,
            "checks": [c.to_dict() for c in self.checks],
            "audit": self.audit.to_dict() if self.audit else None,
            "failures": self.failures(),
            "notes": self.notes,
            "export_seconds": self.export_seconds,
            "verify_seconds": self.verify_seconds,
            "kv_cache": self.kv_cache,
            "exporter": self.exporter,
            "runtime_config": str(self.runtime_config) if self.runtime_config else None,
            "token_checks": [t.to_dict() for t in self.token_checks],
            "stage_seconds": self.stage_seconds,
        }


def megabytes(n: int) -> str:
    """``n`` bytes as ``"12.34 MB"``."""
    return f"{n / 1e6:.2f} MB"


def describe_values(values: dict[str, list]) -> str:
    """``name [dims]`` per graph value; per-layer values of the same shape (``past_key_values.N.key``) as one
    entry ``past_key_values.{0..29}.key [dims]``."""
    groups: dict[tuple, list[int]] = {}
    order: list[tuple] = []
    for name, dims in values.items():
        m = re.fullmatch(r"(.*?)\.(\d+)\.(.*)", name)
        key = (m.group(1), m.group(3), _dims(dims)) if m else (name, None, _dims(dims))
        if key not in groups:
            groups[key] = []
            order.append(key)
        if m:
            groups[key].append(int(m.group(2)))
    parts = []
    for key in order:
        head, tail, dims = key
        layers = groups[key]
        if tail is None:
            parts.append(f"{head} {dims}")
        elif layers == list(range(layers[0], layers[0] + len(layers))) and len(layers) > 1:
            parts.append(f"{head}.{{{layers[0]}..{layers[-1]}}}.{tail} {dims}")
        else:
            parts.extend(f"{head}.{i}.{tail} {dims}" for i in layers)
    return ", ".join(parts)


def _dims(dims: list) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"
