"""Model-level evaluation: perplexity over token windows (the WikiText-2 protocol of Wanda / SparseGPT)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

__all__ = ["window_nlls", "perplexity"]


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    config = getattr(model, "config", None)
    if config is not None:  # Hugging Face: keyword input, no KV cache
        out = model(input_ids=ids, **({"use_cache": False} if hasattr(config, "use_cache") else {}))
    else:
        out = model(ids)
    logits = getattr(out, "logits", out)
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise TypeError(f"perplexity needs a causal LM returning logits (batch, seq, vocab), got {type(out).__name__}")
    return logits


@torch.no_grad()
def window_nlls(
    model: nn.Module,
    windows: Sequence[torch.Tensor],
    *,
    batch_size: int = 1,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) of each window, shape ``(len(windows),)``, float64.

    ``windows``: ``(1, seqlen)`` or ``(seqlen,)`` token-id tensors of one length.
    """
    if not windows:
        raise ValueError("perplexity needs at least one window")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    rows = [w.reshape(-1) for w in windows]
    if len({r.numel() for r in rows}) != 1:
        raise ValueError("all perplexity windows must have the same length")
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in tqdm(range(0, len(rows), batch_size), desc="perplexity", unit="batch", disable=not progress):
            ids = torch.stack(rows[i : i + batch_size]).to(dev)
            logits = _logits(model, ids)[:, :-1].float()
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
            out.append(ce.view(ids.shape[0], -1).double().mean(dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def perplexity(
    model: nn.Module,
    windows: Sequence[torch.Tensor],
    *,
    batch_size: int = 1,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> float:
    """``exp(mean over windows of the mean next-token cross-entropy)`` of a causal LM."""
    return float(math.exp(window_nlls(model, windows, batch_size=batch_size, device=device, progress=progress).mean()))
