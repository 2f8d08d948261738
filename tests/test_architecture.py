"""The package's layout holds: the import-linter contracts of pyproject.toml (layers, what onnx and lm may import,
no circle in any folder), no private name used across modules, nothing importing the public face from inside the
package, and no module above ~500 lines without a stated reason (docs/ARCHITECTURE.md)."""
from __future__ import annotations

import ast
import contextlib
import io
import os
from pathlib import Path

import grimp
from importlinter.cli import lint_imports

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "swappass"
MAX_LINES = 500


def test_import_contracts_are_kept():
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        with contextlib.redirect_stdout(out):
            code = lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True)
    finally:
        os.chdir(cwd)
    assert code == 0, out.getvalue()[-4000:]


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _resolve(module: str | None, level: int, importer: str, is_package: bool) -> str:
    """The absolute module an ``ImportFrom`` names (``level`` dots relative to ``importer``)."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def private_uses(path: Path) -> list[str]:
    """``file:line name`` for every private name of another swappass module this file imports or reads."""
    tree = ast.parse(path.read_text())
    where = path.relative_to(REPO) if REPO in path.parents else path.name
    in_package = PACKAGE in path.parents
    importer = _module_name(path) if in_package else ""
    modules: set[str] = set()  # local names bound to swappass modules
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "swappass":
                    modules.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node.module, node.level, importer, path.name == "__init__.py")
            if target.split(".")[0] != "swappass" or target == importer:
                continue
            for alias in node.names:
                if _is_private(alias.name):
                    found.append(f"{where}:{node.lineno} {target}.{alias.name}")
                modules.add(alias.asname or alias.name)  # may be a submodule; attributes of it are checked below
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr) and isinstance(node.value, ast.Name) \
                and node.value.id in modules:
            found.append(f"{where}:{node.lineno} {node.value.id}.{node.attr}")
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("setattr", "setitem") and \
                len(node.args) >= 2 and isinstance(node.args[0], ast.Name) and node.args[0].id in modules and \
                isinstance(node.args[1], ast.Constant) and _is_private(str(node.args[1].value)):
            found.append(f"{where}:{node.lineno} {node.args[0].id}.{node.args[1].value} (patched)")
    return found


def test_no_private_name_is_used_across_modules():
    files = [p for d in ("swappass", "tests", "tools", "examples") for p in (REPO / d).rglob("*.py")]
    found = [use for p in sorted(files) for use in private_uses(p)]
    assert not found, "make these public in their layer (documented, typed):\n" + "\n".join(found)


def test_the_checker_sees_private_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from swappass.kernels import cpu\nfrom swappass.core.loss import _x\ncpu._LOADER\n"
                     "monkeypatch.setattr(cpu, '_LOADER', None)\nfrom swappass import kernels\nkernels.make_search\n")
    assert len(private_uses(probe)) == 3


def test_nothing_inside_the_package_imports_its_public_face():
    graph = grimp.build_graph("swappass")
    importers = graph.find_modules_that_directly_import("swappass") - {"swappass.__main__"}
    assert not importers, f"these import the top-level face instead of the layer that holds the name: {importers}"


def test_modules_are_short_or_say_why():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > MAX_LINES and "lines because" not in (ast.get_docstring(ast.parse(text)) or ""):
            long.append(f"{path.relative_to(REPO)} ({len(text.splitlines())} lines)")
    assert not long, f"split these, or say in their docstring why not ('... lines because ...'): {long}"
