"""The jobs in the gateway's store: deploys, migrations and commands that the CLI and the MCP
control tools queue and a gateway carries out (transfers.py, commands.py), which gateway owns
each (jobrunner.py), the boards' answers forwarded to that gateway, and the staged rollouts
whose jobs wait for their wave (rollouts.py). A part of Store
(store.py), on its connection and in its transactions.
"""

from __future__ import annotations

import time
from typing import Any

from microfang.gateway.db import Database

JOB_ACTIVE = ("queued", "sending", "snapshot", "restoring")  # a gateway takes these up
JOB_PENDING = (*JOB_ACTIVE, "held")  # not ended: "held" waits for its rollout's wave (rollouts.py)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (            -- queued by `microfang deploy/migrate`, run by the gateway
    id {serial},
    kind TEXT NOT NULL,                      -- deploy | migrate
    device TEXT NOT NULL,                    -- migrate: the board the agent leaves
    target TEXT,                             -- migrate: the board it moves to
    agent TEXT NOT NULL,
    version BIGINT,
    data {blob},                             -- deploy: the signed bundle; migrate: the snapshot once read
    state TEXT NOT NULL,                     -- held, queued, sending, snapshot, restoring, done, failed, cancelled
    detail TEXT NOT NULL DEFAULT '',
    progress BIGINT NOT NULL DEFAULT 0,      -- bytes the board holds of `size`
    size BIGINT NOT NULL DEFAULT 0,
    created DOUBLE PRECISION NOT NULL,
    updated DOUBLE PRECISION NOT NULL,
    owner TEXT NOT NULL DEFAULT '',          -- the gateway carrying it out (jobrunner.py)
    rollout BIGINT,                          -- the staged rollout it is part of (rollouts.py), and
    wave BIGINT                              -- its wave there, from 0
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
CREATE TABLE IF NOT EXISTS rollouts (        -- staged rollouts (rollouts.py); their jobs name them
    id {serial},
    fleet TEXT NOT NULL,
    agent TEXT NOT NULL,
    version BIGINT NOT NULL,
    canary BIGINT NOT NULL,                  -- the plan (Plan)
    ramp DOUBLE PRECISION NOT NULL,
    abort_at DOUBLE PRECISION NOT NULL,
    wave_timeout DOUBLE PRECISION NOT NULL,
    waves BIGINT NOT NULL,                   -- how many waves its jobs are in
    wave BIGINT NOT NULL DEFAULT 0,          -- the wave under way, from 0
    wave_started DOUBLE PRECISION,           -- when a gateway queued it (NULL: none has seen it yet)
    state TEXT NOT NULL,                     -- running, done, aborted, cancelled
    detail TEXT NOT NULL DEFAULT '',
    created DOUBLE PRECISION NOT NULL,
    updated DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS rollouts_state ON rollouts (state);
"""
INDEXES = "CREATE INDEX IF NOT EXISTS jobs_rollout ON jobs (rollout, wave);"  # once ADDED_COLUMNS are there
ADDED_COLUMNS = (("owner", "TEXT NOT NULL DEFAULT ''"), ("rollout", "BIGINT"), ("wave", "BIGINT"))  # since the first jobs
JOB_FIELDS = ("id", "kind", "device", "target", "agent", "version", "state", "detail", "progress", "size", "created",
              "updated", "owner", "rollout", "wave")


class JobStore:
    db: Database

    def add_job(self, kind: str, device: str, agent: str, data: bytes | None = None, target: str | None = None,
                version: int | None = None, rollout: int | None = None, wave: int | None = None,
                state: str = "queued") -> int:
        now = time.time()
        row = self.db.execute("INSERT INTO jobs (kind, device, target, agent, version, data, state, size, created, "
                              "updated, rollout, wave) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                              (kind, device, target, agent, version, data, state, len(data or b""), now, now, rollout,
                               wave)).fetchone()
        return int(row[0])

    def jobs(self, ids: list[int] | None = None, active: bool = False) -> list[dict[str, Any]]:
        query = f"SELECT {', '.join(JOB_FIELDS)} FROM jobs"
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
        return [dict(zip(JOB_FIELDS, r, strict=True)) for r in rows]

    def job_counts(self) -> dict[tuple[str, str], int]:
        """(kind, state) -> how many jobs the store holds (/metrics)."""
        rows = self.db.execute("SELECT kind, state, COUNT(*) FROM jobs GROUP BY kind, state").fetchall()
        return {(str(kind), str(state)): int(n) for kind, state, n in rows}

    def rollout_counts(self) -> dict[str, int]:
        """state -> how many staged rollouts the store holds (/metrics)."""
        return {str(state): int(n) for state, n in self.db.execute("SELECT state, COUNT(*) FROM rollouts "
                                                                    "GROUP BY state").fetchall()}

    def job_data(self, job_id: int) -> bytes:
        row = self.db.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bytes(row[0] or b"") if row else b""

    def cancel_job(self, job_id: int, detail: str) -> bool:
        """End a job no gateway has taken (queued without an owner, or held for its wave) as
        cancelled; False if it is not such a job (any more)."""
        return bool(self.db.execute("UPDATE jobs SET state = 'cancelled', detail = ?, updated = ? WHERE id = ? AND "
                                    "(state = 'held' OR (state = 'queued' AND owner = '')) RETURNING id",
                                    (detail, time.time(), job_id)).fetchall())

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
