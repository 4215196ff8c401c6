"""The front door of microfang's HTTP services (`microfang mcp --http`, the A2A server): an ASGI
middleware that refuses, before the application reads anything, what a local service must not
take from a browser tab or a stray client.

    401  no `Authorization: Bearer <token>` (compared in constant time); paths in `public` (an
         A2A agent card) are readable without it, with GET only
    421  a Host header that is not one of `hosts` (DNS rebinding: a web page's name pointing here)
    403  an Origin header that is not one of `origins` (a page on another site posting here)
    415  a body that is not application/json (text/plain and form posts need no CORS preflight)
    413  a body over `max_body` bytes, by its Content-Length or as it streams in
"""

from __future__ import annotations

import hmac
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal

from microfang.firmware.errors import MicrofangError

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

MAX_BODY = 1 << 20
# Connections served at once; more are closed at once with a 503, so clients that never finish
# their request (slowloris) hold at most this many file handles, never the gateway's all.
MAX_CONNECTIONS = 64


def bind(host: str, port: int, what: str) -> socket.socket:
    """A listening socket for a service, or a one-line error naming it (a port in use, out of range)."""
    if not 0 < port < 65536:
        raise MicrofangError(f"{what} port {port}: not a TCP port (1-65535)")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise MicrofangError(f"{what} port {port}: cannot listen on {host}:{port} ({e.strerror})") from None
    return sock


def server(app: Any, lifespan: Literal["on", "off"] = "off") -> Any:
    """A uvicorn server for a guarded app, bounded in connections, quiet but for warnings."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan, limit_concurrency=MAX_CONNECTIONS,
                                         timeout_keep_alive=5))


class BodyTooLarge(Exception):
    pass


class HttpGuard:
    def __init__(self, app: Any, token: str, port: int, *, hosts: Iterable[str] = ("127.0.0.1", "localhost"),
                 origins: Iterable[str] = (), public: Iterable[str] = (), max_body: int = MAX_BODY,
                 json_only: bool = True) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.hosts = {h.encode() for name in hosts for h in (name, f"{name}:{port}")}
        self.origins = {o.encode() for o in origins}
        self.public = set(public)
        self.max_body = max_body
        self.json_only = json_only

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            if refusal[0] != 413:
                await _drain(receive, self.max_body)  # answered before the body was read: the client gets a reset
            await _respond(send, *refusal)
            return
        received, started = 0, False

        async def tracked_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        async def bounded_receive() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise BodyTooLarge
            return message

        if scope.get("method") in ("POST", "PUT", "PATCH") and b"content-length" not in headers:
            # A body of unknown length (chunked): read it here, up to the limit, so a refusal is
            # our 413 and not whatever the application makes of an exception in receive().
            chunks, more = [], True
            while more:
                message = await receive()
                received += len(message.get("body", b""))
                if received > self.max_body:
                    await _respond(send, 413, f"body over {self.max_body} bytes")
                    return
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

            async def replay() -> dict:
                nonlocal whole
                message, whole = whole, {"type": "http.disconnect"}
                return message

            await self.app(scope, replay, tracked_send)
            return
        try:
            await self.app(scope, bounded_receive, tracked_send)
        except BodyTooLarge:
            if not started:
                await _respond(send, 413, f"body over {self.max_body} bytes")

    def _refusal(self, scope: dict, headers: dict[bytes, bytes]) -> tuple[int, str] | None:
        if headers.get(b"host", b"") not in self.hosts:
            return 421, "unexpected Host header"
        origin = headers.get(b"origin")
        if origin is not None and origin not in self.origins:
            return 403, "requests from other origins are not served"
        public = scope.get("path") in self.public and scope.get("method") in ("GET", "HEAD")
        if not public and not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
            return 401, "missing or wrong bearer token"
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_body:
            return 413, f"body over {self.max_body} bytes"
        has_body = scope.get("method") in ("POST", "PUT", "PATCH")
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if self.json_only and has_body and kind != b"application/json":
            return 415, "only application/json bodies are accepted"
        return None


async def _drain(receive: Receive, limit: int) -> None:
    """Read and drop a refused request's body (at most `limit` bytes)."""
    taken, more = 0, True
    while more and taken <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        taken += len(message.get("body", b""))
        more = message.get("more_body", False)


async def _respond(send: Send, status: int, text: str) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text.encode() + b"\n"})
