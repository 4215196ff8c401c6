"""Staged rollouts, kept in the gateway's store and carried out by the gateway, the shape of AWS
IoT Jobs' and Memfault's: a bundle goes first to N canary boards, then to waves `ramp` times
larger each, and the rollout stops once more than `abort_at`% of the boards it reached failed.

`microfang deploy BUNDLE --fleet F --canary N --ramp X --abort-at P` (host/rollout.py) adds the
rollout and one deploy job per board in one transaction: the first wave's jobs queued, the
others "held" (no gateway takes a held job). The gateway's job loop (jobrunner.py) calls
`advance()`; once a wave has ended (each of its jobs done, failed or cancelled, or the wave's
time is up: a job still going then counts as failed, and goes on) either too many of the boards
reached so far failed and the rollout is aborted (its held jobs are cancelled: those boards keep
the old version; a board whose new version does not start put the old one back itself,
firmware/deploy.py), or the next wave's jobs are queued, or the rollout is done. The rollout is
the store's, not the CLI's that started it: killing the CLI leaves it running. With several
gateways on one store each step is one conditional UPDATE on the rollout's wave, so only one
gateway takes it.

    rollouts = Rollouts(store)
    rid = rollouts.add("sim", "hello", 2, Plan(canary=1, abort_at=30), [["b1"], ["b2", "b3"]], signed)
    said = rollouts.advance(time.time())     # in a transaction: a line for each step taken
    rollouts.get([rid])[0]["state"]          # running, done, aborted or cancelled
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from microfang.firmware.errors import MicrofangError
from microfang.gateway.jobstore import JOB_ACTIVE
from microfang.gateway.store import Store

FIELDS = ("id", "fleet", "agent", "version", "canary", "ramp", "abort_at", "wave_timeout", "waves", "wave",
          "wave_started", "state", "detail", "created", "updated")
POLL_S = 0.5  # how often the gateway looks at running rollouts


@dataclass(frozen=True)
class Plan:
    canary: int = 1  # boards in the first wave
    ramp: float = 2.0  # each wave this many times the one before
    abort_at: float = 100.0  # stop once more than this % of the boards reached failed (100: never)
    wave_timeout: float = 120.0  # seconds a wave may take

    def check(self) -> None:
        if self.canary < 1:
            raise MicrofangError(f"--canary {self.canary}: give at least 1 board")
        if not (self.ramp >= 1.0 and math.isfinite(self.ramp)):
            raise MicrofangError(f"--ramp {self.ramp}: give a factor of 1 or more (2: each wave twice the last)")
        if not 0.0 <= self.abort_at <= 100.0:
            raise MicrofangError(f"--abort-at {self.abort_at}: give a percentage from 0 to 100")
        if not (self.wave_timeout > 0 and math.isfinite(self.wave_timeout)):
            raise MicrofangError(f"--timeout {self.wave_timeout}: give the seconds a wave may take")

    def waves(self, devices: list[str]) -> list[list[str]]:
        """The boards in waves: `canary` first, then each wave `ramp` times the last (at least one more)."""
        waves, start, size = [], 0, self.canary
        while start < len(devices):
            waves.append(devices[start:start + size])
            start += size
            size = max(size + 1, math.ceil(size * self.ramp))
        return waves


@dataclass(frozen=True)
class Tally:
    """A rollout's jobs so far: the boards reached (waves up to the one under way) and how they did."""

    done: int
    failed: int  # failed, or still going when their wave's time was up
    going: int  # still going in the wave under way
    reached: int  # done + failed + going; a cancelled job reached no board

    @property
    def failed_pct(self) -> float:
        return 100.0 * self.failed / self.reached if self.reached else 0.0


