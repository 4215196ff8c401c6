"""`microfang mcp`: the fleet as an MCP server (official `mcp` SDK, v2 `MCPServer`) over stdio
or streamable HTTP (behind a bearer token). Read tools: devices, presence, agents and their
stats from telemetry, memory-log replicas, vector memory search, the audit chain; resources
for each device and agent. Control tools (mcpcontrol.py; not with --read-only): send an agent a
message and get its answer, spawn, suspend, resume, reclaim.
"""

from __future__ import annotations

import hmac
import json
import time
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from microfang.gateway.store import Store
from microfang.ops import open_store


class FleetError(ToolError):
    """A tool was asked about something the fleet does not have (reported to the client as is)."""


def fleet_server(db: Path, read_only: bool = False) -> MCPServer:
    """An MCP server over the gateway database at `db` (opened per call: the gateway writes it)."""
    server = MCPServer("microfang", instructions="A fleet of microcontroller boards running wasm agents. "
                                                 "Use list_devices first, then list_agents, device_status, "
                                                 "read_memory_log or search_memory"
                                                 + ("." if read_only else "; send_event asks an agent directly."))

    def with_store(fn: Any) -> Any:
        store: Store = open_store(db)
        try:
            return fn(store)
        finally:
            store.close()

    def known(store: Store, device: str) -> dict[str, Any]:
        record = store.devices().get(device)
        if record is None:
            raise FleetError(f"no device {device!r} in this fleet")
        return record

    @server.tool()
    def list_devices() -> list[dict[str, Any]]:
        """List the fleet's boards with their fleet, presence and when they were last seen."""
        def run(store: Store) -> list[dict[str, Any]]:
            now = time.time()
            return [{"device": name, "fleet": d["fleet"], "online": d["online"],
                     "last_seen_s_ago": None if d["last_seen"] is None else round(now - d["last_seen"], 1)}
                    for name, d in sorted(store.devices().items())]
        return with_store(run)

    @server.tool()
    def device_status(device: str) -> dict[str, Any]:
        """The latest telemetry of one board: uptime, free heap, flash use, per-agent stats."""
        def run(store: Store) -> dict[str, Any]:
            known(store, device)
            return store.latest_telemetry(device) or {"note": "no telemetry received yet"}
        return with_store(run)

    @server.tool()
    def list_agents(device: str) -> list[dict[str, Any]]:
        """The agents on one board (from its latest telemetry): state, fuel, memory, events, traps."""
        def run(store: Store) -> list[dict[str, Any]]:
            known(store, device)
            tele = store.latest_telemetry(device) or {}
            return [{"agent": name, **stats} for name, stats in sorted(tele.get("agents", {}).items())]
        return with_store(run)

    @server.tool()
    def read_memory_log(device: str, agent: str, from_seq: int = 1, limit: int = 50) -> list[dict[str, Any]]:
        """Records of an agent's memory log as replicated to the gateway (text when UTF-8)."""
        def run(store: Store) -> list[dict[str, Any]]:
            known(store, device)
            out = []
            for seq, payload in store.replica(device, agent):
                if seq < from_seq:
                    continue
                try:
                    out.append({"seq": seq, "text": payload.decode("utf-8")})
                except UnicodeDecodeError:
                    out.append({"seq": seq, "hex": payload.hex()})
                if len(out) >= max(1, min(limit, 500)):
                    break
            return out
        return with_store(run)

    @server.tool()
    def verify_audit() -> dict[str, Any]:
        """Walk the gateway's audit hash chain; reports the first broken record if any."""
        def run(store: Store) -> dict[str, Any]:
            count, bad = store.verify_audit()
            return {"records_checked": count, "intact": bad is None, "first_bad_record": bad}
        return with_store(run)

    @server.resource("fleet://devices")
    def devices_resource() -> str:
        """The fleet's devices and presence, one per line."""
        return "\n".join(f"{d['device']} {d['fleet']} {'online' if d['online'] else 'offline'}" for d in list_devices())

    @server.resource("fleet://device/{device}")
    def device_resource(device: str) -> str:
        """One board's latest telemetry (JSON)."""
        return json.dumps(device_status(device))

    @server.resource("fleet://agent/{device}/{agent}")
    def agent_resource(device: str, agent: str) -> str:
        """One agent's state and stats from its board's latest telemetry (JSON)."""
        found = [a for a in list_agents(device) if a["agent"] == agent]
        if not found:
            raise FleetError(f"no agent {agent!r} on {device!r} in the latest telemetry")
        return json.dumps(found[0])

    from microfang.mcpcontrol import add_control_tools, add_memory_tool

    add_memory_tool(server, db)
    if not read_only:
        add_control_tools(server, db)
    return server


class BearerToken:
    """ASGI middleware: every HTTP request must carry `Authorization: Bearer <token>`."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            if not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": b"missing or wrong bearer token\n"})
                return
        await self.app(scope, receive, send)


async def serve_http(db: Path, port: int, token: str, host: str = "127.0.0.1", read_only: bool = False) -> None:
    """Serve the fleet over MCP streamable HTTP at http://host:port/mcp, behind a bearer token."""
    import uvicorn

    app = BearerToken(fleet_server(db, read_only).streamable_http_app(host=host), token)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve()
