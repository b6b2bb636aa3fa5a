"""The package layout: layers import only downwards, no module imports itself back, no module is too long.

Read from the source (``ast``), so an import inside a function or an ``importlib.import_module("revbench...")``
with a literal name counts as much as a top-level one.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("revbench", "baselines")
MAX_LINES = 400

# Each layer may import its own layer and those before it, never one after it.
LAYERS = ["util", "core", "models", "baselines", "methods", "measure", "report", "tasks", "cli"]


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module an import of ``name`` loads (the longest known prefix), or None for outside code."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in MODULES:
            return cand
        parts.pop()
    return None


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            names = [src] + [f"{src}.{a.name}" for a in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            names = [node.args[0].value]
        for n in names:
            target = _resolve(n)
            if target is not None and target != module:
                found.add(target)
    # importing a.b.c also runs the __init__ of a and a.b: those are not edges of this module's own choosing
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    if parts[0] == "baselines":
        return LAYERS.index("baselines")
    if len(parts) == 1:
        return -1                               # the top-level revbench/__init__: imports nothing of its own
    return LAYERS.index(parts[1])


def test_every_module_is_in_a_layer():
    unknown = [m for m in MODULES if m != "revbench" and m.split(".")[0] == "revbench"
               and m.split(".")[1] not in LAYERS]
    assert not unknown, f"modules outside the layers {LAYERS}: {unknown}"


def test_dependencies_point_one_way():
    upward = [f"{m} ({LAYERS[layer(m)] if layer(m) >= 0 else 'top'}) imports {t} ({LAYERS[layer(t)]})"
              for m, targets in GRAPH.items() for t in sorted(targets)
              if layer(t) > layer(m) and not t.startswith(m + ".")]
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_no_import_cycles():
    # a package's __init__ importing its own submodules is how a package exposes them: not a cycle
    def edges(m):
        return {t for t in GRAPH[m] if not (t.startswith(m + "."))}

    cycles, state = [], {}

    def visit(m, stack):
        state[m] = 1
        stack.append(m)
        for t in sorted(edges(m)):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_is_small(module):
    n = len(MODULES[module].read_text().splitlines())
    assert n <= MAX_LINES, f"{MODULES[module].relative_to(ROOT)} has {n} lines (at most {MAX_LINES})"


def test_the_checker_sees_function_level_and_importlib_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import importlib\n\ndef f():\n    from revbench.core import fixedpoint\n"
                   "    importlib.import_module('revbench.report.compare')\n")
    found = _imports("revbench.cli.fake", src)
    assert {"revbench.core.fixedpoint", "revbench.report.compare"} <= found
