"""The jobs in the gateway's store: deploys, migrations and commands that the CLI and the MCP
control tools queue and a gateway carries out (transfers.py, commands.py), which gateway owns
each (jobrunner.py), and the boards' answers forwarded to that gateway. A part of Store
(store.py), on its connection and in its transactions.
"""

from __future__ import annotations

import time
from typing import Any

from microfang.gateway.db import Database

JOB_ACTIVE = ("queued", "sending", "snapshot", "restoring")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (            -- queued by `microfang deploy/migrate`, run by the gateway
    id {serial},
    kind TEXT NOT NULL,                      -- deploy | migrate
    device TEXT NOT NULL,                    -- migrate: the board the agent leaves
    target TEXT,                             -- migrate: the board it moves to
    agent TEXT NOT NULL,
    version BIGINT,
    data {blob},                             -- deploy: the signed bundle; migrate: the snapshot once read
    state TEXT NOT NULL,                     -- queued, sending, snapshot, restoring, done, failed
    detail TEXT NOT NULL DEFAULT '',
    progress BIGINT NOT NULL DEFAULT 0,      -- bytes the board holds of `size`
    size BIGINT NOT NULL DEFAULT 0,
    created DOUBLE PRECISION NOT NULL,
    updated DOUBLE PRECISION NOT NULL,
    owner TEXT NOT NULL DEFAULT ''           -- the gateway carrying it out (jobrunner.py)
);
CREATE TABLE IF NOT EXISTS job_answers (     -- boards' answers that reached another gateway than the job's
    n {serial},
    job BIGINT NOT NULL,
    device TEXT NOT NULL,
    agent TEXT NOT NULL,
    kind TEXT NOT NULL,
    body {blob} NOT NULL                     -- the answer's body, CBOR
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);  -- the gateway looks for active jobs often
"""


class JobStore:
    db: Database

    def add_job(self, kind: str, device: str, agent: str, data: bytes | None = None, target: str | None = None,
                version: int | None = None) -> int:
        now = time.time()
        row = self.db.execute("INSERT INTO jobs (kind, device, target, agent, version, data, state, size, created, "
                              "updated) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?) RETURNING id",
                              (kind, device, target, agent, version, data, len(data or b""), now, now)).fetchone()
        return int(row[0])

    def jobs(self, ids: list[int] | None = None, active: bool = False) -> list[dict[str, Any]]:
        query = "SELECT id, kind, device, target, agent, version, state, detail, progress, size, created, updated, " \
                "owner FROM jobs"
        where: list[str] = []
        args: list[Any] = []
        if ids is not None:
            where.append(f"id IN ({','.join('?' * len(ids))})")
            args += ids
        if active:
            where.append(f"state IN ({','.join('?' * len(JOB_ACTIVE))})")
            args += JOB_ACTIVE
        rows = self.db.execute(query + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id",
                               args).fetchall()
        names = ("id", "kind", "device", "target", "agent", "version", "state", "detail", "progress", "size",
                 "created", "updated", "owner")
        return [dict(zip(names, r, strict=True)) for r in rows]

    def job_counts(self) -> dict[tuple[str, str], int]:
        """(kind, state) -> how many jobs the store holds (/metrics)."""
        rows = self.db.execute("SELECT kind, state, COUNT(*) FROM jobs GROUP BY kind, state").fetchall()
        return {(str(kind), str(state)): int(n) for kind, state, n in rows}

    def job_data(self, job_id: int) -> bytes:
        row = self.db.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bytes(row[0] or b"") if row else b""

    def update_job(self, job_id: int, **fields: Any) -> None:
        fields["updated"] = time.time()
        names = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(f"UPDATE jobs SET {names} WHERE id = ?", (*fields.values(), job_id))

    # ---- jobs with several gateways (jobrunner.py) -----------------------------------------

    def claim_job(self, job_id: int, owner: str, stale_before: float) -> bool:
        """Make an active job `owner`'s if it has none, is `owner`'s already, or its gateway
        has been silent since `stale_before` (the `gateways` table, peers.py); one statement,
        so two gateways never both win. Answers forwarded to the old owner are dropped: the new
        one asks the boards again."""
        states = ",".join("?" * len(JOB_ACTIVE))
        row = self.db.execute(f"UPDATE jobs SET owner = ? WHERE id = ? AND state IN ({states}) AND (owner IN ('', ?) "
                              "OR owner NOT IN (SELECT name FROM gateways WHERE seen >= ?)) RETURNING owner",
                              (owner, job_id, *JOB_ACTIVE, owner, stale_before)).fetchone()
        if row is not None:
            self.db.execute("DELETE FROM job_answers WHERE job = ?", (job_id,))
        return row is not None

    def job_of_answer(self, device: str, agent: str, xfer: str | None) -> tuple[int, str] | None:
        """(id, owner) of the active job a board's answer belongs to: the transfer it names
        (`xfer`, transfers.Job.xfer), else the migration of `agent` away from `device`."""
        states = ",".join("?" * len(JOB_ACTIVE))
        if xfer:
            if len(xfer) < 2 or not xfer[1:].isdigit():
                return None
            row = self.db.execute(f"SELECT id, owner FROM jobs WHERE id = ? AND state IN ({states})",
                                  (int(xfer[1:]), *JOB_ACTIVE)).fetchone()
        else:
            row = self.db.execute(f"SELECT id, owner FROM jobs WHERE kind = 'migrate' AND device = ? AND agent = ? "
                                  f"AND state IN ({states}) ORDER BY id LIMIT 1", (device, agent, *JOB_ACTIVE)).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def forward_answer(self, job_id: int, device: str, agent: str, kind: str, body: bytes) -> None:
        self.db.execute("INSERT INTO job_answers (job, device, agent, kind, body) VALUES (?, ?, ?, ?, ?)",
                        (job_id, device, agent, kind, body))

    def has_answers(self, owner: str) -> bool:
        return self.db.execute("SELECT 1 FROM job_answers WHERE job IN (SELECT id FROM jobs WHERE owner = ?) LIMIT 1",
                               (owner,)).fetchone() is not None

    def take_answers(self, owner: str) -> list[tuple[str, str, str, bytes]]:
        """The answers forwarded to `owner`'s jobs, in the order they came: (device, agent,
        kind, body); deleted in the current transaction."""
        rows = self.db.execute("DELETE FROM job_answers WHERE job IN (SELECT id FROM jobs WHERE owner = ?) "
                               "RETURNING n, device, agent, kind, body", (owner,)).fetchall()
        return [(d, a, k, bytes(b)) for _, d, a, k, b in sorted(rows)]
