"""Linear sites of a captured graph: which weights compute ``y = x Wᵀ``, what they read, which to prune.

A :class:`Site` is one weight parameter of the user's model used by one or more Linear computations:

* ``aten.linear`` / ``F.linear`` (``nn.Linear``): weight stored ``d_out × d_in``;
* ``aten.addmm`` / ``mm`` / ``matmul`` with the weight as the right operand (GPT-2's ``Conv1D``,
  ``x @ W``): weight stored ``d_in × d_out`` (``transposed=True``; rows of the pattern are the stored
  tensor's columns). A ``.t()`` of the weight in between flips the orientation back.

* fused mixture-of-experts weights ``(E, d_out, d_in)`` (:mod:`swappass.graph.experts`): **one site per
  expert** (``expert`` = its index, name ``PARAM[e]``), whose input is only the rows the router sends to that
  expert (``routes``: the offsets or expert ids of :mod:`swappass.core.routing`).

Sites whose inputs are the same graph values share one Gram matrix (a :class:`GramGroup`: q/k/v, gate/up).
The input of a site is looked up through reshapes that keep the last dimension (``x.view(-1, d_in)``), so
siblings reading views of one tensor still share. Expert sites share only with sites of the same expert that read
the same rows (never across experts). Routers, shared-expert gates and the vision side of a vision-language model
have a ``role`` (:mod:`swappass.graph.roles`) and stay dense unless ``targets`` selects them.
"""
from __future__ import annotations

import operator
import re
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..core.errors import InputError
from ..core.patterns import SparsityPattern
from .experts import expert_use
from .roles import ROLE_REASONS, is_sigmoid_gate, language_model_path, multimodal_role, reaches_topk
from .tracing import CapturedGraph

__all__ = ["Site", "GramGroup", "find_sites", "select_sites", "gram_groups", "DEFAULT_IGNORE", "Selector"]

Selector = str
"""A module name (``"lm_head"``, also matching as a dotted suffix: ``"q_proj"``), a parameter name, a class
name (``"Conv1D"``) or a regular expression ``"re:<pattern>"`` (``re.match`` against the names)."""

DEFAULT_IGNORE: tuple[str, ...] = ("lm_head",)

aten = torch.ops.aten

# op -> (index of the input argument, index of the weight argument, weight stored d_in x d_out)
_LINEAR_OPS: dict[object, tuple[int, int, bool]] = {
    aten.linear.default: (0, 1, False),
    F.linear: (0, 1, False),
    torch._C._nn.linear: (0, 1, False),
    aten.addmm.default: (1, 2, True),
    torch.addmm: (1, 2, True),
    aten.mm.default: (0, 1, True),
    torch.mm: (0, 1, True),
    aten.matmul.default: (0, 1, True),
    torch.matmul: (0, 1, True),
    operator.matmul: (0, 1, True),
}
_TRANSPOSE_OPS = {aten.t.default, aten.numpy_T.default, torch.t}
_ROW_PRESERVING = {
    aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.alias.default,
    aten.contiguous.default, aten.clone.default, aten.flatten.using_ints,
}


@dataclass
class Site:
    """One prunable weight and the Linear computations that use it (in one captured graph).

    ``name``: the weight's parameter name without ``.weight`` (``model.layers.0.self_attn.q_proj``).
    ``shape``: ``(d_out, d_in)``, the orientation the pattern and masks use. ``transposed``: the parameter is
    stored ``d_in × d_out``. ``ops``/``inputs``: the graph's Linear nodes and the value each reads.
    ``status``: ``"active"`` (to prune), ``"ignored"`` (deselected) or ``"skipped"`` (pattern cannot apply).
    ``expert``: for one expert of a fused 3-D parameter, its index along the first axis (``weight`` is the whole
    parameter, :meth:`stored` this expert's matrix); ``routes`` (one per input) and ``layout`` say which rows of
    the input the router sends to it. ``role``: ``"router"``, ``"expert gate"``, ``"vision tower"``,
    ``"projector"`` or ``""`` (see :mod:`swappass.graph.roles`).
    """

    name: str
    param_name: str
    module: str
    module_type: str
    weight: nn.Parameter
    transposed: bool
    ops: list[fx.Node] = field(default_factory=list)
    inputs: list[fx.Node] = field(default_factory=list)
    aliases: tuple[str, ...] = ()
    status: str = "active"
    reason: str = ""
    expert: int | None = None
    routes: list[fx.Node] = field(default_factory=list)
    layout: str | None = None
    role: str = ""

    def stored(self) -> torch.Tensor:
        """The site's matrix as stored (a view of the parameter's data, no copy): the parameter itself, or one
        expert's slice ``weight[expert]`` of a fused parameter."""
        data = self.weight.detach()
        return data[self.expert] if self.expert is not None else data

    @property
    def shape(self) -> tuple[int, int]:
        d0, d1 = self.stored().shape
        return (d1, d0) if self.transposed else (d0, d1)

    @property
    def d_in(self) -> int:
        return self.shape[1]

    @property
    def num_experts(self) -> int | None:
        """Experts in the fused parameter of an expert site (None for other sites)."""
        return int(self.weight.shape[0]) if self.expert is not None else None

    def user_weight(self) -> torch.Tensor:
        """The weight as ``d_out × d_in`` (a view of the parameter's data, no copy)."""
        w = self.stored()
        return w.T if self.transposed else w

    def names(self) -> tuple[str, ...]:
        return (self.name, self.param_name, self.module, *self.aliases)


