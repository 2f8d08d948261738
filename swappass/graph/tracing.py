"""Capture a model as a torch.fx graph whose nodes know the module and parameter they came from.

:func:`capture` traces with ``torch.export`` (non-strict) and falls back to ``torch.fx.symbolic_trace`` for
plain modules. Either way the result is a :class:`CapturedGraph` around an ``fx.GraphModule`` whose ``get_attr``
nodes resolve to the **user's own** ``nn.Parameter`` objects (shared, not copied): writing pruned values into
the model is seen by the graph and the other way round. Every node carries a :class:`NodeSource`.

Graphs are captured in eval mode with static shapes: one graph serves every model input with the same
structure, shapes and dtypes (its :attr:`CapturedGraph.signature`); inputs of another shape need their own
capture (:class:`swappass.PreparedModel` does that on demand).
"""
from __future__ import annotations

import inspect
import linecache
import os
import traceback
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.fx as fx
from torch import nn
from torch.utils import _pytree as pytree

from ..core.errors import InputError

__all__ = [
    "CaptureError",
    "CapturedGraph",
    "NodeSource",
    "ModelInput",
    "capture",
    "capture_call",
    "as_call",
    "normalize_call",
    "input_signature",
    "move_to",
]

ModelInput = Any
"""One model call: a tensor (one positional argument), a tuple/list (positional arguments) or a dict (keywords)."""

NODE_SOURCE = "swappass_source"


class CaptureError(InputError, RuntimeError):
    """The model could not be traced into a graph; the message names the failing construct and what to try."""


@dataclass(frozen=True)
class NodeSource:
    """Where a graph node comes from in the user's model.

    ``module``: dotted path of the innermost module whose forward produced the node (``""`` = the model).
    ``module_type``: that module's class name. ``param``: for ``get_attr`` nodes, the parameter/buffer name.
    """

    module: str
    module_type: str
    param: str | None = None


# ------------------------------------------------------------------------------------------------ inputs
def as_call(model: nn.Module, sample: ModelInput) -> tuple[tuple, dict]:
    """``(args, kwargs)`` for ``model(*args, **kwargs)`` from one calibration item (see :func:`normalize_call`)."""
    if isinstance(sample, torch.Tensor):
        return normalize_call(model, (sample,), {})
    if isinstance(sample, Mapping):
        return normalize_call(model, (), dict(sample))
    if isinstance(sample, (tuple, list)):
        return normalize_call(model, tuple(sample), {})
    raise TypeError(
        f"a model input must be a tensor, a tuple/list of positional arguments or a dict of keyword "
        f"arguments, got {type(sample).__name__}"
    )


