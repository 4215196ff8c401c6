"""The gateway's HTTP endpoints: /healthz (JSON) and /metrics (Prometheus text format), served
from what the gateway hands over: its health report and its counters."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from microfang.firmware.errors import MicrofangError

Health = Callable[[], dict[str, Any]]
Counters = Callable[[], tuple[dict[str, int], dict[str, int]]]  # () -> (gateway metrics, router counts)


# HELP text of every family /metrics serves (promtool refuses families without one).
HELP = {
    "messages": "envelopes received from boards", "requests": "agent requests received",
    "replies": "replies sent to agents", "telemetry": "telemetry reports stored",
    "log_records": "memory-log records replicated", "publishes": "agent publishes received",
    "presence": "presence changes seen", "denied": "requests refused by the registered manifest",
    "dropped": "messages dropped, by reason", "batches": "store transactions of board messages and deferred writes",
    "refused_unverified": "requests over their rate limit refused before their HMAC was checked",
    "fenced": "replay windows closed over requests refused unverified (overlimit.py)",
    "replies_resent": "kept replies published again by a gateway finishing another's (or its own earlier) requests",
    "router_requests": "requests routed", "router_replies_ok": "requests answered",
    "router_replies_error": "requests answered with an error", "router_rate_limited": "requests over the rate limit",
    "router_over_budget": "requests over the budget", "router_unknown_kind": "requests of a kind nobody handles",
    "router_busy": "requests refused while their handler was busy", "router_timeouts": "requests whose handler timed out",
    "devices": "devices registered", "devices_online": "devices online",
    "broker_connected": "1 while the gateway is connected to its broker",
    "requests_pending": "requests waiting for their handler", "build_info": "the running microfang, by version",
}


def _family(lines: list[str], name: str, kind: str, samples: list[tuple[str, object]]) -> None:
    metric = f"microfang_{name}" + ("_total" if kind == "counter" else "")
    lines += [f"# HELP {metric} {HELP.get(name, name.replace('_', ' '))}", f"# TYPE {metric} {kind}"]
    lines += [f"{metric}{labels} {value}" for labels, value in samples]


def prometheus(metrics: dict[str, int], router_counts: dict[str, int], health: dict[str, Any]) -> str:
    """The Prometheus text exposition of the gateway's counters and gauges."""
    lines: list[str] = []
    _family(lines, "build_info", "gauge", [(f'{{version="{version("microfang")}"}}', 1)])
    for name, value in sorted(metrics.items()):
        if not name.startswith("dropped_"):
            _family(lines, name, "counter", [("", value)])
    _family(lines, "dropped", "counter", [(f'{{reason="{name[8:]}"}}', value) for name, value in sorted(metrics.items())
                                          if name.startswith("dropped_")])
    for name, value in sorted(router_counts.items()):
        _family(lines, f"router_{name}", "counter", [("", value)])
    for name, key in (("devices", "devices"), ("devices_online", "online"), ("requests_pending", "pending_requests")):
        _family(lines, name, "gauge", [("", health[key])])
    _family(lines, "broker_connected", "gauge", [("", int(health["broker_connected"]))])
    return "\n".join(lines) + "\n"


async def serve(health: Health, counters: Counters, port: int, host: str = "127.0.0.1") -> asyncio.Server:
    """Serve /healthz and /metrics on host:port until the returned server is closed."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass  # headers: not needed
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path == "/healthz":
                report = health()
                status = "200 OK" if report["status"] == "ok" else "503 Service Unavailable"
                body, kind = json.dumps(report).encode(), "application/json"
            elif path == "/metrics":
                status, body, kind = "200 OK", prometheus(*counters(), health()).encode(), "text/plain; version=0.0.4"
            else:
                status, body, kind = "404 Not Found", b"not found\n", "text/plain"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                         f"Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    try:
        return await asyncio.start_server(handle, host, port)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise MicrofangError(f"http port {port}: cannot listen on {host}:{port} ({reason})") from None
