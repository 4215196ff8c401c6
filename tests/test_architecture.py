"""The import graph of microfang, read from the sources (every import statement, at module
level, in functions or under TYPE_CHECKING: a cycle hidden by a late import is still a cycle).

An edge runs from a module to each microfang module it imports: `from microfang.x import y`
counts as importing microfang.x.y when that is a module, else microfang.x. Run it on its own
with `python -m pytest -q tests/test_architecture.py`.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"microfang": ROOT / "host", "microfang.firmware": ROOT / "firmware", "microfang.tools": ROOT / "tools",
           "microfang.boards": ROOT / "boards"}
PLUGINS = ("microfang.llm", "microfang.memory", "microfang.bridges")
PLUGIN_MAY_IMPORT = ("microfang.request", "microfang.config", "microfang.httpguard",
                     "microfang.llamacpp")  # llamacpp: the one way to load a GGUF model (llm and memory)
EXTENSIONS = ("microfang._wasm3", "microfang._ed25519")  # built from C (setup.py): no source to read, imports nothing


def module_files():
    modules = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            if "cmodules" in rel.parts:
                continue
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if package == "microfang" and parts and parts[0] in ("firmware", "tools", "boards"):
                continue
            modules[name] = path
    return modules


MODULES = module_files()


def _resolve(name):
    return name if name in MODULES else None


def imports_of(module):
    """The microfang modules `module` imports (relative imports resolved)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" if _resolve(f"{base}.{alias.name}") else base for alias in node.names
                     if f"{base}.{alias.name}" not in EXTENSIONS]
        else:
            continue
        for name in names:
            while name and _resolve(name) is None and "." in name:
                name = name.rpartition(".")[0]
            if _resolve(name) and name != module:
                found.add(name)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_the_modules_and_their_imports():
    assert "microfang.gateway.core" in GRAPH["microfang.gateway.services"]
    assert "microfang.firmware.protocol" in GRAPH["microfang.firmware.link"]  # relative: from . import protocol


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_microfang_modules():
    assert cycles(GRAPH) == []


def test_plugins_import_only_the_request_module_and_config_of_the_host():
    wrong = {}
    for module, imported in GRAPH.items():
        plugin = next((p for p in PLUGINS if module == p or module.startswith(p + ".")), None)
        if plugin is None:
            continue
        bad = sorted(m for m in imported if not m.startswith(("microfang.firmware", plugin))
                     and m not in PLUGIN_MAY_IMPORT)
        if bad:
            wrong[module] = bad
    assert wrong == {}


def test_only_the_gateway_package_imports_the_gateway_core():
    users = sorted(m for m, imported in GRAPH.items() if "microfang.gateway.core" in imported)
    assert all(m.startswith("microfang.gateway") for m in users), users


def test_the_firmware_imports_nothing_from_the_host():
    wrong = {m: sorted(i for i in imported if not i.startswith("microfang.firmware"))
             for m, imported in GRAPH.items() if m.startswith("microfang.firmware")}
    assert {m: i for m, i in wrong.items() if i} == {}
