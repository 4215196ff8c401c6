"""The gateway's HTTP endpoints: /healthz (JSON) and /metrics (Prometheus text format, built by
metrics.py), served from what the gateway hands over: its health report and its metrics page."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

from microfang.firmware.errors import MicrofangError

Health = Callable[[], dict[str, Any]]
MetricsText = Callable[[], str]  # the /metrics page (metrics.exposition)


async def serve(health: Health, metrics_text: MetricsText, port: int, host: str = "127.0.0.1") -> asyncio.Server:
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
                status, body, kind = "200 OK", metrics_text().encode(), "text/plain; version=0.0.4"
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
