"""Jobs in the gateway's database: the CLI (`microfang deploy`, `migrate`) and the MCP control
tools queue them, the running gateway carries them out (transfers.py, commands.py), and the
askers wait for their end. Everyone watches jobs through `watch_jobs`, the one polling loop.

    rows = await wait_jobs(store, [job_id], timeout=30, progress=lambda rows: ...)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from microfang.firmware.errors import MicrofangError
from microfang.gateway.db import RETRY_S, StoreFailure
from microfang.gateway.jobstore import JOB_PENDING
from microfang.gateway.store import Store

POLL_S = 0.02  # an index lookup in SQLite: cheap


class Boards(Protocol):
    """What carrying out a job takes of the gateway (core.Gateway): its store and registry,
    sending to boards, asking agents, its log."""

    store: Store | None

    @property
    def devices(self) -> dict[str, dict[str, Any]]: ...

    def send(self, device: str, agent: str, kind: str, body: Any, control: bool = False,
             on_delivered: Callable[[], None] | None = None) -> bytes: ...

    async def ask(self, device: str, agent: str, body: Any, timeout: float = 10.0) -> Any: ...

    def log(self, line: str) -> None: ...


class JobsFailed(MicrofangError):
    """Some jobs failed or did not end in time; `jobs` holds every job's last row."""

    def __init__(self, message: str, jobs: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.jobs = jobs


async def watch_jobs(store: Store, ids: list[int] | None = None, *, timeout: float | None = None,
                     poll_s: float = POLL_S) -> AsyncIterator[list[dict[str, Any]]]:
    """The rows of jobs `ids` (None: of every active job) every `poll_s` seconds, until all of
    `ids` have ended or `timeout` seconds have passed (None: for ever)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while True:
        try:
            rows = store.jobs(ids, active=ids is None)
        except StoreFailure:  # the store fails for now (store.db.problem says why): ask again later
            if deadline is not None and time.monotonic() > deadline:
                raise
            await asyncio.sleep(RETRY_S[1])
            continue
        yield rows
        if ids is not None and all(row["state"] not in JOB_PENDING for row in rows):
            return
        if deadline is not None and time.monotonic() > deadline:
            return
        await asyncio.sleep(poll_s)


def unfinished(rows: list[dict[str, Any]], timeout: float) -> list[str]:
    """One line for each job that failed or is still going: where, and why."""
    lines = []
    for row in rows:
        where = row["target"] or row["device"]
        if row["state"] in ("failed", "cancelled"):
            lines.append(f"{where}: {row['detail']}")
        elif row["state"] in JOB_PENDING:
            lines.append(f"{where}: still {row['state']} after {timeout:.0f} s (is `microfang gateway` running on "
                         "this database and the board online? the job stays queued)")
    return lines


async def wait_jobs(store: Store, ids: list[int], timeout: float,
                    progress: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """Wait until the jobs `ids` have ended (`progress(rows)` at every poll); their rows. Raises
    JobsFailed if any failed or is still going after `timeout` seconds."""
    rows: list[dict[str, Any]] = []
    async for rows in watch_jobs(store, ids, timeout=timeout):
        if progress is not None:
            progress(rows)
    problems = unfinished(rows, timeout)
    if problems:
        raise JobsFailed(f"{len(problems)} of {len(rows)} {rows[0]['kind']} jobs did not succeed: "
                         + "; ".join(problems), rows)
    return rows