@dataclass
class GramGroup:
    """Active sites that read the same input values and therefore share one Gram matrix."""

    key: str
    sites: list[Site]
    inputs: list[fx.Node]
    level: int = 0
    routes: list[fx.Node] = field(default_factory=list)
    layout: str | None = None
    expert: int | None = None

    @property
    def num_experts(self) -> int | None:
        return self.sites[0].num_experts

    @property
    def d_in(self) -> int:
        return self.sites[0].d_in

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sites]


def _weight_node(node: fx.Node, arg: int) -> tuple[fx.Node | None, bool]:
    """The ``get_attr`` node of a Linear op's weight argument, and whether a transpose sits in between."""
    w = node.args[arg] if len(node.args) > arg else None
    flipped = False
    if isinstance(w, fx.Node) and w.op == "call_function" and (
        w.target in _TRANSPOSE_OPS
        or (w.target == aten.transpose.int and sorted(int(d) % 2 for d in w.args[1:3]) == [0, 1])
        or (w.target == aten.permute.default and list(w.args[1]) == [1, 0])
    ):
        w, flipped = w.args[0], True
    elif isinstance(w, fx.Node) and w.op == "call_method" and w.target == "t":
        w, flipped = w.args[0], True
    elif isinstance(w, fx.Node) and w.op == "call_function" and w.target is getattr and w.args[1] in ("T", "mT"):
        w, flipped = w.args[0], True
    if isinstance(w, fx.Node) and w.op == "get_attr":
        return w, flipped
    return None, False


def _last_dim(node: fx.Node) -> int | None:
    val = node.meta.get("val", node.meta.get("example_value"))
    if isinstance(val, torch.Tensor) and val.dim() > 0:
        return int(val.shape[-1])
    tm = node.meta.get("tensor_meta")
    if tm is not None and len(tm.shape) > 0:
        return int(tm.shape[-1])
    return None


def _canonical_input(x: fx.Node, d_in: int) -> fx.Node:
    """Follow reshapes that keep the rows (last dimension ``d_in`` on both sides) back to their source."""
    while (
        x.op == "call_function"
        and x.target in _ROW_PRESERVING
        and isinstance(x.args[0], fx.Node)
        and _last_dim(x) == d_in
        and _last_dim(x.args[0]) == d_in
    ):
        x = x.args[0]
    return x


_EMBEDDING_OPS = {aten.embedding.default: 0, F.embedding: 1, torch.embedding: 0}  # op -> weight argument


def _embedding_weights(model: nn.Module, gm: fx.GraphModule) -> dict[int, str]:
    """id(parameter) -> a name, for weights used as embedding tables (nn.Embedding or an embedding op)."""
    out = {id(m.weight): f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Embedding)}
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in _EMBEDDING_OPS:
            w = node.args[_EMBEDDING_OPS[node.target]]
            if isinstance(w, fx.Node) and w.op == "get_attr":
                out.setdefault(id(_fetch_attr(gm, w.target)), w.target)
    return out


def _fetch_attr(root: nn.Module, target: str):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def find_sites(captured: CapturedGraph) -> list[Site]:
    """All Linear sites of ``captured`` (weights with ≥ 2 dimensions read by a Linear op, and one site per expert
    of every fused 3-D expert parameter), in graph order, with their roles.

    A weight used by several Linear ops (weight sharing) is one site with several ops. Weights tied to an
    embedding table are marked ``ignored`` (pruning them would prune the embedding).
    """
    gm, model = captured.graph_module, captured.model
    aliases: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(p), []).append(name)
    embeddings = _embedding_weights(model, gm)
    sites: dict[tuple[int, int | None], Site] = {}
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if node.target in _LINEAR_OPS:
            _add_linear(captured, node, sites, aliases, embeddings)
        elif (use := expert_use(node, gm)) is not None:
            _add_experts(captured, use, sites, aliases)
    found = list(sites.values())
    _assign_roles(found, model)
    return found


