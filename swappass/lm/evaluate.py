"""Model-level evaluation: perplexity over token windows (the WikiText-2 protocol of Wanda / SparseGPT), and
agreement with a reference (dense) model: KL divergence and top-1 agreement of the next-token distributions."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

__all__ = ["window_nlls", "perplexity", "ModelComparison", "compare_models"]


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


_POSITIONS_PER_CHUNK = 256


@dataclass
class ModelComparison:
    """A model against a reference on the same windows; every next-token position counts once.

    ``nlls`` / ``reference_nlls``: mean cross-entropy (nats) per window, as :func:`window_nlls`.
    ``kl``: mean over positions of ``KL(p_reference ‖ p_model)`` (nats). ``top1``: fraction of positions where
    both models' most likely next token is the same. ``tokens``: positions compared.
    """

    nlls: torch.Tensor
    reference_nlls: torch.Tensor
    kl: float
    top1: float
    tokens: int

    @property
    def perplexity(self) -> float:
        return float(math.exp(self.nlls.mean()))

    @property
    def reference_perplexity(self) -> float:
        return float(math.exp(self.reference_nlls.mean()))


@torch.no_grad()
def compare_models(
    model: nn.Module,
    reference: nn.Module,
    windows: Sequence[torch.Tensor],
    *,
    batch_size: int = 1,
    device: torch.device | str | None = None,
    reference_device: torch.device | str | None = None,
    progress: bool = True,
) -> ModelComparison:
    """Perplexity of both causal LMs, KL divergence and top-1 agreement of ``model`` to ``reference``.

    ``windows``: ``(1, seqlen)`` or ``(seqlen,)`` token-id tensors of one length; both models must share the
    vocabulary (same logits width).
    """
    if not windows:
        raise ValueError("the comparison needs at least one window")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    ref_dev = torch.device(reference_device) if reference_device is not None else next(reference.parameters()).device
    rows = [w.reshape(-1) for w in windows]
    if len({r.numel() for r in rows}) != 1:
        raise ValueError("all windows must have the same length")
    modes = (model.training, reference.training)
    model.eval()
    reference.eval()
    nlls, ref_nlls = [], []
    kl_sum, agree, count = 0.0, 0, 0
    try:
        for i in tqdm(range(0, len(rows), batch_size), desc="compare", unit="batch", disable=not progress):
            ids = torch.stack(rows[i : i + batch_size])
            logits = _logits(model, ids.to(dev))[:, :-1].float().cpu()
            ref_logits = _logits(reference, ids.to(ref_dev))[:, :-1].float().cpu()
            if logits.shape != ref_logits.shape:
                raise ValueError(
                    f"the models' vocabularies differ (logits {tuple(logits.shape)} vs reference "
                    f"{tuple(ref_logits.shape)}): compare models that share a tokenizer"
                )
            target = ids[:, 1:].cpu()
            nll = torch.zeros(ids.shape[0], dtype=torch.float64)
            ref_nll = torch.zeros_like(nll)
            for p0 in range(0, target.shape[1], _POSITIONS_PER_CHUNK):  # float64 in chunks: small KLs stay exact
                pos = slice(p0, p0 + _POSITIONS_PER_CHUNK)
                logp = F.log_softmax(logits[:, pos].double(), dim=-1)
                ref_logp = F.log_softmax(ref_logits[:, pos].double(), dim=-1)
                t = target[:, pos].unsqueeze(-1)
                nll -= logp.gather(-1, t).squeeze(-1).sum(dim=1)
                ref_nll -= ref_logp.gather(-1, t).squeeze(-1).sum(dim=1)
                kl = torch.where(ref_logp.isneginf(), 0.0, ref_logp.exp() * (ref_logp - logp))  # 0·log 0 = 0
                kl_sum += float(kl.sum())
                agree += int((logp.argmax(-1) == ref_logp.argmax(-1)).sum())
            nlls.append(nll / target.shape[1])
            ref_nlls.append(ref_nll / target.shape[1])
            count += target.numel()
    finally:
        model.train(modes[0])
        reference.train(modes[1])
    return ModelComparison(torch.cat(nlls), torch.cat(ref_nlls), kl_sum / count, agree / count, count)
