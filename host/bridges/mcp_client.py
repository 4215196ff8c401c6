"""`tool.call`: agents call tools of the MCP servers listed in the gateway's config.

    [mcp_servers.parts]
    command = ["python", "-m", "parts_server"]     # stdio
    [mcp_servers.weather]
    url = "http://127.0.0.1:9000/mcp"               # streamable HTTP

An agent asks `tool.call` with CBOR {name: "parts.lookup", args: {...}}; the gateway checks the
agent's registered manifest (`tool_access`), screens the arguments for secrets, calls the tool
with the official `mcp` SDK client, filters the result and answers {ok, result, is_error} cut
to what the agent can take. Every call, allowed or not, is audited.
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


class ToolBridge:
    def __init__(self, servers: dict[str, dict[str, Any]], gateway: GatewayAPI) -> None:
        self.servers = servers
        self.gw = gateway
        self.tools: dict[str, tuple[Any, str]] = {}  # "server.tool" -> (client, tool name)
        self.descriptions: dict[str, str] = {}  # "server.tool" -> what it does (for procedural memory)
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> ToolBridge:
        from mcp import Client, StdioServerParameters

        async with AsyncExitStack() as stack:  # a server that fails closes those opened before it
            for name, spec in sorted(self.servers.items()):
                if not isinstance(spec, dict) or ("command" in spec) == ("url" in spec):
                    raise MicrofangError(f"mcp_servers.{name}: needs command = [...] or url = \"...\"")
                if "command" in spec:
                    command = spec["command"]
                    if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
                        raise MicrofangError(f"mcp_servers.{name}.command: must be a list of strings")
                    target: Any = StdioServerParameters(command=command[0], args=command[1:], env=spec.get("env"))
                else:
                    target = str(spec["url"])
                try:
                    client = await stack.enter_async_context(Client(target))
                    listed = await client.list_tools()
                except Exception as e:  # a server that does not start or answer: say which, in one line
                    raise MicrofangError(f"mcp_servers.{name}: cannot connect ({type(e).__name__}: {e})") from None
                for tool in listed.tools:
                    self.tools[f"{name}.{tool.name}"] = (client, tool.name)
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
        client, tool = self.tools[name]
        try:
            result = await asyncio.wait_for(client.call_tool(tool, args), CALL_TIMEOUT_S)
        except TimeoutError:
            self._audit(request, "tool.call", {**audit, "ok": False, "error": "timeout"})
            raise MicrofangError(f"tool {name} did not answer in {CALL_TIMEOUT_S:.0f} s") from None
        text = "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")
        if not text and result.structured_content is not None:
            text = json.dumps(result.structured_content)
        answer = filter_output(text)
        self._audit(request, "tool.call", {**audit, "ok": not result.is_error, "bytes": len(text.encode()),
                                           "filtered": answer != text})
        return {"result": answer, "is_error": bool(result.is_error)}

    def _audit(self, request: Request, action: str, detail: dict[str, Any]) -> None:
        self.gw.audit(request.device, request.agent, action, detail)
