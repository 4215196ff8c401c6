# Fair time on a board (bench/bench_sandbox.py runs it under CPython and microfang's MicroPython):
# a 20 ms ticker agent next to a hog (a runaway loop or a publish flood), for a bounded window.
#
#   micropython fair_bench.py TICKER.mfa HOG.mfa|- WINDOW_MS SLICE_FUEL
#
# Prints "worst_gap_ms ticks": the longest time between two of the ticker's events. SLICE_FUEL
# replaces the sandbox's time slice ("0": none, a whole tank per event, as before the slice).
import sys

from microfang.firmware import port, sandbox
from microfang.firmware.supervisor import Supervisor


def main():
    ticker, hog, window, slice_fuel = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if slice_fuel:
        sandbox.SLICE_FUEL = slice_fuel
    else:
        sandbox.SLICE_FUEL = 1 << 62
    ticks = []

    def report(agent_id, kind, text):
        if agent_id == "ticker" and kind == "log":
            ticks.append(port.ticks_ms())

    sup = Supervisor(report=report, outbox=lambda *args: 0)
    for path in (ticker, hog):
        if path != "-":
            with open(path, "rb") as f:
                sup.spawn(f.read())
    port.asyncio.run(sup.run(window))
    gaps = [port.ticks_diff(b, a) for a, b in zip(ticks, ticks[1:])]
    print("%d %d" % (max(gaps) if gaps else window, len(ticks)))


main()
