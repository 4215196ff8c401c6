"""`microfang build`: manifest + module -> validated, metered, capped bundle (.mfa)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from microfang.firmware import abi, bundle, port
from microfang.firmware.errors import ManifestError, WasmError
from microfang.tools import manifest as manifests
from microfang.tools.wasm import binary as wb
from microfang.tools.wasm import wasmtools
from microfang.tools.wasm.meter import meter

SDK_DIR = Path(__file__).parent / "sdk"
# C agents are compiled by zig's clang, from the `ziglang` wheel (a dependency): the same
# compiler on every machine, so a source builds to the same bytes everywhere and nothing but
# pip is needed. Small agents: a 1 KiB C stack at the bottom of linear memory (zig's wasm-ld
# always puts the stack first, so data starts at --global-base, which must be >= the stack
# size), one 64 KiB page declared; the manifest's memory cap then bounds what is really used.
# Optimised for size (-Os): a board compiles every function at spawn and keeps the code in RAM
# (~2.3 B per byte of wasm), and the interpreter's time goes per instruction. The hello agent:
# 660 -> 459 B of wasm, 704 B less RAM per agent on MicroPython (bench/bench_micropython.py).
STACK_BYTES = 1024
ZIG_CC = [sys.executable, "-m", "ziglang", "cc"]
C_FLAGS = [
    "--target=wasm32-freestanding", "-Os", "-nostdlib", "-ffreestanding", "-fno-builtin",
    "-Wl,--no-entry", f"-Wl,-z,stack-size={STACK_BYTES}", f"-Wl,--global-base={STACK_BYTES}",
    "-Wl,--initial-memory=65536", "-Wl,--max-memory=65536", "-Wl,--strip-debug",
]


def compile_source(path: Path) -> bytes:
    """Turn an agent's source (.c, .wat or .wasm) into a wasm binary."""
    try:
        if path.suffix == ".wasm":
            return path.read_bytes()
        if path.suffix == ".wat":
            return wasmtools.parse_wat(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise WasmError(f"{path}: cannot read: {e.strerror}") from None
    if path.suffix != ".c":
        raise WasmError(f"{path}: unknown agent source type (use .c, .wat or .wasm)")
    if not path.is_file():
        raise WasmError(f"{path}: no such file")
    with tempfile.TemporaryDirectory(prefix="microfang-") as tmp:
        out = Path(tmp) / path.with_suffix(".wasm").name
        try:
            proc = subprocess.run([*ZIG_CC, *C_FLAGS, f"-I{SDK_DIR}", "-o", str(out), str(path)],
                                  capture_output=True, text=True, check=False)
        except OSError as e:
            raise WasmError(f"{path}: cannot start the C compiler ({ZIG_CC[0]} -m ziglang): {e.strerror}") from None
        if proc.returncode:
            if "No module named ziglang" in proc.stderr:
                raise WasmError(f"{path}: C agents are compiled with zig: pip install ziglang")
            first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip())
            raise WasmError(f"{path}: compile failed: {first}")
        return out.read_bytes()


def check_abi(module: wb.Module, manifest: dict[str, Any]) -> None:
    """Refuse imports the manifest does not allow and exports the ABI needs but lacks."""
    perms = manifest["permissions"]
    for imp in module.imports():
        what = f"{imp.module}.{imp.field}"
        if imp.kind != 0:
            raise WasmError(f"imports {wb.EXTERNAL_KINDS[imp.kind]} {what}: agents must define their own")
        if imp.module != abi.HOST_MODULE or imp.field not in abi.HOST_FUNCTIONS:
            raise WasmError(f"imports {what}, which is not a microfang host function")
        if imp.field in perms["denied"] or imp.field not in perms["allowed"]:
            raise WasmError(f"imports {what}, which the manifest does not allow "
                            f"(add it to sandbox.permissions.allowed_host_functions)")
        sig = module.signature(imp.type_index)
        if sig != abi.HOST_FUNCTIONS[imp.field]:
            raise WasmError(f"imports {what} as {sig}, the host function is {abi.HOST_FUNCTIONS[imp.field]}")
    exports = {name: (kind, index) for name, kind, index in module.exports()}
    n_imported = sum(1 for imp in module.imports() if imp.kind == 0)
    func_types = module.function_types()
    for name, kind in {**abi.REQUIRED_EXPORTS, **abi.OPTIONAL_EXPORTS}.items():
        if name not in exports:
            if name in abi.REQUIRED_EXPORTS:
                raise WasmError(f"does not export {name!r} (the agent ABI needs memory, mf_alloc, mf_on_event)")
            continue
        got_kind, index = exports[name]
        if got_kind != kind:
            raise WasmError(f"exports {name!r} as a {wb.EXTERNAL_KINDS[got_kind]}, not a {wb.EXTERNAL_KINDS[kind]}")
        if kind == 0:
            if index < n_imported:
                raise WasmError(f"exports {name!r} as a re-exported import")
            sig = module.signature(func_types[index - n_imported])
            if sig != abi.EXPORT_SIGNATURES[name]:
                raise WasmError(f"exports {name!r} as {sig}, the ABI needs {abi.EXPORT_SIGNATURES[name]}")