def _new_site(captured: CapturedGraph, node: fx.Node, wnode: fx.Node, weight: nn.Parameter, transposed: bool,
              aliases: dict[int, list[str]], expert: int | None = None) -> Site:
    names = aliases.get(id(weight), [wnode.target])
    param_name = wnode.target if wnode.target in names else names[0]
    base = param_name[: -len(".weight")] if param_name.endswith(".weight") else param_name
    src = captured.source(node)
    return Site(
        name=base if expert is None else f"{base}[{expert}]", param_name=param_name, module=src.module,
        module_type=src.module_type, weight=weight, transposed=transposed,
        aliases=tuple(n for n in names if n != param_name), expert=expert,
    )


_SLICING = {aten.split_with_sizes.default, aten.split.Tensor, aten.slice.Tensor, aten.narrow.default,
            aten.chunk.default}
SLICED_REASON = ("applied in slices (a packed projection such as nn.MultiheadAttention's in_proj_weight used as "
                 "separate q and k/v weights): not a site swappass prunes; left dense")


def _sliced_parameter(node: fx.Node, w_idx: int) -> fx.Node | None:
    """The ``get_attr`` node of a 2-D parameter whose slice (split / slice / chunk, possibly via getitem) is the
    weight argument of a Linear op, else None."""
    w = node.args[w_idx] if len(node.args) > w_idx else None
    if isinstance(w, fx.Node) and w.op == "call_function" and w.target is operator.getitem:
        w = w.args[0]
    if isinstance(w, fx.Node) and w.op == "call_function" and w.target in _SLICING:
        src = w.args[0]
        if isinstance(src, fx.Node) and src.op == "get_attr":
            return src
    return None


def _add_sliced(captured, node, w_idx, sites, aliases) -> None:
    """A parameter applied in slices is listed (skipped, with the reason), not pruned."""
    wnode = _sliced_parameter(node, w_idx)
    weight = _fetch_attr(captured.graph_module, wnode.target) if wnode is not None else None
    if not isinstance(weight, nn.Parameter) or weight.dim() != 2 or (id(weight), None) in sites:
        return
    site = sites[(id(weight), None)] = _new_site(captured, node, wnode, weight, False, aliases)
    site.status, site.reason = "skipped", SLICED_REASON


def _add_linear(captured, node, sites, aliases, embeddings) -> None:
    in_idx, w_idx, transposed = _LINEAR_OPS[node.target]
    wnode, flipped = _weight_node(node, w_idx)
    if wnode is None:
        _add_sliced(captured, node, w_idx, sites, aliases)
        return
    weight = _fetch_attr(captured.graph_module, wnode.target)
    if not isinstance(weight, nn.Parameter) or weight.dim() != 2 or not weight.is_floating_point():
        return
    transposed ^= flipped
    x = node.args[in_idx]
    if not isinstance(x, fx.Node):
        return
    site = sites.get((id(weight), None))
    if site is None:
        site = sites[(id(weight), None)] = _new_site(captured, node, wnode, weight, transposed, aliases)
        if id(weight) in embeddings:
            site.status, site.reason = "ignored", f"weight tied to the embedding {embeddings[id(weight)]}"
    elif site.transposed != transposed:
        site.status, site.reason = "ignored", "weight used in both orientations"
    site.ops.append(node)
    site.inputs.append(_canonical_input(x, site.d_in))


def _add_experts(captured, use, sites, aliases) -> None:
    """One site per expert of the fused parameter that ``use`` applies."""
    weight = _fetch_attr(captured.graph_module, use.weight.target)
    for e in range(weight.shape[0]):
        site = sites.get((id(weight), e))
        if site is None:
            site = sites[(id(weight), e)] = _new_site(captured, use.op, use.weight, weight, use.transposed, aliases,
                                                      expert=e)
            site.layout = use.layout
        elif site.transposed != use.transposed or site.layout != use.layout:
            site.status, site.reason = "ignored", "expert weight used in two layouts"
        site.ops.append(use.op)
        site.inputs.append(use.input)
        site.routes.append(use.route)


def _assign_roles(sites: Sequence[Site], model: nn.Module) -> None:
    """Mark routers, shared-expert gates and the vision side of a vision-language model (dense by default)."""
    linear_ops = {op for s in sites if s.expert is None for op in s.ops}
    language_model = language_model_path(model)
    for site in sites:
        if site.expert is not None:
            continue
        if any(reaches_topk(op, linear_ops) for op in site.ops):
            site.role = "router"
        elif any(is_sigmoid_gate(op, site.shape[0], linear_ops) for op in site.ops):
            site.role = "expert gate"
        elif language_model is not None:
            site.role = multimodal_role(site.module, language_model) or ""


