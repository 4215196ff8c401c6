"""`tool.call`: agents call tools of the MCP servers listed in the gateway's config.

    [mcp_servers.parts]
    command = ["python", "-m", "parts_server"]     # stdio
    sessions = 2                                    # server processes (stdio) or sessions (url); default 1
    timeout_s = 20                                  # per call (the default)
    [mcp_servers.weather]
    url = "http://127.0.0.1:9000/mcp"               # streamable HTTP

An agent asks `tool.call` with CBOR {name: "parts.lookup", args: {...}}; the gateway checks the
agent's registered manifest (`tool_access`), screens the arguments for secrets, calls the tool
with the official `mcp` SDK client, filters the result and answers {ok, result, is_error} cut
to what the agent can take. Every call, allowed or not, is audited.

Concurrent calls share a server's sessions: each call goes to the session with the fewest calls
in flight, and calls on one session are pipelined (JSON-RPC ids). A Python stdio server answers
one call at a time on one core, so `sessions` is what spreads a busy tool over the cores
(bench/bench_bridges.py measures it). A session whose server died or closed the connection is
started again for the next call to it; a server that does not answer in `timeout_s` fails that
call, not the others.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from typing import Any

from microfang.bridges.guard import BridgeDenied, check_access, check_outbound, filter_output
from microfang.firmware.errors import MicrofangError
from microfang.request import GatewayAPI, Request

CALL_TIMEOUT_S = 20.0
MAX_SESSIONS = 16


def one_line(e: BaseException) -> str:
    """An exception as one line for an agent (SDK and pydantic errors span several)."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


class Session:
    """One SDK client session to a server (stdio: a server process of its own), held open by a
    task of its own: the SDK's task groups must be entered and left in one task, while calls and
    restarts come from the requests' tasks."""

    def __init__(self, target: Any, label: str) -> None:
        self.target = target
        self.label = label
        self.client: Any = None
        self.in_flight = 0
        self.restarts = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._opening = asyncio.Lock()

    async def open(self) -> Any:
        """Connect (start the server process for stdio); returns its tools/list result."""
        ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._hold(ready, self._stop), name=f"microfang[mcp:{self.label}]")
        try:
            return await asyncio.shield(ready)
        except BaseException:
            await self.close()
            raise

    async def _hold(self, ready: asyncio.Future[Any], stop: asyncio.Event) -> None:
        from mcp import Client

        try:
            async with Client(self.target) as client:
                listed = await client.list_tools()
                self.client = client
                ready.set_result(listed)
                await stop.wait()
        except BaseException as e:  # (told to open(), or the end of a session that died)
            if not ready.done():
                ready.set_exception(e if isinstance(e, Exception) else ConnectionError("closed while connecting"))
        finally:
            self.client = None

    async def call(self, tool: str, args: dict[str, Any]) -> Any:
        from mcp.shared.exceptions import MCPError
        from mcp_types import CONNECTION_CLOSED

        async with self._opening:
            if self.client is None:  # the connection closed under an earlier call: start it again
                await self.close()
                self.restarts += 1
                await self.open()
        client = self.client
        try:
            return await client.call_tool(tool, args)
        except MCPError as e:
            if e.error.code == CONNECTION_CLOSED and self.client is client:
                self.client = None
            raise

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        try:
            await asyncio.wait_for(task, 10)
        except BaseException:  # (a server that died closes with the SDK's errors; it is gone either way)
            task.cancel()


