"""Carrying out the jobs queued in the store (deploys, migrations, commands) when several
gateways share it.

Each job has an owner, the gateway that carries it out: the first to claim it (one UPDATE, so
only one wins), or the one that takes it over when its owner has been silent for STALE_S
(peers.py; the heartbeat of the `gateways` table). A transfer needs the boards' answers, and on
a shared store the MQTT shared subscription hands each answer to any one of the gateways. One
that gets an answer to a job it does not own writes it to `job_answers`, in the same
transaction as the message, so it is acknowledged to the broker only once it is stored; the
owner takes it from there at its next poll, inside a batch (the sends it causes go out once
that commits). Why through the store and not, say, an answer topic per gateway: the boards
stay as they are (an answer is an `up/` message like any other, checked, replay-protected and
acknowledged after commit by whichever gateway gets it), and a job whose owner dies is taken
over from what the store holds: the new owner probes the boards (every step of a transfer is
safe to repeat, transfers.py) and goes on from what they say they have.

    runner = JobRunner(gateway)          # a jobs.Boards with `name`, `transfers`, `commands`, `defer`
    await runner.run()                   # the gateway's jobs task
    runner.on_board(device, agent, kind, body)   # a board's answer, inside its message's transaction
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from microfang.firmware import cbor
from microfang.gateway import commands, transfers
from microfang.gateway.commands import Commands
from microfang.gateway.jobs import Boards, watch_jobs
from microfang.gateway.peers import STALE_S
from microfang.gateway.rollouts import POLL_S as ROLLOUT_POLL_S
from microfang.gateway.rollouts import Rollouts
from microfang.gateway.store import Store
from microfang.gateway.transfers import Transfers


class Owner(Boards, Protocol):
    """What running jobs takes of the gateway (core.Gateway) beyond jobs.Boards."""

    name: str
    transfers: Transfers
    commands: Commands

    def defer(self, action: Callable[[], None]) -> None: ...


class JobRunner:
    def __init__(self, gateway: Owner) -> None:
        self.gw = gateway

    @property
    def store(self) -> Store:
        assert self.gw.store is not None
        return self.gw.store

    async def run(self) -> None:
        """Take up the jobs this gateway can claim (queued ones, its own after a restart, those
        of a dead gateway), take the answers forwarded to it, retry stalled transfers, and take
        staged rollouts a wave further (rollouts.py)."""
        draining = False  # a drain is deferred and has not run yet
        rollouts, next_rollouts = Rollouts(self.store), 0.0

        def drain() -> None:
            nonlocal draining
            draining = False
            for device, agent, kind, body in self.store.take_answers(self.gw.name):
                self.gw.transfers.on_board(device, agent, kind, cbor.loads(body, max_bytes=len(body)))

        async for rows in watch_jobs(self.store):
            try:
                for row in rows:
                    self._take(row)
                if self.store.shared and not draining and self.store.has_answers(self.gw.name):
                    draining = True
                    self.gw.defer(drain)
                self.gw.transfers.retry_stalled()
                if time.monotonic() >= next_rollouts:
                    next_rollouts = time.monotonic() + ROLLOUT_POLL_S
                    said, running = [], rollouts.running()  # a read: a write transaction only when one runs
                    if running:
                        with self.store.transaction():
                            said = rollouts.advance(time.time(), running)
                    for line in said:
                        self.gw.log(line)
            except Exception as e:  # a bug or a failing store must not stop the jobs: log it, keep going
                self.gw.log(f"error in jobs: {e!r}")

    def _take(self, row: dict[str, Any]) -> None:
        mine = row["owner"] == self.gw.name
        if not mine and not self.store.claim_job(row["id"], self.gw.name, time.time() - STALE_S):
            self.gw.transfers.drop(row["id"])  # another gateway has it (it took it over from this one)
            return
        if row["kind"] in commands.KINDS:
            self.gw.commands.take(row)
        elif row["kind"] in transfers.KINDS:
            self.gw.transfers.take(row)

    def on_telemetry(self, device: str, body: Any) -> None:
        """A board's telemetry: a transfer running here that the board had no RAM for fails now
        (on a shared store, telemetry heard by another gateway leaves the owner to its retries)."""
        self.gw.transfers.on_telemetry(device, body)

    def on_board(self, device: str, agent: str, kind: str, body: Any) -> None:
        """A board's answer to a deploy or migration: handled here if the job runs here, else
        forwarded to its owner through the store (dropped if no active job wants it)."""
        if self.gw.transfers.on_board(device, agent, kind, body) or not self.store.shared:
            return
        found = self.store.job_of_answer(device, agent, body.get("xfer") if isinstance(body, dict) else None)
        if found is not None and found[1] != self.gw.name:
            self.store.forward_answer(found[0], device, agent, kind, cbor.dumps(body))
