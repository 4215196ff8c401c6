"""`microfang inspect`: describe a bundle (.mfa) or a wasm module, as data (cli.py prints it)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from microfang.firmware import bundle
from microfang.firmware.errors import MicrofangError
from microfang.tools.wasm import binary as wb


@dataclass
class ModuleInfo:
    size: int
    sha256: str
    rows: list[tuple[str, str, str]]  # (kind, name, detail): imports, exports, memory, functions, metering


@dataclass
class Inspection:
    path: Path
    size: int
    module: ModuleInfo
    manifest: dict[str, Any] | None = None  # a bundle's; None for a bare module
    format: str = field(default=bundle.FORMAT)


def describe_module(wasm: bytes) -> ModuleInfo:
    module = wb.Module.parse(wasm)
    rows = []
    for imp in module.imports():
        detail = module.signature(imp.type_index) if imp.kind == 0 else ""
        rows.append((f"import {wb.EXTERNAL_KINDS[imp.kind]}", f"{imp.module}.{imp.field}", detail))
    for name, kind, index in module.exports():
        rows.append((f"export {wb.EXTERNAL_KINDS[kind]}", name, f"index {index}"))
    memory = module.memory()
    if memory is not None:
        maximum = "none" if memory.maximum is None else f"{memory.maximum}"
        rows.append(("memory", "", f"{memory.minimum} pages initial, max {maximum}"))
    rows.append(("functions", "", f"{len(module.function_types())} defined"))
    metered = any(imp.module == "metering" for imp in module.imports())
    rows.append(("fuel metering", "", "yes (metering.usegas)" if metered else "no"))
    return ModuleInfo(len(wasm), hashlib.sha256(wasm).hexdigest(), rows)


def inspect(path: Path) -> Inspection:
    """What the file at `path` holds; MicrofangError naming the file if it is neither a bundle
    nor a wasm module."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MicrofangError(f"{path}: cannot read: {e.strerror}") from None
    try:
        if data[:4] == wb.MAGIC[:4]:
            return Inspection(path, len(data), describe_module(data))
        manifest, wasm = bundle.decode(data)
        return Inspection(path, len(data), describe_module(wasm), manifest)
    except MicrofangError as e:
        raise MicrofangError(f"{path}: {e}") from None
