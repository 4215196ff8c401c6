"""Agents' log lines (mf_log), as boards forward them (firmware/agentlines.py: kind "lines" on
up/{agent}, within each agent's budget), kept per device for `microfang logs` and the dashboard:
the newest LINES_KEEP of each device, older ones deleted as new ones come. A line records when
the gateway got it, the board's clock when the agent wrote it, and how many lines the board
dropped over budget just before it.

    lines = AgentLines(store)
    lines.add("b1", "hello", {"line": "tick 3", "ms": 3004, "dropped": 0})   # in the message's transaction
    for line in lines.after(0, device="b1"):                               # oldest first
        print(line.device, line.agent, line.text)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from microfang.gateway.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS agent_lines (
    n {serial},
    device TEXT NOT NULL,
    agent TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,     -- when the gateway got it (seconds since the epoch)
    board_ms BIGINT NOT NULL,         -- the board's clock when the agent wrote it
    dropped BIGINT NOT NULL,          -- lines the board dropped over budget just before this one
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS agent_lines_device ON agent_lines (device, n)
"""
LINES_KEEP = 1000  # per device


@dataclass(frozen=True)
class Line:
    n: int
    device: str
    agent: str
    ts: float
    board_ms: int
    dropped: int
    text: str


class AgentLines:
    def __init__(self, store: Store) -> None:
        self.store = store
        store.db.schema(SCHEMA)

    def add(self, device: str, agent: str, body: dict[str, Any], ts: float) -> None:
        """A board's "lines" message (shapes.py checked it), in the message's transaction."""
        db = self.store.db
        db.execute("INSERT INTO agent_lines (device, agent, ts, board_ms, dropped, line) VALUES (?, ?, ?, ?, ?, ?)",
                   (device, agent, ts, body["ms"], body.get("dropped", 0), body["line"]))
        db.execute("DELETE FROM agent_lines WHERE device = ? AND n <= (SELECT n FROM agent_lines WHERE device = ? "
                   "ORDER BY n DESC LIMIT 1 OFFSET ?)", (device, device, LINES_KEEP))

    def after(self, n: int, device: str | None = None, agent: str | None = None, limit: int = 1000) -> list[Line]:
        """Lines numbered above `n`, oldest first, of one device (and agent) or all."""
        return self._select(n, device, agent, "n", limit)

    def latest(self, count: int, device: str | None = None, agent: str | None = None) -> list[Line]:
        """The newest `count` lines, oldest first."""
        return self._select(0, device, agent, "n DESC", count)[::-1]

    def _select(self, n: int, device: str | None, agent: str | None, order: str, limit: int) -> list[Line]:
        where: list[str] = ["n > ?"]
        args: list[Any] = [n]
        for column, value in (("device", device), ("agent", agent)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        rows = self.store.db.execute(f"SELECT n, device, agent, ts, board_ms, dropped, line FROM agent_lines "
                                     f"WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?", (*args, limit)).fetchall()
        return [Line(*row) for row in rows]
