"""`microfang inspect`: describe a bundle (.mfa) or a wasm module."""

from __future__ import annotations

import hashlib
from pathlib import Path

from rich.table import Table

from microfang import console
from microfang.firmware import bundle
from microfang.firmware.errors import MicrofangError
from microfang.tools.wasm import binary as wb


def module_table(wasm: bytes) -> Table:
    module = wb.Module.parse(wasm)
    table = Table(title=f"module: {len(wasm):,} bytes, sha256 {hashlib.sha256(wasm).hexdigest()[:16]}")
    table.add_column("kind")
    table.add_column("name")
    table.add_column("detail")
    for imp in module.imports():
        detail = module.signature(imp.type_index) if imp.kind == 0 else ""
        table.add_row(f"import {wb.EXTERNAL_KINDS[imp.kind]}", f"{imp.module}.{imp.field}", detail)
    for name, kind, index in module.exports():
        table.add_row(f"export {wb.EXTERNAL_KINDS[kind]}", name, f"index {index}")
    memory = module.memory()
    if memory is not None:
        maximum = "none" if memory.maximum is None else f"{memory.maximum}"
        table.add_row("memory", "", f"{memory.minimum} pages initial, max {maximum}")
    table.add_row("functions", "", f"{len(module.function_types())} defined")
    metered = any(imp.module == "metering" for imp in module.imports())
    table.add_row("fuel metering", "", "yes (metering.usegas)" if metered else "no")
    return table


def inspect(path: Path) -> None:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MicrofangError(f"{path}: cannot read: {e.strerror}") from None
    if data[:4] == wb.MAGIC[:4]:
        try:
            console.out.print(module_table(data))
        except MicrofangError as e:
            raise MicrofangError(f"{path}: {e}") from None
        return
    try:
        manifest, wasm = bundle.decode(data)
    except MicrofangError as e:
        raise MicrofangError(f"{path}: {e}") from None
    console.info(f"[bold]{path}[/bold]: bundle {bundle.FORMAT}, {len(data):,} bytes")
    fuel, memory, perms = manifest["fuel"], manifest["memory"], manifest["permissions"]
    console.info(f"  agent      {manifest['agent_id']} v{manifest['version']}  {manifest['description']}")
    console.info(f"  fuel       max {fuel['max']:,}, +{fuel['refuel_amount']:,} every {fuel['refuel_interval_ms']} ms")
    console.info(f"  memory     cap {memory['max_bytes']:,} B, stack {memory['stack_bytes']:,} B, "
                 f"grow limit {memory['grow_limit_pages']} pages")
    console.info(f"  host fns   allowed {', '.join(perms['allowed']) or '-'}; denied {', '.join(perms['denied']) or '-'}")
    timers = ", ".join(f"#{t['id']} every {t['every_ms']} ms" for t in manifest["timers"]) or "-"
    console.info(f"  timers     {timers}")
    console.out.print(module_table(wasm))
