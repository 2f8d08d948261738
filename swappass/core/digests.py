"""SHA-256 digests of tensors and of a module's state: an exact fingerprint of weights held in memory.

A checkpointed pass records the digest of the dense model it started from, so that a resume can refuse a model
with other weights (:mod:`swappass.graph.levels`). The digest covers every tensor of ``state_dict()`` (name,
dtype, shape and bytes), each distinct storage hashed once (tied weights cost nothing extra); the bytes are
those of the tensor's dtype, so the digest is the same on every device.
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

__all__ = ["tensor_sha256", "state_sha256"]

_CHUNK = 1 << 26  # bytes per piece copied off an accelerator


@torch.no_grad()
def tensor_sha256(t: torch.Tensor) -> str:
    """Hex SHA-256 of ``t``'s dtype, shape and element bytes (row-major), wherever it lives."""
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    flat = t.detach().reshape(-1)
    if flat.numel():
        flat = flat.contiguous()
        step = max(1, _CHUNK // flat.element_size())
        for i in range(0, flat.numel(), step):
            piece = flat[i : i + step].to("cpu")
            h.update(piece.view(torch.uint8).numpy().data)  # bytes, whatever the dtype (bfloat16 too)
    return h.hexdigest()


def state_sha256(module: nn.Module, threads: int = 4) -> str:
    """Hex SHA-256 of ``module.state_dict()``: every (name, tensor digest) in name order.

    Equal exactly when the state holds the same names, dtypes, shapes and bytes. Tensors are hashed on up to
    ``threads`` threads (hashlib releases the GIL); a shared storage (tied weights) is hashed once.
    """
    state = module.state_dict(keep_vars=False)
    keyed: dict[tuple, torch.Tensor] = {}
    names: dict[str, tuple] = {}
    for name, t in state.items():
        key = (t.device, t.data_ptr(), t.dtype, tuple(t.shape), tuple(t.stride())) if t.numel() else (name,)
        keyed.setdefault(key, t)
        names[name] = key
    keys = list(keyed)
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(keys)))) as pool:
        digests = dict(zip(keys, pool.map(lambda k: tensor_sha256(keyed[k]), keys)))
    h = hashlib.sha256()
    for name in sorted(names):
        h.update(f"{name}\0{digests[names[name]]}\n".encode())
    return h.hexdigest()