def _matches(selector: Selector, site: Site, ancestors: bool = True) -> bool:
    """Whether ``selector`` names ``site``: its name, parameter, module, class or aliases (exactly or as a dotted
    suffix), a regular expression matching one of them, or (``ancestors``) a module that contains it
    (``vision_tower``, ``model.layers.0``)."""
    if selector.startswith("re:"):
        rx = re.compile(selector[3:])
        return any(rx.match(n) for n in site.names())
    if selector == site.module_type:
        return True
    if any(n == selector or n.endswith("." + selector) for n in site.names()):
        return True
    if ancestors:
        parts = site.module.split(".")
        for i in range(1, len(parts)):
            path = ".".join(parts[:i])
            if path == selector or path.endswith("." + selector):
                return True
    return False


def select_sites(
    sites: Sequence[Site],
    targets: Iterable[Selector] | None = None,
    ignore: Iterable[Selector] | None = None,
    pattern: SparsityPattern | None = None,
    output_weights: Iterable[nn.Parameter] = (),
) -> list[Site]:
    """Mark each site ``active``, ``ignored`` or ``skipped`` (in place) and return the active ones.

    ``targets``: only sites matching one of these selectors are pruned (default: all). ``ignore``: sites
    matching one of these are not (default :data:`DEFAULT_IGNORE` plus ``output_weights``, the model's output
    projection). Weights tied to an embedding are always ignored. Sites with a role (routers, shared-expert
    gates, the vision tower and projector of a vision-language model) are ignored unless a ``targets``
    selector matches them (routers and gates: by their own name, not through a containing module). Sites
    whose shape cannot take ``pattern`` are ``skipped`` with a warning.
    """
    targets = list(targets) if targets is not None else None
    default_ignore = ignore is None
    ignore = list(DEFAULT_IGNORE if ignore is None else ignore)
    outputs = {id(p) for p in output_weights} if default_ignore else set()
    for sel in (targets or []) + ignore:
        if not isinstance(sel, str):
            raise TypeError(f"site selectors must be strings (names, class names or 're:<regex>'), got {sel!r}")
    used: set[str] = set()
    for site in sites:
        if site.status != "active":
            continue
        chosen = False
        if targets is not None:
            hit = [t for t in targets if _matches(t, site)]
            used.update(hit)
            if not hit:
                site.status, site.reason = "ignored", "not matched by targets"
                continue
            chosen = site.role not in ("router", "expert gate") or any(_matches(t, site, False) for t in hit)
        if site.role and not chosen:
            site.status, site.reason = "ignored", ROLE_REASONS[site.role]
            continue
        hit = [i for i in ignore if _matches(i, site)]
        used.update(hit)
        if hit:
            site.status, site.reason = "ignored", f"matched ignore {hit[0]!r}"
        elif id(site.weight) in outputs:
            site.status, site.reason = "ignored", "output projection of the model (lm_head)"
        elif pattern is not None and (err := pattern.shape_error(*site.shape)) is not None:
            site.status, site.reason = "skipped", err
            shape = f"{site.shape[0]}×{site.shape[1]}"
            warnings.warn(f"swappass: skipping {site.name} (shape {shape}): {err}", stacklevel=3)
    unused = [s for s in (targets or []) + (ignore if not default_ignore else []) if s not in used]
    if unused:
        warnings.warn(f"swappass: selectors matched no Linear site: {unused}", stacklevel=3)
    active = [s for s in sites if s.status == "active"]
    if targets is not None and not active:
        names = ", ".join(s.name for s in sites[:8])
        raise InputError(f"targets {targets} matched no prunable Linear site; the sites are: {names}")
    return active


def gram_groups(sites: Sequence[Site]) -> list[GramGroup]:
    """Group active sites by the set of graph values they read (one Gram matrix per group), in graph order; expert
    sites by the rows they read (their inputs, routes and expert index), so experts never share."""
    groups: dict[tuple, GramGroup] = {}
    for site in sites:
        if site.status != "active":
            continue
        pairs = list(dict.fromkeys(zip(site.inputs, site.routes or [None] * len(site.inputs))))
        key = (tuple(sorted((x.name, r.name if r is not None else "") for x, r in pairs)), site.expert)
        if key not in groups:
            groups[key] = GramGroup(key="", sites=[], inputs=[x for x, _ in pairs],
                                    routes=[r for _, r in pairs if r is not None], layout=site.layout,
                                    expert=site.expert)
        groups[key].sites.append(site)
    for g in groups.values():
        g.key = "+".join(s.name for s in g.sites)
    return list(groups.values())
