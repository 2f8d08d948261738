"""ONNX export of a (pruned) model, verified with onnxruntime: :func:`export_onnx`.

    report = swappass.export_onnx(model, example_inputs, "model.onnx", masks=records)
    print(report)            # verification errors, sparsity audit, file size
    assert report.passed

A causal language model exports as a decoder with a KV cache (:mod:`swappass.onnx.decoder_export`: the layout of
onnxruntime-genai, a ``genai_config.json`` beside the file). Any other model — or ``kv_cache=False`` — exports as
one graph from its inputs to its outputs, in order: wrap the model so that its outputs are plain tensors (Hugging
Face models: called with ``use_cache=False``, ``logits`` or else ``last_hidden_state`` as the output); capture it
with ``torch.export`` (dynamic ``batch`` and ``sequence`` axes by default); translate to ONNX
(:mod:`swappass.onnx.translate`); restore parameter names on the weights the exporter renamed (a folded
``Transpose`` becomes ``NAME.T``); optionally store sparse initializers compactly (:mod:`swappass.onnx.compact`);
write sparsity metadata; write the file atomically (a temporary directory next to the target, then a rename),
with external data when over the 2 GB protobuf limit; then audit the file's sparsity (:mod:`swappass.onnx.audit`)
and compare onnxruntime with PyTorch on the example inputs and on inputs of another batch size and sequence
length (:mod:`swappass.onnx.verify`). Every stage reports its start and its time (:mod:`swappass.onnx.progress`).
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .adapter import (
    ExampleInputs,
    ExportAdapter,
    ExportError,
    call_model,
    dynamic_axes,
    eager_attention,
    exportable_experts,
    hf_call_kwargs,
    is_hf_model,
    max_positions,
    max_sizes,
    named_inputs,
    output_tensors,
    pick_outputs,
    widen_unit_axes,
)
from .audit import audit_sparsity
from .cache_adapter import is_causal_lm
from .files import AtomicOutput
from .genai_builder import BuilderRun
from .naming import rename_dims, strip_prefix
from .opsets import check_opset
from .progress import StageLog
from .proto import MasksLike, as_records, check_records, describe, eval_mode, finish_proto, set_tolerances
from .report import ExportReport
from .translate import (
    OPTIMIZE_LEVELS,
    capture,
    first_lines,
    folded_parameters,
    is_view_failure,
    translate,
    unused_parameters,
)
from .verify import VerificationError, compare_outputs, second_inputs

__all__ = ["export_onnx", "EXPORTERS"]

WRAPPER_PREFIX = "model."  # the adapters hold the user's model as `self.model`
EXPORTERS = ("auto", "genai", "torch")


def export_onnx(
    model: nn.Module,
    example_inputs: ExampleInputs,
    path: str | Path,
    *,
    masks: MasksLike = None,
    opset: int | None = None,
    dynamic: bool | Mapping[str, Mapping[int, str]] = True,
    verify: bool = True,
    compact: bool = False,
    outputs: Sequence[str] | None = None,
    external_data: bool | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    verify_inputs: Mapping[str, torch.Tensor] | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    strict: bool = False,
    verbose: bool = True,
    kv_cache: bool | None = None,
    exporter: str = "auto",
    source_dir: str | Path | None = None,
    tokenizer: Any = None,
    generate_tokens: int = 32,
    optimize: str = "fold",
    progress: bool | None = None,
    builder_run: BuilderRun | None = None,
) -> ExportReport:
    """Export ``model`` to ONNX at ``path`` and verify the file; returns (and with ``verbose`` prints) the report.

    ``example_inputs``: a tensor (Hugging Face models: ``input_ids``), a tuple (positional arguments), or a
    mapping such as a tokenizer's ``BatchEncoding`` (keyword arguments; keys become the ONNX input names).
    ``masks``: the pruned weights (:class:`~swappass.core.masks.PrunedWeight` list or dict, or a masks file) to audit
    and describe in the metadata. ``opset``: the ONNX opset (checked first, :mod:`swappass.onnx.opsets`; None: the
    exporter's default). ``compact``: store highly sparse initializers as bit mask + values (smaller file,
    onnxruntime folds it back at load). ``external_data``: None = automatically when over the 2 GB protobuf limit.
    ``rtol``/``atol``: verification tolerance (default by dtype, see :func:`swappass.onnx.verify.default_tolerances`).
    ``strict``: raise :class:`~swappass.onnx.verify.VerificationError` when verification fails (the file stays, for
    inspection; a file that onnxruntime cannot load at all is not written). ``progress``: print each stage and its
    time on stderr (None: as ``verbose``).

    KV-cache decoder (``kv_cache``; None = for causal LMs, see :mod:`swappass.onnx.decoder_export`): ``exporter``
    ``"auto"`` (the onnxruntime-genai builder where it supports the model, else torch.onnx), ``"genai"`` or
    ``"torch"``; ``source_dir``: the model's ``save_pretrained`` directory when there is one (the builder reads it;
    otherwise the model is saved to a temporary one); ``tokenizer``: saved beside the file for
    ``swappass generate`` / onnxruntime-genai; ``generate_tokens``: greedy tokens compared with PyTorch;
    ``builder_run``: the builder already started on ``source_dir`` (:class:`~swappass.onnx.genai_builder.BuilderRun`,
    so that it overlaps the model's loading), used when the builder is chosen and stopped otherwise.

    Graph without a cache: ``dynamic``: True = dynamic ``batch`` (axis 0) and ``sequence`` (axis 1 of token inputs
    and of rank-3 inputs) axes; False = fixed shapes; or ``{input: {axis: name}}``. ``outputs``: fields of a dict /
    ModelOutput result to export (default for Hugging Face models: ``logits`` if present, else
    ``last_hidden_state``). ``verify_inputs``: a second input set (default: one of another batch size and sequence
    length). ``optimize``: the graph clean-up after translation (:func:`swappass.onnx.translate.translate`).
    """
    opset = check_opset(opset)
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter {exporter!r} is not one of {EXPORTERS}")
    if optimize not in OPTIMIZE_LEVELS:
        raise ExportError(f"optimize {optimize!r} is not one of {OPTIMIZE_LEVELS}")
    log = StageLog(verbose if progress is None else progress)
    if kv_cache is None:
        kv_cache = is_causal_lm(model)
    if kv_cache:
        from .decoder_export import export_decoder

        report = export_decoder(
            model, example_inputs, Path(path), log, masks=masks, opset=opset, verify=verify, compact=compact,
            external_data=external_data, rtol=rtol, atol=atol, providers=providers, exporter=exporter,
            source_dir=source_dir, tokenizer=tokenizer, generate_tokens=generate_tokens, optimize=optimize,
            builder_run=builder_run)
    else:
        if builder_run is not None:
            builder_run.cancel()  # not a KV-cache decoder after all
        report = _export_graph(model, example_inputs, Path(path), log, masks, opset, dynamic, verify, compact,
                               outputs, external_data, rtol, atol, verify_inputs, providers, optimize)
    return finish_report(report, verbose, verify, strict)


def finish_report(report: ExportReport, verbose: bool, verify: bool, strict: bool) -> ExportReport:
    """Print the report (``verbose``) and warn, or raise with ``strict``, when verification failed."""
    if verbose:
        print(report)
    if verify and not report.passed:
        if strict:
            raise VerificationError(f"{report.path} failed verification:\n  " + "\n  ".join(report.failures()))
        warnings.warn(f"{report.path} failed verification: " + "; ".join(report.failures()[:3]), stacklevel=3)
    return report


def _capture_and_translate(model, adapter, named, axes, hf, output_names, opset, optimize, log: StageLog):
    """(unused parameters, folded parameters, the ModelProto, a note or None); a capture that fails on a view of
    a transposed tensor in sdpa attention is retried with transformers' eager attention (the same function)."""

    def run():
        with log.stage("capture", "torch.export"):
            ep = capture(adapter, widen_unit_axes(named, axes), list(named), axes, max_sizes(model, hf))
        unused, folded = unused_parameters(ep, WRAPPER_PREFIX), folded_parameters(ep, WRAPPER_PREFIX)
        with log.stage("translate", f"torch.onnx, clean-up {optimize}"):
            return unused, folded, translate(ep, list(named), output_names, opset, optimize)

    try:
        return (*run(), None)
    except ExportError as exc:
        if not is_view_failure(exc):
            raise
        with eager_attention(model) as changed:
            if not changed:
                raise
            result = run()
    return (*result, "exported with transformers' eager attention (the same function): torch.export's "
                     "decomposition of this model's sdpa attention fails (a view of a transposed tensor)")


def _export_graph(model, example_inputs, path: Path, log: StageLog, masks, opset, dynamic, verify, compact, outputs,
                  external_data, rtol, atol, verify_inputs, providers, optimize) -> ExportReport:
    """The graph from the model's inputs to its outputs, without a cache (see the module docstring)."""
    records = as_records(masks)
    weights = check_records(model, records)
    hf = is_hf_model(model)
    named, positional = named_inputs(model, example_inputs, hf)
    axes = dynamic_axes(named, dynamic)
    call_kwargs = hf_call_kwargs(model, hf)
    with eval_mode(model), exportable_experts(model), AtomicOutput(path) as out:
        t0 = time.perf_counter()
        with torch.no_grad():
            eager = call_model(model, named, positional, call_kwargs)
        fields = pick_outputs(eager, outputs, hf)
        output_names = list(output_tensors(eager, fields))
        del eager
        adapter = ExportAdapter(model, list(named), call_kwargs, fields, positional).eval()
        unused, folded, proto, note = _capture_and_translate(model, adapter, named, axes, hf, output_names, opset,
                                                             optimize, log)
        strip_prefix(proto, WRAPPER_PREFIX)
        rename_dims(proto, axes)
        report = describe(proto, path)
        if note:
            report.notes.append(note)
        with log.stage("write", "names, metadata" + (", compact storage" if compact else "")):
            finish_proto(proto, report, records, weights, unused, compact, folded)
            out.write(proto, external_data)
            del proto
        report.export_seconds = time.perf_counter() - t0
        if verify:
            _verify(report, out.staged, log, model, adapter, named, axes, output_names, records, weights, unused,
                    rtol, atol, verify_inputs, providers, folded)
        else:
            report.verified = False
        final, report.external_data = out.commit()
    report.file_bytes = final.stat().st_size + (report.external_data.stat().st_size if report.external_data else 0)
    report.stage_seconds = dict(log.seconds)
    return report


def _verify(report: ExportReport, staged: Path, log: StageLog, model, adapter, named, axes, output_names, records,
            weights, unused, rtol, atol, verify_inputs, providers, folded=frozenset()) -> None:
    import onnxruntime as ort

    t0 = time.perf_counter()
    set_tolerances(report, model, rtol, atol)
    if records:
        with log.stage("audit", f"{len(records)} pruned weights"):
            report.audit = audit_sparsity(staged, records, weights, unused, folded)
    with log.stage("verify", "onnxruntime against PyTorch"):
        try:
            session = ort.InferenceSession(str(staged), providers=list(providers))
        except Exception as exc:
            raise ExportError(f"onnxruntime cannot load the exported file, so it was not written: "
                              f"{first_lines(str(exc), 3)}") from exc
        device = next((t.device for t in named.values()), torch.device("cpu"))

        def reference(*inputs):
            return adapter(*(t.to(device) for t in inputs))

        lm = [n for n in output_names if n == "logits"]
        report.checks += compare_outputs(session, reference, named, output_names, "example", report.rtol,
                                         report.atol, lm)
        vocab = getattr(getattr(model, "config", None), "vocab_size", None)
        second = verify_inputs if verify_inputs is not None else second_inputs(
            {k: v.cpu() for k, v in named.items()}, axes, vocab, max_positions(model))
        if second is not None:
            report.checks += compare_outputs(session, reference, second, output_names, "second", report.rtol,
                                             report.atol, lm)
        else:
            report.notes.append("fixed input shapes: verified on the example inputs only")
    report.verify_seconds = time.perf_counter() - t0