def normalize_call(model: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Canonical ``(args, kwargs)``: keywords sorted by name; Hugging Face models whose ``forward`` takes
    ``use_cache`` get ``use_cache=False`` unless it is given (calibration must not build KV caches)."""
    kwargs = dict(kwargs)
    if "use_cache" not in kwargs and _hf_takes_use_cache(model):
        kwargs["use_cache"] = False
    return tuple(args), dict(sorted(kwargs.items()))


def _hf_takes_use_cache(model: nn.Module) -> bool:
    """Whether ``model`` is a Hugging Face model (it has a ``config``) whose forward takes ``use_cache``; composite
    configs (vision-language, encoder-decoder) keep ``use_cache`` in a sub-config, so the signature decides."""
    if getattr(model, "config", None) is None:
        return False
    try:
        return "use_cache" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def input_signature(args: tuple, kwargs: dict) -> tuple:
    """Hashable key of a call's structure, tensor shapes/dtypes and non-tensor values (one key = one graph)."""
    leaves, spec = pytree.tree_flatten((args, kwargs))
    desc = tuple(
        ("T", tuple(x.shape), str(x.dtype)) if isinstance(x, torch.Tensor) else ("V", repr(x)) for x in leaves
    )
    return (str(spec), desc)


def move_to(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor leaf moved to ``device``."""
    return pytree.tree_map(lambda x: x.to(device) if isinstance(x, torch.Tensor) else x, value)


# ------------------------------------------------------------------------------------------------ graph
class CapturedGraph:
    """A traced model: an ``fx.GraphModule`` sharing the user's parameters, with node provenance.

    Attributes:
        model: the user's model.
        graph_module: the graph (``get_attr`` nodes resolve to the model's own parameters and buffers).
        method: ``"export"`` or ``"symbolic_trace"``.
        signature: :func:`input_signature` of the example input the graph was captured for.
    """

    def __init__(
        self, model: nn.Module, graph_module: fx.GraphModule, method: str, args: tuple, kwargs: dict, in_spec: Any
    ) -> None:
        self.model = model
        self.graph_module = graph_module
        self.method = method
        self.signature = input_signature(args, kwargs)
        self._in_spec = in_spec
        self._placeholders = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
        if method == "symbolic_trace":
            self._forward_params = [
                p for p in inspect.signature(model.forward).parameters.values()
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            ]

    @property
    def placeholders(self) -> list[fx.Node]:
        return list(self._placeholders)

    def flatten(self, args: tuple, kwargs: dict) -> list[Any]:
        """Values of the graph's placeholders, in order, for the call ``model(*args, **kwargs)``."""
        if input_signature(args, kwargs) != self.signature:
            raise InputError(
                "this input differs in structure, shape or dtype from the example the graph was captured for; "
                "capture the model again for it"
            )
        if self.method == "export":
            leaves, spec = pytree.tree_flatten((tuple(args), kwargs))
            if spec != self._in_spec or len(leaves) != len(self._placeholders):
                raise InputError(f"input structure {spec} does not match the captured graph's {self._in_spec}")
            return leaves
        bound = inspect.signature(self.model.forward).bind(*args, **kwargs)
        bound.apply_defaults()
        return [bound.arguments[p.name] for p in self._forward_params][: len(self._placeholders)]

    def source(self, node: fx.Node) -> NodeSource:
        """The :class:`NodeSource` of ``node`` (computed at capture; recomputed for nodes added later)."""
        src = node.meta.get(NODE_SOURCE)
        if src is None:
            src = _node_source(node, self.model)
            node.meta[NODE_SOURCE] = src
        return src

    def __repr__(self) -> str:
        n = sum(1 for _ in self.graph_module.graph.nodes)
        return f"CapturedGraph({type(self.model).__name__}, method={self.method!r}, nodes={n})"


def _module_types(model: nn.Module) -> dict[str, str]:
    return {name: type(m).__name__ for name, m in model.named_modules()}


def _node_source(node: fx.Node, model: nn.Module, types: dict[str, str] | None = None) -> NodeSource:
    types = types if types is not None else _module_types(model)
    if node.op == "get_attr":
        module = node.target.rpartition(".")[0]
        return NodeSource(module, types.get(module, ""), node.target)
    if node.op == "call_module":
        return NodeSource(node.target, types.get(node.target, ""))
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, _ = list(stack.values())[-1]
        path = _clean_path(str(path))
        return NodeSource(path, types.get(path, ""))
    return NodeSource("", type(model).__name__)


def _clean_path(path: str) -> str:
    """``L['self'].model.layers[0]`` style paths (older torch) -> ``model.layers.0``."""
    if path.startswith("L['self']"):
        path = path[len("L['self']"):].lstrip(".")
    return path.replace("[", ".").replace("]", "").replace("'", "").replace('"', "")


def _annotate(captured: CapturedGraph) -> None:
    types = _module_types(captured.model)
    for node in captured.graph_module.graph.nodes:
        node.meta[NODE_SOURCE] = _node_source(node, captured.model, types)


# ------------------------------------------------------------------------------------------------ tracing
class _LinearTracer(fx.Tracer):
    """fx tracer that traces *through* ``nn.Linear`` (so its weight appears as a ``get_attr`` + ``F.linear``)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, nn.Linear):
            return False
        return super().is_leaf_module(m, module_qualified_name)


def _export(model: nn.Module, args: tuple, kwargs: dict) -> CapturedGraph:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(model, args, kwargs, strict=False)
    gm = ep.module()
    _bind_user_tensors(gm, model)
    return CapturedGraph(model, gm, "export", args, kwargs, ep.call_spec.in_spec)


def _bind_user_tensors(gm: nn.Module, model: nn.Module) -> None:
    """Make the graph's parameters and buffers the model's own objects (they usually are already)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = dict(model.named_buffers(remove_duplicate=False))
    for name, value in list(gm.named_parameters(remove_duplicate=False)):
        if name in params and params[name] is not value:
            owner, _, attr = name.rpartition(".")
            setattr(gm.get_submodule(owner) if owner else gm, attr, params[name])
    for name, value in list(gm.named_buffers(remove_duplicate=False)):
        if name in buffers and buffers[name] is not value:
            owner, _, attr = name.rpartition(".")
            (gm.get_submodule(owner) if owner else gm)._buffers[attr] = buffers[name]


def _symbolic_trace(model: nn.Module, args: tuple, kwargs: dict) -> CapturedGraph:
    params = inspect.signature(model.forward).parameters.values()
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        raise TypeError(f"{type(model).__name__}.forward takes *args/**kwargs, which symbolic_trace cannot bind")
    bound = inspect.signature(model.forward).bind(*args, **kwargs)
    bound.apply_defaults()
    concrete = {k: v for k, v in bound.arguments.items() if not isinstance(v, torch.Tensor)}
    graph = _LinearTracer().trace(model, concrete_args=concrete or None)
    gm = fx.GraphModule(model, graph, class_name=type(model).__name__)
    return CapturedGraph(model, gm, "symbolic_trace", args, kwargs, None)


def capture(model: nn.Module, example_inputs: ModelInput, *, method: str = "auto") -> CapturedGraph:
    """Trace ``model`` for inputs like ``example_inputs`` into a :class:`CapturedGraph`.

    Args:
        model: any ``nn.Module`` (Hugging Face models included; they get ``use_cache=False``).
        example_inputs: one model call: a tensor, a tuple of positional arguments or a dict of keywords.
        method: ``"export"`` (``torch.export``, non-strict), ``"symbolic_trace"`` (``torch.fx``), or
            ``"auto"``: export, falling back to symbolic_trace.

    The graph is captured in eval mode (the model's training flag is restored afterwards). Raises
    :class:`CaptureError` naming the failing module and source line, with what to try, if tracing fails.
    """
    return capture_call(model, *as_call(model, example_inputs), method=method)


def capture_call(model: nn.Module, args: tuple, kwargs: dict, *, method: str = "auto") -> CapturedGraph:
    """:func:`capture` for the call ``model(*args, **kwargs)`` (arguments as :func:`normalize_call` gives them)."""
    if method not in ("auto", "export", "symbolic_trace"):
        raise InputError(f"capture method must be 'auto', 'export' or 'symbolic_trace', got {method!r}")
    tracers = {"export": _export, "symbolic_trace": _symbolic_trace}
    order = ["export", "symbolic_trace"] if method == "auto" else [method]
    failures: list[tuple[str, BaseException]] = []
    was_training = model.training
    model.eval()
    try:
        for name in order:
            try:
                captured = tracers[name](model, args, kwargs)
            except Exception as exc:  # tracing errors come in many types; all are reported below
                failures.append((name, exc))
                continue
            _annotate(captured)
            return captured
    finally:
        model.train(was_training)
    raise CaptureError(_failure_message(model, failures)) from failures[-1][1]


# ------------------------------------------------------------------------------------------------ diagnostics
_TORCH_DIR = os.path.dirname(torch.__file__)
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _failure_message(model: nn.Module, failures: list[tuple[str, BaseException]]) -> str:
    lines = [f"could not capture {type(model).__name__} as a graph:"]
    for name, exc in failures:
        where = _failing_construct(model, exc)
        text = str(exc).strip().splitlines()
        first = next((ln for ln in text if ln.strip()), "")
        lines.append(f"  - {name}: {type(exc).__name__}: {first[:300]}")
        if where:
            lines.append(f"    failing construct: {where}")
    lines.append("what to try:")
    lines.extend(f"  - {hint}" for hint in _hints(failures))
    return "\n".join(lines)


def _failing_construct(model: nn.Module, exc: BaseException) -> str:
    """``module 'a.b' (Class), file:line: code`` for the innermost model frame of the traceback."""
    names = {id(m): n for n, m in model.named_modules()}
    tb_frames: list[traceback.FrameSummary] = []
    module_desc = ""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        tb = e.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            owner = frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and id(owner) in names:
                label = names[id(owner)] or "<model>"
                module_desc = f"module '{label}' ({type(owner).__name__})"
            filename = frame.f_code.co_filename
            if not filename.startswith(_TORCH_DIR) and not os.path.abspath(filename).startswith(_PACKAGE_DIR):
                tb_frames.append(traceback.FrameSummary(frame.f_code.co_filename, tb.tb_lineno, frame.f_code.co_name))
            tb = tb.tb_next
        e = e.__cause__ or e.__context__
    if not tb_frames:
        return module_desc
    last = tb_frames[-1]
    code = linecache.getline(last.filename, last.lineno or 0).strip()
    loc = f"{os.path.basename(last.filename)}:{last.lineno} in {last.name}(): {code}"
    return f"{module_desc}, {loc}" if module_desc else loc


def _hints(failures: list[tuple[str, BaseException]]) -> list[str]:
    text = " ".join(f"{type(e).__name__} {e}" for _, e in failures).lower()
    hints = []
    if "data-dependent" in text or "control flow" in text or "guard" in text or ".item()" in text:
        hints.append(
            "the model branches on tensor values (if/while on a tensor, .item(), .tolist()): make that code "
            "independent of the data (torch.where, torch.cond) or move it out of forward"
        )
    if "expert" in text:
        hints.append(
            "mixture-of-experts models: transformers' experts_implementation='eager' loops over the experts that were "
            "hit (data-dependent); load the model with experts_implementation='grouped_mm' (the default) or "
            "'batched_mm', or call model.set_experts_implementation('grouped_mm')"
        )
    if "cache" in text:
        hints.append("pass use_cache=False in the model inputs (no KV cache during calibration)")
    hints.append("put the model in eval mode and call it with plain tensors of a fixed shape")
    hints.append("Hugging Face models: load with attn_implementation='eager' or 'sdpa'")
    hints.append("try the other tracer: capture(..., method='export') or method='symbolic_trace'")
    return hints
