"""Verification of a KV-cache decoder: greedy generation in onnxruntime against PyTorch's, step by step.

PyTorch generates greedily with its own cache (:func:`torch_greedy`); onnxruntime does the same with the file
(:class:`~swappass.onnx.generation.DecoderSession`, feeding back ``present`` as the next ``past``). The logits
are compared at the prefill and at every decode step while both have generated the same tokens (an output
passes when ``max |ort − torch| ≤ atol + rtol · max |torch|`` at every step), and the generated tokens must be
identical. A divergence at a near-tie — the two tokens' PyTorch logits within that tolerance — is reported but
passes: it is rounding, not a wrong graph. With onnxruntime-genai installed, its own loader (``og.Model`` on the
directory's ``genai_config.json``) generates the same tokens too.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .cache_adapter import cache_kwarg, returned_cache
from .generation import DecoderSession
from .verify import OutputCheck

__all__ = ["TokenCheck", "torch_greedy", "compare_generation", "genai_generation_check"]


@dataclass
class TokenCheck:
    """Greedy tokens of one runtime against PyTorch's on one prompt."""

    runtime: str
    inputs: str
    tokens: int  # tokens compared
    matched: int  # leading tokens identical to PyTorch's
    passed: bool
    note: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def torch_greedy(model: nn.Module, input_ids: torch.Tensor, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """``n`` greedy tokens (``(batch, n)``) with the model's own KV cache, and the ``(batch, vocab)`` logits of
    each step (pure argmax: no EOS stop, no logits processors)."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    kwarg = cache_kwarg(model)
    ids = input_ids.to(device)
    mask = torch.ones_like(ids)
    tokens, logits = [], []
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, use_cache=True)
        for step in range(n):
            last = out.logits[:, -1].float()
            nxt = last.argmax(-1)
            tokens.append(nxt.cpu().numpy())
            logits.append(last.cpu().numpy())
            if step + 1 == n:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = model(input_ids=nxt[:, None], attention_mask=mask, use_cache=True, **{kwarg: returned_cache(out)})
    return np.stack(tokens, axis=1), logits


def _step_error(ref: np.ndarray, got: np.ndarray, rtol: float, atol: float) -> tuple[float, float, float]:
    """(max |Δ|, tolerance, max |PyTorch|) of one step's logits; non-finite values that differ count as infinite."""
    finite = np.isfinite(ref)
    if not np.array_equal(finite, np.isfinite(got)):
        return float("inf"), 0.0, 1.0
    scale = float(np.abs(ref[finite]).max()) if finite.any() else 0.0
    diff = float(np.abs(ref[finite] - got[finite]).max()) if finite.any() else 0.0
    return diff, atol + rtol * scale, scale


def _divergence(ref_tokens: np.ndarray, got_tokens: np.ndarray) -> int:
    """Index of the first step where any row differs (= the step count when none does)."""
    n = min(ref_tokens.shape[1], got_tokens.shape[1])
    same = (ref_tokens[:, :n] == got_tokens[:, :n]).all(axis=0)
    return int(n if same.all() else np.argmin(same))


def _near_tie(ref_logits: np.ndarray, ref_tokens: np.ndarray, got_tokens: np.ndarray, tolerance: float) -> bool:
    rows = np.nonzero(ref_tokens != got_tokens)[0]
    gaps = ref_logits[rows, ref_tokens[rows]] - ref_logits[rows, got_tokens[rows]]
    return bool(np.all(np.abs(gaps) <= tolerance))


def _aggregate(label: str, output: str, errors: list[tuple[float, float, float]], agree: list[bool]) -> OutputCheck:
    """One check over several steps: the step closest to (or furthest over) its tolerance stands for all."""
    worst = max(errors, key=lambda e: e[0] / e[1] if e[1] else float("inf"))
    passed = all(d <= t for d, t, _ in errors)
    return OutputCheck(label, output, worst[0], worst[0] / worst[2] if worst[2] else worst[0], worst[1], passed,
                       top1=float(np.mean(agree)) if agree else None, top1_positions=len(agree))


def compare_generation(session: DecoderSession, model: nn.Module, input_ids: torch.Tensor, n: int, label: str,
                       rtol: float, atol: float) -> tuple[list[OutputCheck], TokenCheck, np.ndarray]:
    """Greedy ``n`` tokens in onnxruntime and in PyTorch from ``input_ids``: the logits checks (prefill, decode
    steps), the token check, and PyTorch's tokens."""
    ref_tokens, ref_logits = torch_greedy(model, input_ids, n)
    got = session.greedy(input_ids.cpu().numpy(), n, keep_logits=True)
    label = f"{label} {input_ids.shape[0]}×{input_ids.shape[1]}"
    stop = _divergence(ref_tokens, got.tokens)
    compared = range(min(stop + 1, n, len(got.step_logits)))
    errors = [_step_error(ref_logits[s], got.step_logits[s], rtol, atol) for s in compared]
    agree = [bool((ref_logits[s].argmax(-1) == got.step_logits[s].argmax(-1)).all()) for s in compared]
    checks = [_aggregate(label, "logits, prefill", errors[:1], agree[:1])]
    if len(errors) > 1:
        checks.append(_aggregate(label, f"logits, {len(errors) - 1} decode steps", errors[1:], agree[1:]))
    matched = stop
    note, passed = "", matched == n
    if not passed and stop < len(errors):
        if _near_tie(ref_logits[stop], ref_tokens[:, stop], got.tokens[:, stop], errors[stop][1]):
            passed, note = True, f"tokens part at step {stop} on a near-tie of PyTorch's logits (within tolerance)"
        else:
            note = f"token {stop} differs: PyTorch {ref_tokens[:, stop].tolist()}, onnxruntime {got.tokens[:, stop].tolist()}"
    return checks, TokenCheck("onnxruntime", label, n, matched, passed, note), ref_tokens


def genai_generation_check(directory: Path, input_ids: torch.Tensor, ref_tokens: np.ndarray, version: str
                           ) -> TokenCheck:
    """Greedy generation with onnxruntime-genai's own loader (``og.Model(directory)``) against PyTorch's tokens
    (batch 1). It stops at the end-of-sequence token like a deployment would: the tokens up to there must agree."""
    import onnxruntime_genai as og

    runtime = f"onnxruntime-genai {version}"
    label = f"prompt {input_ids.shape[0]}×{input_ids.shape[1]}"
    n = ref_tokens.shape[1]
    try:
        model = og.Model(str(directory))
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=input_ids.shape[1] + n)
        generator = og.Generator(model, params)
        generator.append_tokens(input_ids[:1].cpu().numpy().astype(np.int32))
        out = []
        while not generator.is_done() and len(out) < n:
            generator.generate_next_token()
            out.append(int(generator.get_next_tokens()[0]))
    except Exception as exc:  # the runtime refused the file or the config: a failed check, not a crash
        return TokenCheck(runtime, label, n, 0, False, note=f"onnxruntime-genai failed: {str(exc)[:300]}")
    ref = ref_tokens[0, : len(out)].tolist()
    matched = next((i for i, (a, b) in enumerate(zip(out, ref)) if a != b), len(out))
    note = "" if len(out) == n else f"stopped at the end-of-sequence token after {len(out)} tokens"
    if matched < len(out):
        note = f"token {matched} differs: PyTorch {ref[matched]}, onnxruntime-genai {out[matched]}"
    return TokenCheck(runtime, label, len(out), matched, matched == len(out), note)
