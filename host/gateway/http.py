"""The gateway's HTTP endpoints: /healthz (JSON) and /metrics (Prometheus text format)."""

from __future__ import annotations

import asyncio
import json
import os
from typing import TYPE_CHECKING

from microfang.firmware.errors import MicrofangError

if TYPE_CHECKING:
    from microfang.gateway.core import Gateway


def prometheus(gateway: Gateway) -> str:
    lines = []
    for name, value in sorted(gateway.metrics.items()):
        if name.startswith("dropped_"):
            continue
        lines += [f"# TYPE microfang_{name}_total counter", f"microfang_{name}_total {value}"]
    lines.append("# TYPE microfang_dropped_total counter")
    for name, value in sorted(gateway.metrics.items()):
        if name.startswith("dropped_"):
            lines.append(f'microfang_dropped_total{{reason="{name[8:]}"}} {value}')
    for name, value in sorted(gateway.router.counts.items()):
        lines += [f"# TYPE microfang_router_{name}_total counter", f"microfang_router_{name}_total {value}"]
    health = gateway.health()
    lines += ["# TYPE microfang_devices gauge", f"microfang_devices {health['devices']}",
              "# TYPE microfang_devices_online gauge", f"microfang_devices_online {health['online']}",
              "# TYPE microfang_broker_connected gauge", f"microfang_broker_connected {int(health['broker_connected'])}",
              "# TYPE microfang_requests_pending gauge", f"microfang_requests_pending {health['pending_requests']}"]
    return "\n".join(lines) + "\n"


async def serve(gateway: Gateway, port: int, host: str = "127.0.0.1") -> asyncio.base_events.Server:
    """Serve /healthz and /metrics on host:port until the returned server is closed."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass  # headers: not needed
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path == "/healthz":
                health = gateway.health()
                status = "200 OK" if health["status"] == "ok" else "503 Service Unavailable"
                body, kind = json.dumps(health).encode(), "application/json"
            elif path == "/metrics":
                status, body, kind = "200 OK", prometheus(gateway).encode(), "text/plain; version=0.0.4"
            else:
                status, body, kind = "404 Not Found", b"not found\n", "text/plain"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                         f"Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    try:
        return await asyncio.start_server(handle, host, port)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise MicrofangError(f"http port {port}: cannot listen on {host}:{port} ({reason})") from None
