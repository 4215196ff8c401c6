"""Staged rollouts: `microfang deploy BUNDLE --fleet F --canary N --ramp X --abort-at P`, the
shape of AWS IoT Jobs' and Memfault's: the bundle goes first to N canary boards, then to waves
X times larger each, and the rollout stops once more than P% of the boards it reached so far
failed (a board whose new version does not start puts the old one back itself,
firmware/deploy.py): the boards not reached keep the old version. Each wave's jobs are queued
only after the previous wave has ended. Returns what happened; cli.py prints it.

    result = roll_out(db, Path("hello.mfa"), "sim", Plan(canary=1, ramp=2.0, abort_at=30.0))
    result.state      # "done" or "aborted"
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from microfang.deploy import queue_deploy, wait
from microfang.firmware.errors import MicrofangError
from microfang.gateway.jobs import JobsFailed
from microfang.ops import Where, open_store


@dataclass(frozen=True)
class Plan:
    canary: int = 1  # boards in the first wave
    ramp: float = 2.0  # each wave this many times the one before
    abort_at: float = 100.0  # stop once more than this % of the boards reached failed (100: never)

    def check(self) -> None:
        if self.canary < 1:
            raise MicrofangError(f"--canary {self.canary}: give at least 1 board")
        if not (self.ramp >= 1.0 and math.isfinite(self.ramp)):
            raise MicrofangError(f"--ramp {self.ramp}: give a factor of 1 or more (2: each wave twice the last)")
        if not 0.0 <= self.abort_at <= 100.0:
            raise MicrofangError(f"--abort-at {self.abort_at}: give a percentage from 0 to 100")


@dataclass
class Rollout:
    state: str = "done"  # done | aborted
    waves: list[list[str]] = field(default_factory=list)  # the boards of each wave queued
    rows: list[dict[str, Any]] = field(default_factory=list)  # every job's last row
    untouched: list[str] = field(default_factory=list)  # boards the rollout stopped before

    @property
    def failed(self) -> list[str]:
        return [row["device"] for row in self.rows if row["state"] != "done"]


def waves_of(devices: list[str], plan: Plan) -> list[list[str]]:
    """The boards in waves: `canary` first, then each wave `ramp` times the last (at least one more)."""
    waves, start, size = [], 0, plan.canary
    while start < len(devices):
        waves.append(devices[start:start + size])
        start += size
        size = max(size + 1, math.ceil(size * plan.ramp))
    return waves


def fleet_devices(db: Where, fleet: str) -> list[str]:
    store = open_store(db)
    try:
        devices = sorted(d for d, r in store.devices().items() if r["fleet"] == fleet)
    finally:
        store.close()
    if not devices:
        raise MicrofangError(f"fleet {fleet!r} has no devices in {db}")
    return devices


def roll_out(db: Where, path: Path, fleet: str, plan: Plan, keys: Path | None = None, supersedes: int = 0,
             timeout: float = 120.0, progress: Callable[[list[dict[str, Any]]], None] | None = None,
             wave_started: Callable[[int, list[str]], None] | None = None) -> Rollout:
    """Deploy to `fleet` in waves (`timeout` for each); stops at the plan's failure rate."""
    plan.check()
    waves = waves_of(fleet_devices(db, fleet), plan)
    result = Rollout()
    for n, wave in enumerate(waves):
        if wave_started is not None:
            wave_started(n, wave)
        ids = queue_deploy(db, path, wave, keys=keys, supersedes=supersedes)
        try:
            rows = wait(db, ids, timeout, progress)
        except JobsFailed as e:
            rows = e.jobs
        result.waves.append(wave)
        result.rows += rows
        if 100.0 * len(result.failed) / len(result.rows) > plan.abort_at:
            result.state = "aborted"
            result.untouched = [device for later in waves[n + 1:] for device in later]
            break
    return result
