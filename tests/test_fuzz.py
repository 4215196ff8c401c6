"""The CI slice of the sandbox fuzz campaign (tools/wasm/fuzz.py; docs/fuel.md "Fuzzing"):
fresh smith modules every run, on both runtimes, must not crash or hang the engine and must
not let metering change a result or the fuel charged. The long campaign is the same code."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from microfang.tools.wasm import fuzz

SLICE = 2000


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_a_fresh_slice_of_smith_modules_neither_crashes_hangs_nor_changes_under_metering(runtime, tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    summary = fuzz.campaign(SLICE, seed, runtime, tmp_path, batch=500, timeout_s=120)
    print(f"fuzz slice on {runtime}: {summary}")  # the seed repeats it: --seed
    assert summary["modules"] == SLICE
    assert summary["ran"] >= SLICE * 8 // 10, summary  # the slice really runs modules
    assert (summary["crashes"], summary["hangs"], summary["metering_differences"]) == (0, 0, 0), (
        f"seed {seed}: see {tmp_path}", summary)


def test_a_result_that_metering_changed_is_a_metering_difference():
    assert fuzz.differs("1;T|9", "1;T|9", "1;2|0") == ("metering", "call 1: metering changed '2' to 'T' on wasmtime")


def test_other_fuel_is_a_metering_difference():
    assert fuzz.differs("1|9", "1|8", "1|0") == ("metering", "fuel: wasm3 9, wasmtime 8")


def test_a_result_only_wasm3_gets_is_an_engine_difference():
    assert fuzz.differs("3|9", "4|9", "4|0") == ("engine", "call 0: wasm3 '3', wasmtime '4'")


def test_comparison_stops_where_the_call_depth_bound_ended_a_call():
    assert fuzz.differs("1;S;5|20", "1;7;6|90", "1;7;6|0") is None


def test_out_of_fuel_agrees_with_any_unmetered_result():
    assert fuzz.differs("F|200000", "F|200000", "12|0") is None


def test_the_board_and_the_simulator_give_each_module_the_same_outcome_and_fuel(tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    for n in range(300):
        try:
            _, metered = fuzz.build(fuzz.smith(seed * 1_000_003 + n))
        except fuzz.WasmError:
            continue
        (tmp_path / f"m{n:04d}.wasm").write_bytes(metered)
        (tmp_path / f"m{n:04d}.txt").write_text("".join(f"{k}:{x.encode().hex()}\n" for x, k in fuzz.exports(metered)))
    lines = {}
    for runtime in ("cpython", "micropython"):
        batch = tmp_path.parent / f"{tmp_path.name}-{runtime}"
        batch.mkdir()
        for f in tmp_path.iterdir():
            (batch / f.name).write_bytes(f.read_bytes())
        lines[runtime], lost = fuzz.run_batch(fuzz.runtime_command(runtime), batch, 120)
        assert lost == [], (seed, runtime, lost)
    assert len(lines["cpython"]) >= 200

    def same_words(line):  # the board's build has no opcode names in its messages
        return line.split(" for opcode ")[0]

    assert ({name: same_words(line) for name, line in lines["cpython"].items()}
            == {name: same_words(line) for name, line in lines["micropython"].items()}), f"seed {seed}"


CRASHERS = Path(__file__).parent / "data" / "wasm3-crashers"  # smith modules that crashed wasm3 0.5.0
UPSTREAM_RUN = """
import sys, wasm3
env = wasm3.Environment(); runtime = env.new_runtime(8192); module = env.parse_module(sys.stdin.buffer.read())
runtime.load(module); module.gasLimit = 1e6
for name, kinds in CALLS:
    try:
        runtime.find_function(name)(*[0.0 if k in "fF" else 0 for k in kinds])
    except RuntimeError:
        pass
"""


def built_crashers():
    return {path.stem: fuzz.build(path.read_bytes())[1] for path in sorted(CRASHERS.glob("*.wasm"))}


def test_the_crasher_corpus_still_crashes_upstream_wasm3():
    """The corpus means something while upstream pywasm3 still dies on it. Its bugs are wild
    writes, so whether a given process segfaults depends on what lies where the write lands
    (heap layout, ASLR): a module counts if it crashes in any of three runs, and the corpus
    must keep at least one that does."""
    crashing = []
    for name, metered in built_crashers().items():
        code = UPSTREAM_RUN.replace("CALLS", repr(fuzz.exports(metered)))
        for _ in range(3):
            proc = subprocess.run([sys.executable, "-c", code], input=metered, capture_output=True, timeout=60,
                                  check=False)
            if proc.returncode < 0:
                crashing.append(name)
                break
    assert crashing, "no module of the corpus crashes pywasm3 0.5.0 any more: the corpus tests nothing"


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_modules_that_crashed_wasm3_are_refused_or_run_safely(runtime, tmp_path):
    for name, metered in built_crashers().items():
        (tmp_path / f"{name}.wasm").write_bytes(metered)
        (tmp_path / f"{name}.txt").write_text("".join(f"{k}:{x.encode().hex()}\n" for x, k in fuzz.exports(metered)))
    lines, lost = fuzz.run_batch(fuzz.runtime_command(runtime), tmp_path, 60)
    assert lost == [] and sorted(lines) == sorted(built_crashers()), (lost, lines)