def _static_data_end(module: wb.Module) -> int:
    """Highest byte written by active data segments with constant offsets."""
    payload = module.section(wb.DATA)
    if payload is None:
        return 0
    r = wb.Reader(payload)
    end = 0
    for _ in range(r.u32()):
        flags = r.u32()
        if flags == 1:  # passive
            r.bytes(r.u32())
            continue
        if flags == 2:
            r.u32()
        offset = r.sleb(32) & 0xFFFFFFFF if r.byte() == 0x41 else 0
        while r.byte() != 0x0B:
            pass
        size = r.u32()
        r.bytes(size)
        end = max(end, offset + size)
    return end


def cap_memory(module: wb.Module, memory: dict[str, int]) -> None:
    """Refuse a module whose declared memory exceeds the cap; lower its maximum to the cap.

    wasm3 enforces the cap in bytes at run time, but `memory.grow` only returns -1 past the
    declared maximum, so the maximum is rewritten to the cap (in whole pages).
    """
    limits = module.memory()
    if limits is None:
        raise WasmError("declares no memory (the agent ABI needs an exported memory)")
    cap = memory["max_bytes"]
    cap_pages = -(-cap // wb.PAGE)
    if limits.minimum > cap_pages:
        raise WasmError(f"declares {limits.minimum} pages ({limits.minimum * 64} KiB) of memory, "
                        f"above the cap of {cap // 1024} KiB (sandbox.memory.max_heap_kb)")
    data_end = _static_data_end(module)
    if data_end > cap:
        raise WasmError(f"static data reaches byte {data_end}, above the memory cap of {cap} bytes")
    maximum = min(cap_pages, limits.minimum + memory["grow_limit_pages"])
    if limits.maximum is not None:
        maximum = min(maximum, limits.maximum)
    module.set_memory(wb.Limits(limits.minimum, maximum))


def _inert(*args: object) -> int:
    return 0


def check_engine(metered: bytes) -> None:
    """Refuse what the board's engine refuses at spawn (nesting deeper than it compiles, more
    stack slots than a function may use, unmetered code, forms wasm3 does not load): compile
    every function on the same patched wasm3, with every host function linked."""
    engine = port.engine  # microfang._wasm3: the board's wasm3 with its patches
    env = engine.Environment()
    runtime = env.new_runtime(4096, wb.PAGE)
    try:
        module = env.parse_module(metered)
        runtime.load(module)
        for name, sig in abi.HOST_FUNCTIONS.items():
            module.link_function(abi.HOST_MODULE, name, sig, _inert)
        module.compile()
    except engine.Wasm3Error as e:
        raise WasmError(f"the agent engine refuses it: {e}") from None
    finally:
        runtime.close()


def build_wasm(wasm: bytes, manifest: dict[str, Any]) -> bytes:
    """Validate, check and meter a module for `manifest`; return the metered wasm."""
    wasmtools.validate(wasm)
    module = wb.Module.parse(wasm)
    check_abi(module, manifest)
    cap_memory(module, manifest["memory"])
    metered = meter(module.encode())
    wasmtools.validate(metered)
    check_engine(metered)
    return metered


def build(manifest_path: str | Path, out: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Build the agent described by a manifest file; return the bundle path and a summary."""
    manifest_path = Path(manifest_path)
    manifest = manifests.load(manifest_path)
    source = (manifest_path.parent / manifest["module"]).resolve()
    try:
        wasm = compile_source(source)
        metered = build_wasm(wasm, manifest)
    except WasmError as e:
        raise WasmError(f"{manifest_path}: {manifest['module']}: {e}") from None
    if out is None:
        out = manifest_path.with_name(f"{manifest['agent_id']}.mfa")
    out = Path(out)
    data = bundle.encode(manifest, metered)
    try:
        out.write_bytes(data)
    except OSError as e:
        raise ManifestError(f"{out}: cannot write bundle: {e.strerror}") from None
    return out, {"agent_id": manifest["agent_id"], "version": manifest["version"], "source_bytes": len(wasm),
                 "metered_bytes": len(metered), "bundle_bytes": len(data)}
