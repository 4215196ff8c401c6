"""`microfang mcp`: the fleet as an MCP server (official `mcp` SDK, v2 `MCPServer`) over stdio
or streamable HTTP (behind a bearer token). Read tools (FleetReader): devices, presence, agents
and their stats from telemetry, memory-log replicas, the audit chain; resources for each
device and agent. Vector memory search and the control tools (mcpcontrol.py; not with
--read-only): send an agent a message and get its answer, spawn, suspend, resume, reclaim.
Every tool is one typed, docstringed method, registered with `server.add_tool`.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

from microfang.gateway.presence import reader_view
from microfang.gateway.rollouts import Rollouts
from microfang.gateway.store import Store
from microfang.mcpcontrol import FleetControl, MemorySearch
from microfang.ops import Where, open_store


class FleetError(ToolError):
    """A tool was asked about something the fleet does not have (reported to the client as is)."""


class FleetReader:
    """The read tools and resources: each method is one tool (its docstring and type hints are
    what the client sees), reading the gateway database at `db`, opened per call because the
    gateway keeps writing it."""

    def __init__(self, db: Where) -> None:
        self.db = db

    @contextmanager
    def _store(self, device: str | None = None) -> Iterator[Store]:
        store = open_store(self.db)
        try:
            if device is not None and store.device(device) is None:
                raise FleetError(f"no device {device!r} in this fleet")
            yield store
        finally:
            store.close()

    def list_devices(self) -> list[dict[str, Any]]:
        """List the fleet's boards with their fleet, presence and when they were last seen."""
        with self._store() as store:
            now, online = time.time(), reader_view(store)
            return [{"device": name, "fleet": d["fleet"], "online": online(d, now),
                     "last_seen_s_ago": None if d["last_seen"] is None else round(now - d["last_seen"], 1)}
                    for name, d in sorted(store.devices().items())]

    def device_status(self, device: str) -> dict[str, Any]:
        """The latest telemetry of one board: uptime, free heap, flash use, per-agent stats."""
        with self._store(device) as store:
            return store.latest_telemetry(device) or {"note": "no telemetry received yet"}

    def list_agents(self, device: str) -> list[dict[str, Any]]:
        """The agents on one board (from its latest telemetry): state, fuel, memory, events, traps."""
        with self._store(device) as store:
            tele = store.latest_telemetry(device) or {}
        return [{"agent": name, **stats} for name, stats in sorted(tele.get("agents", {}).items())]

    def read_memory_log(self, device: str, agent: str, from_seq: int = 1, limit: int = 50) -> list[dict[str, Any]]:
        """Records of an agent's memory log as replicated to the gateway: each with its bytes in
        base64, and a text field too when the record is printable UTF-8."""
        with self._store(device) as store:
            records = [(seq, payload) for seq, payload in store.replica(device, agent) if seq >= from_seq]
        return [log_record(seq, payload) for seq, payload in records[:max(1, min(limit, 500))]]

    def verify_audit(self) -> dict[str, Any]:
        """Walk the gateway's audit hash chain; reports the first broken record if any."""
        with self._store() as store:
            count, bad = store.verify_audit()
        return {"records_checked": count, "intact": bad is None, "first_bad_record": bad}

    def list_jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest deploy, migration and control jobs (oldest first): board, agent, state,
        bytes sent, result, and the staged rollout and wave a deploy belongs to."""
        with self._store() as store:
            rows = store.jobs()[-max(1, min(limit, 200)):]
        return [{k: job[k] for k in ("id", "kind", "device", "target", "agent", "version", "state", "detail",
                                     "progress", "size", "rollout", "wave")} for job in rows]

    def list_rollouts(self, limit: int = 10) -> list[dict[str, Any]]:
        """The latest staged rollouts (oldest first): plan (canary, ramp, abort_at), state
        (running, done, aborted, cancelled), the wave under way, how many of its jobs are in
        each state, and why it ended."""
        with self._store() as store:
            return [{k: r[k] for k in ("id", "fleet", "agent", "version", "canary", "ramp", "abort_at", "state",
                                       "wave", "waves", "jobs", "detail")}
                    for r in Rollouts(store).get(limit=max(1, min(limit, 100)))]

    def devices_resource(self) -> str:
        """The fleet's devices and presence, one per line."""
        return "\n".join(f"{d['device']} {d['fleet']} {'online' if d['online'] else 'offline'}"
                         for d in self.list_devices())

    def device_resource(self, device: str) -> str:
        """One board's latest telemetry (JSON)."""
        return json.dumps(self.device_status(device))

    def agent_resource(self, device: str, agent: str) -> str:
        """One agent's state and stats from its board's latest telemetry (JSON)."""
        found = [a for a in self.list_agents(device) if a["agent"] == agent]
        if not found:
            raise FleetError(f"no agent {agent!r} on {device!r} in the latest telemetry")
        return json.dumps(found[0])