class ToolBridge:
    def __init__(self, servers: dict[str, dict[str, Any]], gateway: GatewayAPI) -> None:
        self.servers = servers
        self.gw = gateway
        self.tools: dict[str, tuple[list[Session], str, float]] = {}  # "server.tool" -> (sessions, tool, timeout)
        self.descriptions: dict[str, str] = {}  # "server.tool" -> what it does (for procedural memory)
        self.sessions: dict[str, list[Session]] = {}
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> ToolBridge:
        async with AsyncExitStack() as stack:  # a server that fails closes those opened before it
            for name, spec in sorted(self.servers.items()):
                target, count, timeout = server_spec(name, spec)
                sessions = [Session(target, f"{name}#{i}") for i in range(count)]
                for session in sessions:
                    stack.push_async_callback(session.close)
                try:
                    listed = (await asyncio.gather(*(s.open() for s in sessions)))[0]
                except Exception as e:  # a server that does not start or answer: say which, in one line
                    raise MicrofangError(f"mcp_servers.{name}: cannot connect ({one_line(e)})") from None
                self.sessions[name] = sessions
                for tool in listed.tools:
                    self.tools[f"{name}.{tool.name}"] = (sessions, tool.name, timeout)
                    self.descriptions[f"{name}.{tool.name}"] = (tool.description or "").strip()
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def handle(self, request: Request) -> dict[str, Any]:
        body = request.body if isinstance(request.body, dict) else {}
        name, args = body.get("name"), body.get("args", {})
        audit = {"tool": name}
        try:
            if not isinstance(name, str) or not isinstance(args, dict):
                raise BridgeDenied("tool.call needs name (text) and args (a map)")
            manifest = check_access(self.gw.manifest_of(request.device, request.agent), "tool_access", name)
            check_outbound(manifest, args, self.gw.secrets_of(request.device))
            if name not in self.tools:
                raise BridgeDenied(f"no tool {name} (have: {', '.join(sorted(self.tools)) or 'none'})")
        except BridgeDenied as e:
            self._audit(request, "tool.call refused", {**audit, "reason": str(e)})
            raise
        sessions, tool, timeout = self.tools[name]
        session = min(sessions, key=lambda s: s.in_flight)
        session.in_flight += 1
        try:
            result = await asyncio.wait_for(session.call(tool, args), timeout)
        except TimeoutError:
            self._audit(request, "tool.call", {**audit, "ok": False, "error": "timeout"})
            raise MicrofangError(f"tool {name} did not answer in {timeout:g} s") from None
        except Exception as e:  # the server died, refused or broke the protocol: one line for the agent
            self._audit(request, "tool.call", {**audit, "ok": False, "error": one_line(e)})
            raise MicrofangError(f"tool {name}: {one_line(e)}") from None
        finally:
            session.in_flight -= 1
        text = "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")
        if not text and result.structured_content is not None:
            text = json.dumps(result.structured_content)
        answer = filter_output(text)
        self._audit(request, "tool.call", {**audit, "ok": not result.is_error, "bytes": len(text.encode()),
                                           "filtered": answer != text})
        return {"result": answer, "is_error": bool(result.is_error)}

    def _audit(self, request: Request, action: str, detail: dict[str, Any]) -> None:
        self.gw.audit(request.device, request.agent, action, detail)


def server_spec(name: str, spec: Any) -> tuple[Any, int, float]:
    """[mcp_servers.NAME] checked: (SDK client target, sessions, per-call timeout); else a one-line error."""
    from mcp import StdioServerParameters

    if not isinstance(spec, dict) or ("command" in spec) == ("url" in spec):
        raise MicrofangError(f"mcp_servers.{name}: needs command = [...] or url = \"...\"")
    sessions, timeout = spec.get("sessions", 1), spec.get("timeout_s", CALL_TIMEOUT_S)
    if type(sessions) is not int or not 1 <= sessions <= MAX_SESSIONS:
        raise MicrofangError(f"mcp_servers.{name}.sessions: must be a whole number from 1 to {MAX_SESSIONS}")
    if type(timeout) not in (int, float) or not 0 < timeout <= 3600:
        raise MicrofangError(f"mcp_servers.{name}.timeout_s: must be a number of seconds from 0 to 3600")
    if "url" in spec:
        return str(spec["url"]), sessions, float(timeout)
    command = spec["command"]
    if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
        raise MicrofangError(f"mcp_servers.{name}.command: must be a list of strings")
    return StdioServerParameters(command=command[0], args=command[1:], env=spec.get("env")), sessions, float(timeout)
