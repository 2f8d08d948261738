"""Mixture-of-experts computations in a captured graph: fused 3-D expert weights and how rows are routed to them.

transformers 5 stores the experts of a MoE block (Mixtral, Qwen2/3-MoE, OLMoE, …) as fused parameters
``gate_up_proj`` ``(E, 2I, H)`` and ``down_proj`` ``(E, H, I)`` and applies them without ``nn.Linear``, in one
of the forms of its ``experts_implementation``:

* ``grouped_mm`` (the default): the token rows sorted by expert and one grouped matmul,
  ``transformers::grouped_mm_fallback(x, W.transpose(-2, -1), offsets)`` (what ``torch.export`` records on CPU
  and for float32) or ``aten._grouped_mm(x, W.transpose(-2, -1), offs=offsets)`` (bfloat16 on CUDA);
  ``offsets`` (``E``) are cumulative row counts (:mod:`swappass.core.routing`, layout ``"offsets"``);
* ``batched_mm``: every (token, expert) row gathers its expert's matrix,
  ``bmm(W[ids], x.unsqueeze(-1))`` (layout ``"ids"``; what the ONNX export uses);
* ``eager``: a Python loop over the experts that were hit, which ``torch.export`` cannot capture (data-dependent
  control flow); the capture error says to load the model with ``experts_implementation="grouped_mm"``.

:func:`find_expert_uses` finds these computations by their ops and operands, not by attribute names: the weight
is a 3-D parameter reached from the matmul through transposes and casts, the input is the matmul's row operand
and the route is the offsets or ids operand. A weight stored ``(E, d_out, d_in)`` (read through a transpose of
its last two axes, or gathered and multiplied from the left) is not ``transposed``; one stored ``(E, d_in,
d_out)`` is (GPT-OSS's layout). Each expert ``e`` of such a use becomes a site of its own
(:func:`swappass.graph.sites.find_sites`).

Routing weights: transformers multiplies them into the experts' *outputs* (after ``down_proj``), so an expert's
input rows are the unweighted hidden states (``gate_up_proj``) and intermediate activations (``down_proj``) of
the tokens routed to it, and its Gram matrix is theirs: the layer error is the error of the expert's own output
on those tokens, before the router weighs it. It is the rule of every site (the Gram matrix of what the matmul
reads), so a model that scales the rows before its experts gets weighted statistics by the same rule.

The router's ``topk`` is data-dependent in values only (its ``k`` and so every shape are static), which
``torch.export`` (non-strict) captures as is; the sequential plan counts the routing tensor among an expert
group's inputs, so experts come after a router that is pruned itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

__all__ = ["ExpertUse", "expert_use", "find_expert_uses", "GROUPED_OPS"]

aten = torch.ops.aten

# schema name of a grouped matmul -> (input argument, weight argument, offsets argument or keyword)
GROUPED_OPS: dict[str, tuple[int, int, int | str]] = {
    "transformers::grouped_mm_fallback": (0, 1, 2),
    "aten::_grouped_mm": (0, 1, "offs"),
}
_CASTS = {aten.to.dtype, aten.to.dtype_layout, aten._to_copy.default, aten.alias.default, aten.contiguous.default,
          aten.clone.default}
_UNSQUEEZE = {aten.unsqueeze.default}


@dataclass
class ExpertUse:
    """One matmul applying the E expert matrices of a fused 3-D parameter.

    ``op``: the matmul node. ``weight``: the ``get_attr`` node of the 3-D parameter. ``input``: the node holding
    the rows it multiplies (``S × d_in``). ``route``: the offsets (``"offsets"``) or expert ids (``"ids"``) node.
    ``transposed``: the parameter is stored ``(E, d_in, d_out)``.
    """

    op: fx.Node
    weight: fx.Node
    input: fx.Node
    route: fx.Node
    layout: str
    transposed: bool


def _schema_name(node: fx.Node) -> str | None:
    schema = getattr(node.target, "_schema", None)
    return getattr(schema, "name", None)


def _strip_casts(node: object) -> object:
    while isinstance(node, fx.Node) and node.op == "call_function" and node.target in _CASTS:
        node = node.args[0]
    return node


def _is_last_two_swap(node: fx.Node) -> bool:
    if node.target == aten.transpose.int:
        dims = sorted(int(d) % 3 for d in node.args[1:3])
        return dims == [1, 2]
    if node.target == aten.permute.default:
        return [int(d) % 3 for d in node.args[1]] == [0, 2, 1]
    return False


def _weight_source(node: object, root: nn.Module) -> tuple[fx.Node | None, bool]:
    """(the ``get_attr`` node of a 3-D parameter behind ``node``, whether its last two axes were swapped)."""
    swapped = False
    node = _strip_casts(node)
    while isinstance(node, fx.Node) and node.op == "call_function" and _is_last_two_swap(node):
        swapped = not swapped
        node = _strip_casts(node.args[0])
    if isinstance(node, fx.Node) and node.op == "get_attr":
        value = _fetch(root, node.target)
        if isinstance(value, nn.Parameter) and value.dim() == 3 and value.is_floating_point():
            return node, swapped
    return None, False


def _fetch(root: nn.Module, target: str):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _grouped_use(node: fx.Node, root: nn.Module) -> ExpertUse | None:
    spec = GROUPED_OPS.get(_schema_name(node) or "")
    if spec is None:
        return None
    x_idx, w_idx, offs_at = spec
    offsets = node.kwargs.get(offs_at) if isinstance(offs_at, str) else (
        node.args[offs_at] if len(node.args) > offs_at else node.kwargs.get("offs"))
    if isinstance(offs_at, str) and offsets is None and len(node.args) > 2:
        offsets = node.args[2]
    weight, swapped = _weight_source(node.args[w_idx], root)
    x = _strip_casts(node.args[x_idx])
    if weight is None or not isinstance(x, fx.Node) or not isinstance(offsets, fx.Node):
        return None
    # the op reads (E, d_in, d_out): a parameter read through a swap of its last two axes is stored (E, d_out, d_in)
    return ExpertUse(node, weight, x, offsets, "offsets", transposed=not swapped)


def _gathered(node: object, root: nn.Module) -> tuple[fx.Node | None, fx.Node | None]:
    """(``get_attr`` of a 3-D parameter, ids) when ``node`` is ``W[ids]`` (``aten.index.Tensor(W, [ids])``)."""
    node = _strip_casts(node)
    if not (isinstance(node, fx.Node) and node.op == "call_function" and node.target == aten.index.Tensor):
        return None, None
    indices = node.args[1]
    if len(indices) != 1 or not isinstance(indices[0], fx.Node):
        return None, None
    weight, swapped = _weight_source(node.args[0], root)
    return (weight, indices[0]) if weight is not None and not swapped else (None, None)


def _unsqueezed(node: object, dim: int) -> fx.Node | None:
    node = _strip_casts(node)
    if isinstance(node, fx.Node) and node.op == "call_function" and node.target in _UNSQUEEZE:
        if int(node.args[1]) % 3 == dim % 3 and isinstance(node.args[0], fx.Node):
            return _strip_casts(node.args[0])
    return None


def _batched_use(node: fx.Node, root: nn.Module) -> ExpertUse | None:
    if node.target != aten.bmm.default:
        return None
    a, b = node.args[:2]
    weight, ids = _gathered(a, root)
    if weight is not None and (x := _unsqueezed(b, -1)) is not None:  # (S, d_out, d_in) @ (S, d_in, 1)
        return ExpertUse(node, weight, x, ids, "ids", transposed=False)
    weight, ids = _gathered(b, root)
    if weight is not None and (x := _unsqueezed(a, 1)) is not None:  # (S, 1, d_in) @ (S, d_in, d_out)
        return ExpertUse(node, weight, x, ids, "ids", transposed=True)
    return None


def expert_use(node: fx.Node, gm: fx.GraphModule) -> ExpertUse | None:
    """The :class:`ExpertUse` of ``node`` if it is a matmul applying fused expert weights, else None."""
    if node.op != "call_function":
        return None
    return _grouped_use(node, gm) or _batched_use(node, gm)


def find_expert_uses(gm: fx.GraphModule) -> list[ExpertUse]:
    """Every matmul of ``gm`` that applies fused 3-D expert weights to routed rows, in graph order."""
    return [use for node in gm.graph.nodes if (use := expert_use(node, gm)) is not None]