def log_record(seq: int, payload: bytes) -> dict[str, Any]:
    """One memory-log record for a client: base64 always, text only when it is text."""
    record: dict[str, Any] = {"seq": seq, "base64": base64.b64encode(payload).decode("ascii")}
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return record
    if all(c.isprintable() or c in "\n\t" for c in text):
        record["text"] = text
    return record


# What each tool does to the fleet, for clients deciding whether to ask before calling it.
READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
TOOL_ANNOTATIONS = {
    "send_event": ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                                  open_world_hint=False),
    "spawn_agent": ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False,
                                   open_world_hint=False),
    "suspend_agent": ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                                     open_world_hint=False),
    "resume_agent": ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                                    open_world_hint=False),
    "reclaim_agent": ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                                     open_world_hint=False),
}


def fleet_server(db: Where, read_only: bool = False) -> MCPServer:
    """An MCP server over the gateway database at `db`; control tools unless `read_only`."""
    server = MCPServer("microfang", version=version("microfang"), instructions="A fleet of microcontroller boards running wasm agents. "
                                                 "Use list_devices first, then list_agents, device_status, "
                                                 "read_memory_log or search_memory"
                                                 + ("." if read_only else "; send_event asks an agent directly."))
    reader, memory, control = FleetReader(db), MemorySearch(db), FleetControl(db)
    tools: list[Callable[..., Any]] = [reader.list_devices, reader.device_status, reader.list_agents, reader.read_memory_log,
             reader.verify_audit, reader.list_jobs, reader.list_rollouts, memory.search_memory]
    if not read_only:
        tools += [control.send_event, control.spawn_agent, control.suspend_agent, control.resume_agent,
                  control.reclaim_agent]
    for tool in tools:
        server.add_tool(tool, annotations=TOOL_ANNOTATIONS.get(tool.__name__, READ))
    server.resource("fleet://devices", mime_type="text/plain")(reader.devices_resource)
    server.resource("fleet://device/{device}", mime_type="application/json")(reader.device_resource)
    server.resource("fleet://agent/{device}/{agent}", mime_type="application/json")(reader.agent_resource)
    return server


async def serve_http(db: Where, port: int, token: str, host: str = "127.0.0.1", read_only: bool = False,
                     ready: Callable[[], None] | None = None) -> None:
    """Serve the fleet over MCP streamable HTTP at http://host:port/mcp, behind a bearer token;
    `ready()` is called once the port is bound."""
    import logging

    from microfang import httpguard

    sock = httpguard.bind(host, port, "--http")  # a port in use: one line, before anything is printed
    if ready is not None:
        ready()
    logging.getLogger("mcp").setLevel(logging.WARNING)  # the SDK logs every request (and its session id) at INFO
    # 4 MiB: the MCP SDK's own request limit.
    app = httpguard.HttpGuard(fleet_server(db, read_only).streamable_http_app(host=host), token, port,
                              hosts=(host, "localhost"), max_body=4 << 20)
    await httpguard.server(app, lifespan="on").serve(sockets=[sock])
