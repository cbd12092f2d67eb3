"""The layer map of DEVELOPERS.md, enforced: which folder may import which, and no import cycles.

Every ``import`` counts, also those inside functions (a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from .conftest import ROOT

# layer -> the layers it may import (besides itself).  Low layers first.
CORE_LAYERS = {
    "core": set(),                                   # the package itself: __version__
    "core.contract": set(),
    "core.link": {"core.contract"},
    "core.raster": {"core.contract"},
    "core.models": {"core.contract", "core.raster"},
    "core.lama": {"core.contract", "core.models", "core.raster"},
    "core.pipelines": {"core", "core.contract", "core.models", "core.raster", "core.lama"},
    "core.engine": {"core", "core.contract", "core.link", "core.models", "core.raster", "core.lama",
                    "core.pipelines"},
    "core.cluster": {"core", "core.contract", "core.link", "core.models", "core.pipelines", "core.engine"},
    "core.jobfiles": {"core.contract", "core.raster", "core.pipelines"},
    "core.cli": {"core", "core.contract", "core.models", "core.raster", "core.lama", "core.jobfiles", "core.engine",
                 "core.cluster", "core.devtools"},
    "core.__main__": {"core.cli"},
    "core.bench": {"core.devtools"},
    "core.fill_eval": {"core.devtools"},
    "core.devtools": {"core", "core.contract", "core.link", "core.raster", "core.models", "core.lama",
                      "core.pipelines", "core.engine", "core.jobfiles"},
}
P = "diffusion_dock"
PLUGIN_LAYERS = {
    P: {f"{P}.runtime", f"{P}.krita"},
    f"{P}.runtime": {"core.contract", "core.link"},   # runtime.coreapi loads them (and gives their types)
    f"{P}.host": {f"{P}.runtime"},
    f"{P}.session": {f"{P}.runtime", f"{P}.host"},
    f"{P}.panel": {f"{P}.runtime", f"{P}.host", f"{P}.session"},
    f"{P}.krita": {f"{P}.runtime", f"{P}.host", f"{P}.session", f"{P}.panel"},
    f"{P}.editor": {f"{P}.runtime", f"{P}.host", f"{P}.session", f"{P}.panel"},
}
LAYERS = {**CORE_LAYERS, **PLUGIN_LAYERS}


def modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in [*ROOT.glob("core/**/*.py"), *ROOT.glob(f"plugin/{P}/**/*.py")]:
        if "vendor" in path.parts or "_core" in path.parts:
            continue
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[0] == "plugin":
            parts = parts[1:]
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, (path, is_pkg) in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[name].update(t for t in targets if t in mods and t != name)
    return graph


def layer_of(module: str) -> str:
    parts = module.split(".")
    for n in (2, 1):
        if ".".join(parts[:n]) in LAYERS:
            return ".".join(parts[:n])
    raise AssertionError(f"{module} is in no layer of the map: add it to tests/test_layers.py and DEVELOPERS.md")


def test_every_import_follows_the_layer_map():
    wrong = []
    for module, targets in import_graph().items():
        mine = layer_of(module)
        for t in targets:
            theirs = layer_of(t)
            if theirs != mine and theirs not in LAYERS[mine]:
                wrong.append(f"{module} -> {t}")
    assert not wrong, "imports against the layer map:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_is_over_500_lines():
    long = [f"{p.relative_to(ROOT)}: {n}" for p, _ in modules().values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500]
    assert not long, "modules over 500 lines:\n" + "\n".join(long)


# Private names of other libraries the code has reason to use: qasync's loop integration, os._exit in a
# child that must not run atexit handlers, torch's weights-only unpickler's allow-list.
FOREIGN_PRIVATE = {"asyncio.events._get_running_loop", "asyncio.events._set_running_loop", "os._exit",
                   "wou._get_allowed_globals"}


def test_no_private_attribute_of_another_object_is_touched():
    """``x._name`` only for ``self``, ``cls`` and ``super()``: a class's private state is its own."""
    found = []
    for path, _ in modules().values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
                continue
            v = node.value
            if isinstance(v, ast.Name) and v.id in ("self", "cls"):
                continue
            if isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "super":
                continue
            if ast.unparse(node) not in FOREIGN_PRIVATE:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "private attributes of other objects:\n" + "\n".join(found)
