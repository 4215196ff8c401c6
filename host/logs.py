"""`microfang logs [-f] [DEVICE[/AGENT]]`: agents' mf_log lines as the gateway stored them
(gateway/agentlines.py), the newest first shown oldest first, then with `follow` the new ones
as they come (the store polled, so it works against a SQLite file or PostgreSQL alike, with no
broker credentials), like `esphome logs` or `jag monitor`. Returns lines; cli.py prints them.

    for line in agent_lines("gateway.db", "sim0000/hello", follow=True):
        print(format_line(line))
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from microfang.firmware import protocol
from microfang.firmware.errors import MicrofangError
from microfang.gateway.agentlines import AgentLines, Line
from microfang.ops import Where, open_store

POLL_S = 0.25  # how often `follow` asks the store for new lines


def parse_target(target: str | None) -> tuple[str | None, str | None]:
    """DEVICE or DEVICE/AGENT (None: every device) -> (device, agent)."""
    if not target:
        return None, None
    device, _, agent = target.partition("/")
    for what, name in (("device", device), ("agent", agent)):
        if name and not protocol.name_ok(name):
            raise MicrofangError(f"{target!r}: {name!r} is not a {what} name ({protocol.NAME_RULE})")
    if not device:
        raise MicrofangError(f"{target!r}: give DEVICE or DEVICE/AGENT")
    return device, agent or None


def agent_lines(where: Where, target: str | None = None, last: int = 20, follow: bool = False,
                poll_s: float = POLL_S) -> Iterator[Line]:
    """The `last` newest lines of the target, then (follow) each new one until the caller stops."""
    device, agent = parse_target(target)
    store = open_store(where)
    try:
        if device is not None and device not in store.devices():
            raise MicrofangError(f"no device {device!r} in {where} (see `microfang keys list`)")
        lines = AgentLines(store)
        newest = 0
        for line in lines.latest(last, device, agent):
            newest = line.n
            yield line
        if not follow:
            return
        if newest == 0:
            row = store.db.execute("SELECT MAX(n) FROM agent_lines").fetchone()
            newest = int(row[0]) if row and row[0] is not None else 0
        while True:
            fresh = lines.after(newest, device, agent)
            for line in fresh:
                newest = line.n
                yield line
            if not fresh:
                time.sleep(poll_s)
    finally:
        store.close()


def format_line(line: Line) -> str:
    """`12:00:01 sim0000/hello: tick 3`, with a note of the lines dropped over budget before it."""
    stamp = time.strftime("%H:%M:%S", time.localtime(line.ts))
    dropped = f" [{line.dropped} lines dropped over budget before this one]" if line.dropped else ""
    return f"{stamp} {line.device}/{line.agent}: {line.text}{dropped}"


def line_json(line: Line) -> dict[str, object]:
    return {"n": line.n, "device": line.device, "agent": line.agent, "ts": line.ts, "board_ms": line.board_ms,
            "dropped": line.dropped, "line": line.text}
