"""Simulated sensors for agents running off hardware (`microfang run`, the simulator).

A board reads real sensors through its port layer; here each channel is a slow wave so that
threshold agents see values rise and fall. Channel 0 is a temperature in centi-degrees C
(15-35 C over a 4 s period); other channels are the same wave shifted in phase.
"""

from __future__ import annotations

import math
import time


class SimulatedSensors:
    def __init__(self, period_s: float = 4.0) -> None:
        self.period_s = period_s
        self.start = time.monotonic()

    def __call__(self, agent_id: str, channel: int) -> int:
        t = time.monotonic() - self.start
        phase = 2 * math.pi * (t / self.period_s) + channel
        return int(2500 - 1000 * math.cos(phase))
