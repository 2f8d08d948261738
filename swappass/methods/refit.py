"""Weight refit: after the mask is final, re-solve each row's kept weights by damped least squares on G.

For one row ``w`` with kept set K and pruned set P, the output error of new weights ``w'`` (supported on K) is
``(w − w')ᵀ G (w − w')``. Writing ``w'_K = w_K + δ``, the damped problem

    min_δ  (w − w')ᵀ G (w − w') + λ ||δ||²          λ = damping · mean(diag G)

has the solution ``δ = (G_KK + λI)⁻¹ c_K`` with ``c = G((1 − m) ⊙ w)`` the correlation vector of
:mod:`swappass.refine.loop`. It is SparseGPT's OBS update with its damped Hessian (1% of the mean diagonal), solved at
once for the final mask instead of column by column. Because ``G_KK ⪯ G_KK + λI``, the refit error is never
above the mask-only error (exactly; a row whose computed error would rise through round-off keeps its original
weights). ``damping = 0`` is the plain least-squares optimum on the kept support.

Rows with the same kept count are solved together with batched Cholesky factorisations (float32 or float64);
a batch entry whose damped block is not positive definite (possible only with ``damping = 0``) is solved with a
pseudo-inverse. Pruned entries of the result are exactly zero.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.errors import InputError
from ..core.loss import RowLossTotals, layer_loss, reconstruction_loss
from ..core.validate import check_layer
from ..core.workspace import available_bytes, work_dtype

__all__ = ["RefitResult", "refit_weights"]


@dataclass
class RefitResult(RowLossTotals):
    """Outcome of :func:`refit_weights`.

    ``weight``: ``d_out × d_in`` in W's dtype, exactly zero where the mask is False. ``loss_before``: per-row
    mask-only error (``layer_loss``). ``loss_after``: per-row error of ``weight`` (``reconstruction_loss``).
    ``relative_reduction``: ``(L_mask − L_refit) / L_mask`` over the layer.
    """

    weight: torch.Tensor
    loss_before: torch.Tensor
    loss_after: torch.Tensor
    info: dict = field(default_factory=dict)


def _solve_damped(A: torch.Tensor, rhs: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Solve ``A x = rhs`` for a batch of symmetric ``A`` (n, k, k); pseudo-inverse where Cholesky fails."""
    L, info = torch.linalg.cholesky_ex(A)
    x = torch.cholesky_solve(rhs[..., None], L)[..., 0]
    bad = info != 0
    n_bad = int(bad.sum())
    if n_bad:
        x[bad] = (torch.linalg.pinv(A[bad], hermitian=True) @ rhs[bad][..., None])[..., 0]
    return x, n_bad


def _rows_per_solve(k: int, itemsize: int, device: torch.device, batch_rows: int | None) -> int:
    if batch_rows is not None:
        return batch_rows
    budget = min(available_bytes(device) // 4, (1 << 30) if device.type == "cpu" else (4 << 30))
    return max(1, budget // (3 * k * k * itemsize + 1))


@torch.no_grad()
def refit_weights(
    W: torch.Tensor,
    G: torch.Tensor,
    mask: torch.Tensor,
    damping: float = 0.01,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    batch_rows: int | None = None,
    name: str = "layer",
) -> RefitResult:
    """Re-solve the kept weights of every row of ``W`` (``d_out × d_in``) for the final ``mask`` (True = keep).

    Args:
        G: ``d_in × d_in`` Gram matrix of the layer inputs (any positive scale: λ scales with it).
        damping: λ = ``damping · mean(diag G)`` is added to each row's kept block (SparseGPT's ``percdamp``).
        dtype: solve in float32 (default) or float64. device: where to solve (default: W's device).
        batch_rows: rows per batched solve (default: from the memory available).

    Returns a :class:`RefitResult` with the new weights (W's dtype and device) and both per-row errors.
    """
    check_layer(W, G, mask, name=name)
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not damping >= 0:
        raise InputError(f"{name}: damping must be a non-negative number (fraction of mean diag G), got {damping!r}")
    dev = torch.device(device) if device is not None else W.device
    dt = work_dtype(W, G, dtype=dtype)
    Gw = G.to(device=dev, dtype=dt)
    Gw = (Gw + Gw.T) / 2
    lam = float(damping) * float(Gw.diagonal().mean())
    w = W.to(device=dev, dtype=dt)
    keep = mask.to(dev)
    c = (w * ~keep) @ Gw
    new = torch.where(keep, w, torch.zeros((), dtype=dt, device=dev))  # +0.0 where pruned
    counts = keep.sum(dim=1)
    n_pinv = 0
    for k in torch.unique(counts).tolist():
        if k == 0:
            continue
        rows = (counts == k).nonzero().flatten()
        step = _rows_per_solve(k, Gw.element_size(), dev, batch_rows)
        eye = lam * torch.eye(k, dtype=dt, device=dev)
        for r0 in range(0, rows.numel(), step):
            r = rows[r0 : r0 + step]
            idx = torch.sort((~keep[r]).to(torch.int8), dim=1, stable=True).indices[:, :k]  # kept inputs, ascending
            A = Gw[idx[:, :, None], idx[:, None, :]] + eye
            delta, bad = _solve_damped(A, c[r].gather(1, idx))
            n_pinv += bad
            new[r[:, None], idx] = w[r].gather(1, idx) + delta

    loss_before = layer_loss(w, Gw, keep, dtype=dt)
    loss_after = reconstruction_loss(w, Gw, new, dtype=dt)
    worse = loss_after > loss_before
    if bool(worse.any()):  # only through round-off: keep the original weights of those rows
        new[worse] = torch.where(keep[worse], w[worse], torch.zeros((), dtype=dt, device=dev))
        loss_after[worse] = loss_before[worse]
    target = W.device
    return RefitResult(
        weight=new.to(device=target, dtype=W.dtype),
        loss_before=loss_before.to(target),
        loss_after=loss_after.to(target),
        info={
            "damping": float(damping),
            "lambda": lam,
            "dtype": str(dt).replace("torch.", ""),
            "pinv_rows": n_pinv,
            "reverted_rows": int(worse.sum()),
        },
    )
