"""Export of a causal LM as a decoder with a KV cache, in onnxruntime-genai's layout, verified token by token.

Two exporters write the same layout (:mod:`swappass.onnx.cache_adapter`) with a ``genai_config.json`` beside the
file, so that ``og.Model(directory)`` (onnxruntime-genai), ``swappass generate`` and a plain onnxruntime loop all
run it:

* ``genai`` — the onnxruntime-genai model builder (:mod:`swappass.onnx.genai_builder`), for the architectures it
  supports: the fastest export and the fastest CPU decoding (GroupQueryAttention), positions from the attention
  mask (no ``position_ids`` input);
* ``torch`` — ``torch.export`` of :class:`~swappass.onnx.cache_adapter.CacheDecoderAdapter` translated by
  torch.onnx (:mod:`swappass.onnx.translate`), for every Hugging Face causal LM whose cache is a plain per-layer
  key/value cache (GPT-2, OPT, …), with a ``position_ids`` input.

``auto`` takes the builder where it can and says why when it cannot. Then, as for every export: the pruned
weights are named and audited, compact storage if asked, metadata, an atomic write, and the verification of
:mod:`swappass.onnx.cache_verify` (greedy tokens and per-step logits against PyTorch; onnxruntime-genai's own
loader when it is installed) on the staged files — a file that onnxruntime cannot load is never written.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import onnx
import torch
from torch import nn

from .adapter import ExportError, exportable_experts, named_inputs
from .audit import audit_sparsity
from .cache_adapter import (AXIS_NAMES, CacheDecoderAdapter, DecoderGeometry, is_causal_lm, probe_geometry)
from .cache_verify import compare_generation, genai_generation_check
from .external_data import ExternalData, adopt_external_data, load_keeping_external_data
from .files import AtomicOutput
from .genai_builder import TOKENIZER_FILES, BuilderRun, builder_refusal, genai_version, has_tokenizer_files
from .genai_config import GENAI_CONFIG, decoder_config, read_genai_config, set_decoder_filename, write_genai_config
from .generation import DecoderSession
from .naming import rename_dims, strip_prefix
from .progress import StageLog
from .proto import as_records, check_records, describe, eval_mode, finish_proto, set_tolerances
from .report import ExportReport
from .translate import capture_error, export_program, first_lines, translate, unused_parameters

__all__ = ["export_decoder", "choose_exporter", "verification_prompts"]

_PREFIX = "model."  # CacheDecoderAdapter holds the model as `self.model`


def choose_exporter(exporter: str, model: nn.Module, geometry: DecoderGeometry, has_tokenizer: bool,
                    opset: int | None) -> tuple[str, str | None]:
    """(``"genai"`` or ``"torch"``, why the builder is not used or None)."""
    if exporter == "torch":
        return "torch", None
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    why = builder_refusal(type(model).__name__, dtype, geometry.head_size, has_tokenizer, opset)
    if why is not None and exporter == "genai":
        raise ExportError(f"exporter 'genai' cannot export this model: {why}; use exporter 'torch' (or 'auto')")
    return ("torch", why) if why else ("genai", None)


def export_decoder(model: nn.Module, example_inputs: Any, path: Path, log: StageLog, *, masks, opset: int | None,
                   verify: bool, compact: bool, external_data: bool | None, rtol: float | None, atol: float | None,
                   providers: Sequence[str], exporter: str, source_dir: str | Path | None, tokenizer: Any,
                   generate_tokens: int, optimize: str, builder_run: BuilderRun | None = None) -> ExportReport:
    """Export ``model`` (a Hugging Face causal LM) as a KV-cache decoder at ``path`` (see the module docstring).
    ``builder_run``: the builder already started on ``source_dir`` (used when the builder is chosen, else stopped)."""
    if not is_causal_lm(model):
        raise ExportError(f"kv_cache=True needs a Hugging Face causal language model; {type(model).__name__} is not "
                          "one (use kv_cache=False)")
    records = as_records(masks)
    weights = check_records(model, records)
    source = Path(source_dir) if source_dir is not None else None
    with eval_mode(model), exportable_experts(model), AtomicOutput(path) as out:
        t0 = time.perf_counter()
        geometry = probe_geometry(model)
        has_tokenizer = tokenizer is not None or (source is not None and has_tokenizer_files(source))
        choice, why = choose_exporter(exporter, model, geometry, has_tokenizer, opset)
        if why:
            log.note(f"exporting with torch.onnx: {why}")
        if builder_run is not None and (choice != "genai" or builder_run.source_dir != source):
            builder_run.cancel()
            builder_run = None
        if choice == "genai":
            proto, config, builder_data = _build_with_genai(model, source, tokenizer, out.tmp, geometry, log,
                                                            builder_run)
            unused: set[str] = set()
            name = f"onnxruntime-genai {genai_version()} model builder"
        else:
            proto, unused = _export_with_torch(model, geometry, opset, optimize, log)
            builder_data = None
            token_notes: list[str] = []
            config = decoder_config(geometry, path.name, _token_ids(model, geometry.vocab_size, token_notes))
            _stage_tokenizer(out.tmp, source, tokenizer)
            name = "torch.onnx (torch.export of a KV-cache adapter)"
        report = describe(proto, path)
        report.kv_cache, report.exporter = True, name
        if why:
            report.notes.append(f"exported with torch.onnx: {why}")
        if choice == "torch":
            report.notes.extend(token_notes)
        with log.stage("write", "names, metadata" + (", compact storage" if compact else "")):
            loaded_names = [t.name for t in proto.graph.initializer]
            finish_proto(proto, report, records, weights, unused, compact)
            if builder_data is not None and not compact and external_data is not False:  # keep its weights file
                adopt_external_data(proto, builder_data, out.tmp / f"{path.name}.data", loaded_names)
            out.write(proto, external_data)
            del proto
            write_genai_config(set_decoder_filename(config, path.name), out.tmp)
            shutil.rmtree(out.tmp / "build", ignore_errors=True)
            if builder_run is not None:
                builder_run.cancel()  # it has ended: removes what is left of its output
        report.export_seconds = time.perf_counter() - t0
        if verify:
            _verify(report, out, log, model, example_inputs, geometry, records, weights, unused, rtol, atol,
                    providers, generate_tokens)
        else:
            report.verified = False
        final, report.external_data = out.commit(keep_existing=TOKENIZER_FILES)
    report.runtime_config = final.with_name(GENAI_CONFIG)
    report.file_bytes = final.stat().st_size + (report.external_data.stat().st_size if report.external_data else 0)
    report.stage_seconds = dict(log.seconds)
    return report


def _token_ids(model: nn.Module, vocab_size: int, notes: list[str]) -> dict:
    """bos / eos / pad ids for ``genai_config.json`` from the generation config or the model config; ids outside
    the vocabulary (onnxruntime-genai refuses them) are left out, with a note."""
    config = model.config
    gen = getattr(model, "generation_config", None)
    out = {}
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(gen, key, None) if getattr(gen, key, None) is not None else getattr(config, key, None)
        ids = value if isinstance(value, (list, tuple)) else [value] if value is not None else []
        valid = [int(i) for i in ids if 0 <= int(i) < vocab_size]
        if len(valid) < len(ids):
            notes.append(f"the model's {key} {value} lies outside its vocabulary of {vocab_size}: genai_config.json "
                         f"uses {valid or 0}")
        out[key] = (valid if isinstance(value, (list, tuple)) else valid[0]) if valid else None
    return out


def _stage_tokenizer(directory: Path, source: Path | None, tokenizer: Any) -> None:
    """Tokenizer files beside the decoder: saved from ``tokenizer``, else copied from the source directory."""
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    elif source is not None:
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, directory / name)


def _build_with_genai(model: nn.Module, source: Path | None, tokenizer: Any, staging: Path,
                      geometry: DecoderGeometry, log: StageLog, started: BuilderRun | None
                      ) -> tuple[onnx.ModelProto, dict, ExternalData | None]:
    """The builder's decoder (loaded with its weights), its ``genai_config.json`` and where its weights lie in
    its data file; tokenizer files are moved into ``staging`` (beside the final file). ``started``: the builder
    already running on ``source``; else it runs now, on ``source`` or, without one, on the model (and
    tokenizer) saved to a temporary directory."""
    work = staging / "build"
    work.mkdir(parents=True)
    if started is None and (source is None or not has_tokenizer_files(source)):
        with log.stage("save", "the model for the builder"):
            source = work / "source"
            model.save_pretrained(str(source))
            if tokenizer is not None:
                tokenizer.save_pretrained(str(source))
    with log.stage("build", "onnxruntime-genai model builder" + (", started before the model loaded" if started
                                                                  else "")):
        if started is None:
            started = BuilderRun(source, work / "out")
        try:
            started.wait(log, geometry.num_layers)
        except BaseException:
            started.cancel()
            raise
    built = started.out_dir
    with log.stage("read", "the builder's graph"):
        proto, data = load_keeping_external_data(built / "model.onnx")
    config = read_genai_config(built)
    if config is None:
        raise ExportError(f"the onnxruntime-genai model builder wrote no {GENAI_CONFIG}")
    for name in TOKENIZER_FILES:
        if (built / name).is_file():
            shutil.move(str(built / name), str(staging / name))
    return proto, config, data


def _export_with_torch(model: nn.Module, geometry: DecoderGeometry, opset: int | None, optimize: str,
                       log: StageLog) -> tuple[onnx.ModelProto, set[str]]:
    """torch.export of the cache adapter over dynamic batch, sequence and past axes, translated to ONNX."""
    adapter = CacheDecoderAdapter(model, geometry).eval()
    batch, seq, past = 2, 3, 4  # distinct sizes: no axis can be taken for another while capturing
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    ids = torch.randint(0, geometry.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0)).to(device)
    args = (ids, torch.ones(batch, past + seq, dtype=torch.long, device=device),
            torch.arange(past, past + seq, device=device).expand(batch, seq).contiguous(),
            *[torch.zeros(batch, geometry.num_kv_heads, past, geometry.head_size, dtype=dtype, device=device)
              for _ in range(2 * geometry.num_layers)])
    b, s, p = (torch.export.Dim(n) for n in AXIS_NAMES[:3])
    token_axes = {0: b, 1: s}
    specs = (token_axes, {0: b, 1: torch.export.Dim.AUTO}, token_axes, tuple({0: b, 2: p} for _ in args[3:]))
    names = ["input_ids", "attention_mask", "position_ids", *geometry.past_names()]
    axes = {"input_ids": {0: AXIS_NAMES[0], 1: AXIS_NAMES[1]}, "attention_mask": {0: AXIS_NAMES[0], 1: AXIS_NAMES[3]},
            **{n: {0: AXIS_NAMES[0], 2: AXIS_NAMES[2]} for n in geometry.past_names()}}
    with log.stage("capture", "torch.export of the KV-cache decoder"):
        try:
            ep = export_program(adapter, args, specs)
        except Exception as exc:
            raise capture_error(exc, axes) from exc
    unused = unused_parameters(ep, _PREFIX)
    with log.stage("translate", f"torch.onnx, clean-up {optimize}"):
        proto = translate(ep, names, ["logits", *geometry.present_names()], opset, optimize)
    del ep
    strip_prefix(proto, _PREFIX)
    rename_dims(proto, axes)
    return proto, unused


def verification_prompts(example_inputs: Any, model: nn.Module, geometry: DecoderGeometry, n: int
                         ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(prompt ``(1, L)``: the first example row without its padding, batch ``(2+, L')`` of unpadded rows or
    seeded random ids, tokens to generate) — the prompt shortened so that it and ``n`` new tokens fit the context."""
    named, _ = named_inputs(model, example_inputs, True)
    ids = named.get("input_ids", next(iter(named.values()))).cpu()
    mask = named.get("attention_mask", torch.ones_like(ids)).cpu().bool()
    context = geometry.context_length or (ids.shape[1] + n)
    n = max(1, min(n, context - 2))
    limit = max(1, context - n)
    prompt = ids[0][mask[0]][None, :limit]
    if ids.shape[0] >= 2 and bool(mask.all()):
        batch = ids[:, :limit]
    else:
        g = torch.Generator().manual_seed(1)
        batch = torch.randint(0, geometry.vocab_size, (2, min(prompt.shape[1], limit)), generator=g)
    return prompt, batch, n


