"""The host code is lint- and type-clean: ruff and mypy, configured in pyproject.toml, on host/
and tools/ (firmware/ is checked for the MicroPython subset instead: it runs there, see
tests/test_device_runtimes.py). Part of the suite, so CI runs them."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The import names of the folders (pyproject.toml's package-dir).
LAYOUT = {"microfang": "host", "microfang/firmware": "firmware", "microfang/tools": "tools", "microfang/boards": "boards"}


def test_ruff_finds_nothing_in_host_and_tools():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "host", "tools"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def import_tree(where: Path) -> Path:
    """The sources laid out under their import names (microfang/firmware/... for firmware/...)
    as links, so mypy sees the modules as the code imports them."""
    for package, folder in LAYOUT.items():
        for source in [*(ROOT / folder).rglob("*.py"), *(ROOT / folder).rglob("*.pyi")]:
            rel = source.relative_to(ROOT / folder)
            if "cmodules" in rel.parts or (package == "microfang" and rel.parts[0] in ("firmware", "tools", "boards")):
                continue
            link = where / package / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source)
    return where / "microfang"


def test_mypy_finds_nothing_in_host_and_tools(tmp_path):
    tree = import_tree(tmp_path)
    # Everything but the firmware (pyproject.toml has mypy follow into it silently).
    targets = sorted(str(p.relative_to(tmp_path)) for p in tree.iterdir() if p.name != "firmware")
    out = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                          "--no-incremental", *targets], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600, check=False, env={**os.environ, "MYPYPATH": str(tmp_path)})
    assert out.returncode == 0, (out.stdout + out.stderr).replace(str(tmp_path) + "/", "")