class Rollouts:
    def __init__(self, store: Store) -> None:
        self.store = store  # the `rollouts` table is in jobstore.SCHEMA

    def add(self, fleet: str, agent: str, version: int, plan: Plan, waves: list[list[str]], signed: bytes) -> int:
        """A rollout of the signed bundle to `waves` of boards, with its jobs; one transaction."""
        plan.check()
        db, now = self.store.db, time.time()
        with self.store.transaction():
            row = db.execute("INSERT INTO rollouts (fleet, agent, version, canary, ramp, abort_at, wave_timeout, "
                             "waves, state, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?) "
                             "RETURNING id", (fleet, agent, version, plan.canary, plan.ramp, plan.abort_at,
                                              plan.wave_timeout, len(waves), now, now)).fetchone()
            rollout = int(row[0])
            for n, wave in enumerate(waves):
                for device in wave:
                    self.store.add_job("deploy", device, agent, signed, version=version, rollout=rollout, wave=n,
                                       state="queued" if n == 0 else "held")
        return rollout

    def get(self, ids: list[int] | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """Rollouts `ids` (or the latest `limit`), oldest first, each with `jobs`: how many of its
        jobs are in each state."""
        if ids == []:
            return []
        where = f" WHERE id IN ({','.join('?' * len(ids))})" if ids is not None else ""
        rows = self.store.db.execute(f"SELECT {', '.join(FIELDS)} FROM rollouts{where} ORDER BY id DESC LIMIT ?",
                                     (*(ids or ()), limit if ids is None else len(ids))).fetchall()
        out = []
        for r in reversed(rows):
            rollout = dict(zip(FIELDS, r, strict=True))
            counts = self.store.db.execute("SELECT state, COUNT(*) FROM jobs WHERE rollout = ? GROUP BY state",
                                           (rollout["id"],)).fetchall()
            rollout["jobs"] = {str(state): int(n) for state, n in counts}
            out.append(rollout)
        return out

    def running(self) -> list[dict[str, Any]]:
        return self.get([int(i) for (i,) in self.store.db.execute("SELECT id FROM rollouts WHERE state = 'running' "
                                                                  "ORDER BY id").fetchall()])

    def jobs(self, rollout: int) -> list[dict[str, Any]]:
        """The rollout's jobs' rows (JobStore.jobs), in order of waves."""
        ids = [int(i) for (i,) in self.store.db.execute("SELECT id FROM jobs WHERE rollout = ? ORDER BY wave, id",
                                                         (rollout,)).fetchall()]
        return sorted(self.store.jobs(ids), key=lambda job: (job["wave"], job["id"])) if ids else []

    def tally(self, rollout: int, wave: int, timed_out: bool) -> Tally:
        counts = self.store.db.execute("SELECT wave, state, COUNT(*) FROM jobs WHERE rollout = ? AND wave <= ? "
                                       "GROUP BY wave, state", (rollout, wave)).fetchall()
        done = sum(n for _, state, n in counts if state == "done")
        failed = sum(n for _, state, n in counts if state == "failed")
        going = sum(n for _, state, n in counts if state in JOB_ACTIVE)
        if timed_out:
            failed, going = failed + going, 0
        return Tally(done, failed, going, done + failed + going)

    def advance(self, now: float, running: list[dict[str, Any]] | None = None) -> list[str]:
        """Take each running rollout (`running`: their rows, read already) one step if its wave
        has ended; a line for each step. Call inside a transaction."""
        said = []
        for r in self.running() if running is None else running:
            if r["wave_started"] is None:  # queued while no gateway ran: its time starts now
                self.store.db.execute("UPDATE rollouts SET wave_started = ? WHERE id = ? AND wave_started IS NULL",
                                      (now, r["id"]))
                continue
            tally = self.tally(r["id"], r["wave"], timed_out=now - r["wave_started"] >= r["wave_timeout"])
            if tally.going:
                continue
            step = f"rollout {r['id']} of {r['agent']} v{r['version']} to {r['fleet']}"
            if tally.failed_pct > r["abort_at"]:
                detail = (f"aborted at wave {r['wave'] + 1} of {r['waves']}: {tally.failed} of {tally.reached} boards "
                          f"failed ({tally.failed_pct:.0f}% > {r['abort_at']:g}%)")
                if self._end(r, "aborted", detail, f"not deployed: rollout {r['id']} aborted"):
                    said.append(f"{step} {detail}")
            elif r["wave"] + 1 < r["waves"]:
                if self._next_wave(r, now):
                    said.append(f"{step}: wave {r['wave'] + 2} of {r['waves']} queued ({tally.done} of "
                                f"{tally.reached} boards took it so far)")
            elif self._end(r, "done", f"{tally.done} of {tally.reached} boards took it", ""):
                said.append(f"{step} done: {tally.done} of {tally.reached} boards took it")
        return said

    def cancel(self, rollout: int) -> bool:
        """Stop a running rollout: its jobs no gateway has taken are cancelled (those boards keep
        the old version); the ones under way go on. False if it is not running."""
        rows = self.get([rollout])
        return bool(rows) and rows[0]["state"] == "running" and self._end(
            rows[0], "cancelled", f"cancelled by the operator at wave {rows[0]['wave'] + 1} of {rows[0]['waves']}",
            f"not deployed: rollout {rollout} cancelled", queued_too=True)

    def _next_wave(self, r: dict[str, Any], now: float) -> bool:
        db = self.store.db
        if not db.execute("UPDATE rollouts SET wave = ?, wave_started = ?, updated = ? WHERE id = ? AND "
                          "state = 'running' AND wave = ? RETURNING id",
                          (r["wave"] + 1, now, now, r["id"], r["wave"])).fetchall():
            return False  # another gateway took this step
        db.execute("UPDATE jobs SET state = 'queued', updated = ? WHERE rollout = ? AND wave = ? AND state = 'held'",
                   (now, r["id"], r["wave"] + 1))
        return True

    def _end(self, r: dict[str, Any], state: str, detail: str, job_detail: str, queued_too: bool = False) -> bool:
        db, now = self.store.db, time.time()
        if not db.execute("UPDATE rollouts SET state = ?, detail = ?, updated = ? WHERE id = ? AND state = 'running' "
                          "AND wave = ? RETURNING id", (state, detail, now, r["id"], r["wave"])).fetchall():
            return False
        untaken = "state = 'held' OR (state = 'queued' AND owner = '')" if queued_too else "state = 'held'"
        db.execute(f"UPDATE jobs SET state = 'cancelled', detail = ?, updated = ? WHERE rollout = ? AND ({untaken})",
                   (job_detail, now, r["id"]))
        return True
