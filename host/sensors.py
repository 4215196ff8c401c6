"""Simulated sensors for agents running off hardware (`microfang run`, the demo).

The firmware's own simulated channels (firmware/sensors.py: the channel table, the integer
waves): what a board booted in `microfang sim` or on the unix port reads, here with the
temperature and moisture waves' period chosen by the caller (the demo spreads its boards'
alarms by giving each its own).
"""

from __future__ import annotations

from microfang.firmware.sensors import SIMULATED, Sensors


def simulated_specs(period_s: float = 4.0) -> dict[int, dict]:
    """The firmware's default simulated channels with the temperature and moisture waves over
    `period_s` seconds (moisture a quarter period behind)."""
    period_ms = max(1, int(period_s * 1000))
    specs = {n: dict(spec) for n, spec in SIMULATED.items()}
    specs[0].update(period_ms=period_ms, phase_ms=0)
    specs[1].update(period_ms=period_ms, phase_ms=period_ms // 4)
    return specs


class SimulatedSensors(Sensors):
    def __init__(self, period_s: float = 4.0) -> None:
        super().__init__(simulated_specs(period_s))
