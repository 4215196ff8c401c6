"""Staged rollouts from the CLI: `microfang deploy BUNDLE --fleet F --canary N --ramp X --abort-at P`
signs the bundle once, adds the rollout with one job per board of the fleet to the gateway's
store (gateway/rollouts.py: the gateway queues each wave when the one before has ended, and
stops at the failure rate) and follows it to its end. The rollout is the gateway's: a CLI that
is killed or gives up leaves it running (`microfang jobs rollouts` shows it, `microfang jobs
cancel --rollout ID` stops it). Returns what happened; cli.py prints it.

    result = roll_out(db, Path("hello.mfa"), "sim", Plan(canary=1, ramp=2.0, abort_at=30.0))
    result.state      # "done", "aborted" or "cancelled"
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from microfang import signing
from microfang.deploy import read_bundle, require_gateway
from microfang.firmware.errors import MicrofangError
from microfang.gateway.rollouts import Plan, Rollouts
from microfang.ops import Where, open_store
from microfang.signing import signed_bundle

FOLLOW_POLL_S = 0.2
FOLLOW_SLACK_S = 30.0  # beyond the waves' time, before the CLI stops following (the rollout goes on)

__all__ = ["Plan", "Rollout", "follow", "roll_out", "start_rollout"]


@dataclass
class Rollout:
    id: int
    state: str  # done | aborted | cancelled
    detail: str
    waves: list[list[str]] = field(default_factory=list)  # the boards of each wave reached
    rows: list[dict[str, Any]] = field(default_factory=list)  # the last row of each job that reached a board
    untouched: list[str] = field(default_factory=list)  # boards the rollout stopped before

    @property
    def failed(self) -> list[str]:
        return [row["device"] for row in self.rows if row["state"] != "done"]


def start_rollout(db: Where, path: Path, fleet: str, plan: Plan, keys: Path | None = None,
                  supersedes: int = 0) -> tuple[int, list[list[str]]]:
    """Add a rollout of the bundle at `path` (signed here) to every board of `fleet`: (its id, its waves)."""
    plan.check()
    signed, manifest = signed_bundle(signing.load(keys), read_bundle(path), str(path), supersedes)
    store = open_store(db)
    try:
        devices = sorted(d for d, r in store.devices().items() if r["fleet"] == fleet)
        if not devices:
            raise MicrofangError(f"fleet {fleet!r} has no devices in {db}")
        waves = plan.waves(devices)
        return Rollouts(store).add(fleet, manifest["agent_id"], manifest["version"], plan, waves, signed), waves
    finally:
        store.close()


def follow(db: Where, rollout: int, wave_started: Callable[[int, list[str]], None] | None = None) -> Rollout:
    """Wait for the rollout's end (`wave_started(n, boards)` as each wave is queued); what it did.
    MicrofangError if no gateway runs on the store or the rollout outlasts its waves' time."""
    store = open_store(db)
    try:
        require_gateway(store, db)
        rollouts = Rollouts(store)
        [row] = rollouts.get([rollout])
        deadline = time.monotonic() + row["waves"] * row["wave_timeout"] + FOLLOW_SLACK_S
        told = -1
        while True:
            [row] = rollouts.get([rollout])
            jobs = rollouts.jobs(rollout)
            for n in range(told + 1, row["wave"] + 1):
                if wave_started is not None:
                    wave_started(n, [job["device"] for job in jobs if job["wave"] == n])
                told = n
            if row["state"] != "running":
                break
            if time.monotonic() > deadline:
                raise MicrofangError(f"rollout {rollout} still running at wave {row['wave'] + 1} of {row['waves']}: "
                                     f"it goes on in the gateway (`microfang jobs rollouts` shows it)")
            time.sleep(FOLLOW_POLL_S)
    finally:
        store.close()
    reached = [job for job in jobs if job["state"] != "cancelled"]
    waves = [[job["device"] for job in reached if job["wave"] == n] for n in range(row["wave"] + 1)]
    return Rollout(rollout, row["state"], row["detail"], [w for w in waves if w], reached,
                   [job["device"] for job in jobs if job["state"] == "cancelled"])


def roll_out(db: Where, path: Path, fleet: str, plan: Plan, keys: Path | None = None, supersedes: int = 0,
             wave_started: Callable[[int, list[str]], None] | None = None) -> Rollout:
    """Start a rollout and follow it to its end."""
    rollout, _ = start_rollout(db, path, fleet, plan, keys, supersedes)
    return follow(db, rollout, wave_started)
