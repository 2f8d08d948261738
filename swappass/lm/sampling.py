"""Data-free calibration: token sequences sampled from a causal LM itself, batched, with the KV cache.

:func:`sample_sequences` draws the first token of each sequence uniformly from the vocabulary (special tokens
excluded when the tokenizer is given) and the rest by ancestral sampling (temperature 1, no truncation), as
LLM-QAT's data-free generation does. Up to ``batch_size`` sequences advance together, one token per forward pass
of the model with its KV cache, so a step costs one batched pass over the weights. :func:`sample_next` draws
the next tokens from the logits by inverting the cumulative distribution (float64) with one uniform number per
sequence. Every random number comes from one CPU generator seeded with ``seed``: the sequences depend on the
seed, ``batch_size`` (the sequences sharing a forward pass) and the model's numerics, nothing else.

The Linear layers multiply in ``matmul_precision`` meanwhile (:mod:`swappass.lm.matmul_precision`): ``"auto"``
is bfloat16 for a float32 model on a CPU with native bfloat16 matmuls (the steps are bound by reading the
weights), else the model's own dtype.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import CalibrationError
from .matmul_precision import linears_in, resolve_matmul_precision

__all__ = ["sample_next", "sample_sequences", "DEFAULT_SAMPLE_BATCH"]

DEFAULT_SAMPLE_BATCH = 16  # sequences per forward pass


def sample_next(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row of ``logits`` (B, V), drawn from ``softmax(logits)``: (B, 1) long, on the CPU.

    Inverse-CDF sampling in float64: ``u ~ U[0, 1)`` per row (from ``generator``), the token is the first whose
    cumulative weight exceeds ``u`` times the total; a token of probability 0 is never drawn.
    """
    # One copy, then in place: every fresh (B, V) float64 buffer costs page faults (2 vs 6-17 ms per step here)
    z = logits.detach().to("cpu", torch.float64, copy=True)
    cdf = z.sub_(z.max(dim=1, keepdim=True).values).exp_().cumsum_(dim=1)
    u = torch.rand(z.shape[0], 1, generator=generator, dtype=torch.float64)
    idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    return idx.clamp_(max=z.shape[1] - 1)


def _cache_argument(model: nn.Module) -> str:
    """The KV-cache keyword of the model's forward (and output field): ``cache`` (transformers ≥ 5.2x) or
    ``past_key_values``."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _first_tokens(vocab: int, tokenizer, nsamples: int, generator: torch.Generator) -> torch.Tensor:
    special = set(getattr(tokenizer, "all_special_ids", []) or []) if tokenizer is not None else set()
    candidates = torch.tensor([i for i in range(vocab) if i not in special], dtype=torch.long)
    return candidates[torch.randint(len(candidates), (nsamples,), generator=generator)]


def _step(model: nn.Module, ids: torch.Tensor, past, cache_arg: str, device) -> tuple[torch.Tensor, object]:
    """Logits of the last position (B, V') and the new cache, after feeding ``ids`` (B, 1)."""
    try:
        res = model(input_ids=ids.to(device), use_cache=True, **{cache_arg: past})
    except TypeError as exc:
        raise CalibrationError(
            f"calibration 'self' needs a causal LM with a KV cache ({type(model).__name__}: {exc})"
        ) from exc
    logits = getattr(res, "logits", None)
    if logits is None or logits.dim() != 3:
        raise CalibrationError(f"calibration 'self' needs a causal LM; {type(model).__name__} gives no logits")
    return logits[:, -1], getattr(res, cache_arg, None)


def _sample_batch(model: nn.Module, first: torch.Tensor, seqlen: int, vocab: int, cache_arg: str, device,
                  gen: torch.Generator, bar) -> list[torch.Tensor]:
    """``len(first)`` sequences ``(1, seqlen)`` starting with the tokens ``first``, sampled together."""
    n = len(first)
    ids = torch.empty(n, seqlen, dtype=torch.long)
    ids[:, 0] = first
    bar.update(n)
    past = None
    for t in range(1, seqlen):
        logits, past = _step(model, ids[:, t - 1 : t], past, cache_arg, device)
        ids[:, t : t + 1] = sample_next(logits[:, :vocab], gen)
        bar.update(n)
    return [row.reshape(1, -1).clone() for row in ids]


@torch.no_grad()
def sample_sequences(
    model: nn.Module,
    tokenizer=None,
    *,
    nsamples: int,
    seqlen: int,
    seed: int = 0,
    batch_size: int = DEFAULT_SAMPLE_BATCH,
    matmul_precision: str = "auto",
    progress: bool = True,
) -> list[torch.Tensor]:
    """Data-free calibration: ``nsamples`` sequences ``(1, seqlen)`` of token ids sampled from the causal LM
    ``model`` (see the module docstring); deterministic for a seed, ``batch_size`` and ``matmul_precision``
    (``auto``, ``float32``, ``bfloat16``) on one machine."""
    config = getattr(model, "config", None)
    vocab = getattr(config, "vocab_size", None)
    if not vocab:
        raise CalibrationError("calibration 'self' needs a Hugging Face causal LM (its config has no vocab_size)")
    if batch_size < 1:
        raise CalibrationError(f"the sampling batch size must be at least 1, got {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    first = _first_tokens(vocab, tokenizer, nsamples, gen)
    device = next(model.parameters()).device
    cache_arg = _cache_argument(model)
    dtype = resolve_matmul_precision(model, matmul_precision)
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    bar = tqdm(total=nsamples * seqlen, desc="calibration: sampling from the model", unit="tok",
               disable=not progress)
    try:
        with linears_in(model, dtype, rows=min(batch_size, nsamples)):
            for b0 in range(0, nsamples, batch_size):
                n = min(batch_size, nsamples - b0)
                out.extend(_sample_batch(model, first[b0 : b0 + n], seqlen, vocab, cache_arg, device, gen, bar))
    finally:
        bar.close()
        model.train(was_training)
    return out
