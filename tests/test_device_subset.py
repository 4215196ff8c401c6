"""The device path uses only what MicroPython has (DESIGN.md decision 1).

CPython accepts calls MicroPython lacks (`Task.result()` ended a board's link for good), and
they only show when that path runs under MicroPython. This check asks microfang's own
MicroPython which attributes of asyncio, its Task, Event, Lock and streams, and the builtin
types it lacks that CPython has, then flags every use of such a name in firmware/ (attributes
firmware/ defines itself excepted), and every module firmware/ imports outside a
`try: ... except ImportError` that MicroPython cannot import (port.py, the port layer, aside)."""

import ast
import asyncio
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
PROBE = Path(__file__).parent / "device" / "probe_names.py"


async def _nothing():
    pass


async def _cpython_objects():
    return {"asyncio": asyncio, "Task": asyncio.create_task(_nothing()), "Event": asyncio.Event(),
            "Lock": asyncio.Lock(), "StreamReader": asyncio.StreamReader, "StreamWriter": asyncio.StreamWriter,
            "str": "", "bytes": b"", "bytearray": bytearray(), "dict": {}, "list": [], "set": set(), "int": 0,
            "memoryview": memoryview(b"")}


@pytest.fixture(scope="module")
def missing_on_micropython(micropython, tmp_path_factory):
    """{name: [labels]} for the names CPython's objects have (under those labels) and MicroPython
    has on none of them; a name only some lack (bytearray.pop, dict.pop) cannot be told apart
    by name alone and is left out."""
    objects = asyncio.run(_cpython_objects())
    names = tmp_path_factory.mktemp("probe") / "names.txt"
    names.write_text("".join(f"{label} {name}\n" for label, obj in objects.items() for name in dir(obj)
                             if not name.startswith("__")), encoding="utf-8")
    proc = subprocess.run([str(micropython), str(PROBE), str(names)], capture_output=True, text=True, timeout=60,
                          check=True)
    missing: dict[str, list[str]] = {}
    for line in proc.stdout.split("\n"):
        if line:
            label, name = line.split()
            missing.setdefault(name, []).append(label)
    having = {name: [label for label, obj in objects.items() if hasattr(obj, name)] for name in missing}
    return {name: labels for name, labels in missing.items() if labels == having[name]}


def defined_names(trees):
    """Attribute names firmware/ gives its own objects: functions, classes, self.x = ..."""
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def guarded_imports(tree):
    """Import nodes inside a try whose handlers catch ImportError (optional features)."""
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any("ImportError" in ast.unparse(h.type or ast.Name("")) for h in node.handlers):
            for inner in node.body:
                guarded.update(id(n) for n in ast.walk(inner) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return guarded


def cpython_only_uses(sources, missing):
    """'file:line: name (what lacks it)' for each use in `sources` ({name: text})."""
    trees = {name: ast.parse(text) for name, text in sources.items()}
    own = defined_names(trees.values())
    found = []
    for file, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in missing and node.attr not in own:
                found.append(f"{file}:{node.lineno}: .{node.attr} (MicroPython's {', '.join(missing[node.attr])} "
                             "lacks it)")
    return found


def top_imports(sources):
    """{module: 'file:line'} imported by `sources` outside an ImportError guard."""
    modules = {}
    for file, text in sources.items():
        tree = ast.parse(text)
        guarded = guarded_imports(tree)
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    modules.setdefault(alias.name, f"{file}:{node.lineno}")
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.setdefault(node.module, f"{file}:{node.lineno}")
    return modules


def firmware_sources():
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(FIRMWARE.glob("*.py"))}


def test_the_check_flags_a_task_result_call(missing_on_micropython):
    bad = {"bad.py": "async def f(reader):\n    if reader.done():\n        reader.result()\n"}
    assert cpython_only_uses(bad, missing_on_micropython) == [
        "bad.py:3: .result (MicroPython's Task lacks it)"]


def test_firmware_calls_nothing_micropython_lacks(missing_on_micropython):
    assert cpython_only_uses(firmware_sources(), missing_on_micropython) == []


def test_firmware_imports_only_modules_micropython_has(micropython):
    # port.py is the port layer: the one module allowed to import per runtime (littlefs-python on
    # CPython, ssl only when a board's config asks for TLS).
    sources = {name: text for name, text in firmware_sources().items() if name != "port.py"}
    modules = top_imports(sources)
    script = "".join(f"try:\n import {m}\nexcept ImportError:\n print('{m}')\n" for m in sorted(modules))
    proc = subprocess.run([str(micropython), "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert [f"{modules[m]}: import {m}" for m in proc.stdout.split()] == []