def _verify(report: ExportReport, out: AtomicOutput, log: StageLog, model, example_inputs, geometry, records, weights,
            unused, rtol, atol, providers, generate_tokens) -> None:
    t0 = time.perf_counter()
    set_tolerances(report, model, rtol, atol)
    if records:
        with log.stage("audit", f"{len(records)} pruned weights"):
            report.audit = audit_sparsity(out.staged, records, weights, unused)
    prompt, batch, n = verification_prompts(example_inputs, model, geometry, generate_tokens)
    with log.stage("verify", f"greedy {n} tokens in onnxruntime with the KV cache against PyTorch"):
        try:
            session = DecoderSession(out.staged, providers)
        except Exception as exc:
            raise ExportError(f"onnxruntime cannot load the exported file, so it was not written: "
                              f"{first_lines(str(exc), 3)}") from exc
        checks, tokens, ref = compare_generation(session, model, prompt, n, "prompt", report.rtol, report.atol)
        report.checks += checks
        report.token_checks.append(tokens)
        checks, tokens, _ = compare_generation(session, model, batch, min(4, n), "batch", report.rtol, report.atol)
        report.checks += checks
        report.token_checks.append(tokens)
        del session
    version = genai_version()
    if version is None:
        report.notes.append("onnxruntime-genai is not installed: the file was run with plain onnxruntime only "
                            "(pip install 'swappass[genai]' to check it in its own runtime)")
    else:
        with log.stage("genai", f"greedy tokens in onnxruntime-genai {version} (og.Model)"):
            report.token_checks.append(genai_generation_check(out.tmp, prompt, ref, version))
    report.verify_seconds = time.perf_counter() - t0
