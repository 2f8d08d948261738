"""Roles of Linear sites that stay dense unless a ``targets`` selector names them.

* ``"router"``: a mixture-of-experts router (``mlp.gate``, ``router``): a Linear whose output reaches a
  ``topk`` (through softmax, sigmoid, casts, biases …) within a few ops. Pruning it changes which experts
  every token reaches, so it is not a default target.
* ``"expert gate"``: the gate of a shared expert (Qwen2-MoE's ``shared_expert_gate``): a Linear with one output
  whose value goes through a sigmoid, a per-token weight on the shared expert's output.
* ``"vision tower"`` / ``"projector"``: in a vision-language model (a config with a ``vision_config`` and a
  ``language_model`` submodule: Gemma3, LLaVA, Qwen2-VL …) every site outside the language model: the vision
  encoder and the multimodal projector. The language model's sites are the default targets.

Routers and gates are found in the graph; the vision-language split comes from the module tree (which part is
the language model). :data:`ROLE_REASONS` gives the report's reason for each role.
"""
from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

__all__ = ["ROLE_REASONS", "reaches_topk", "is_sigmoid_gate", "language_model_path", "multimodal_role"]

aten = torch.ops.aten

ROLE_REASONS = {
    "router": "router of a mixture-of-experts block (its output picks the experts); dense unless selected with "
              "targets",
    "expert gate": "gate of a shared expert (a sigmoid weight on its output); dense unless selected with targets",
    "vision tower": "vision tower of a vision-language model; dense unless selected with targets",
    "projector": "multimodal projector of a vision-language model; dense unless selected with targets",
}
_TOPK = {aten.topk.default}
_SIGMOID = {aten.sigmoid.default, torch.sigmoid}
_VISION_NAMES = {"vision_tower", "visual", "vision_model", "vision_encoder", "image_encoder", "vision"}


def _forward_within(op: fx.Node, targets: set, hops: int, stop: set[fx.Node]) -> bool:
    """Whether a node whose target is in ``targets`` is reachable from ``op`` within ``hops`` users (not through
    the nodes in ``stop``)."""
    frontier, seen = [op], {op}
    for _ in range(hops):
        nxt = []
        for node in frontier:
            for user in node.users:
                if user in seen or user in stop:
                    continue
                if user.op == "call_function" and user.target in targets:
                    return True
                seen.add(user)
                nxt.append(user)
        frontier = nxt
    return False


def reaches_topk(op: fx.Node, linear_ops: set[fx.Node], hops: int = 8) -> bool:
    """Whether the output of the Linear node ``op`` reaches a ``topk`` within ``hops`` ops, not through another
    Linear (``linear_ops``): the mark of a MoE router."""
    return _forward_within(op, _TOPK, hops, linear_ops - {op})


def is_sigmoid_gate(op: fx.Node, d_out: int, linear_ops: set[fx.Node], hops: int = 3) -> bool:
    """Whether the Linear node ``op`` (``d_out`` outputs) is a one-output gate followed by a sigmoid."""
    return d_out == 1 and _forward_within(op, _SIGMOID, hops, linear_ops - {op})


def language_model_path(model: nn.Module) -> str | None:
    """The module path of a vision-language model's language model (``model.language_model``), or None when
    ``model`` is not one (its config has no ``vision_config``, or no submodule is named ``language_model``)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "vision_config", None) is None:
        return None
    paths = [name for name, _ in model.named_modules() if name.rpartition(".")[2] == "language_model"]
    return min(paths, key=len) if paths else None


def multimodal_role(module_path: str, language_model: str) -> str | None:
    """``"vision tower"``, ``"projector"`` or None for a site of a vision-language model whose language model
    lives at ``language_model``: sites under the language model (and the output projection) have no role; the
    others are the vision tower (a path part named ``vision_tower``, ``visual``, ``vision_model`` …) or the
    projector (a part naming a projector, e.g. ``multi_modal_projector``)."""
    if module_path == language_model or module_path.startswith(language_model + "."):
        return None
    parts = module_path.split(".")
    if set(parts) & _VISION_NAMES:
        return "vision tower"
    if any("projector" in p for p in parts):
        return "projector"
    return None
