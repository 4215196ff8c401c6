"""A real MCP server process (official SDK, stdio) whose tools misbehave, for tool.call's
hostile cases: one that does not answer in time, one that kills its server, one whose answer
is far too long and full of control characters, one that answers with its process id."""

import asyncio
import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("hostile")


@server.tool()
async def slow(seconds: float) -> str:
    """Answers after `seconds`."""
    await asyncio.sleep(seconds)
    return "late"


@server.tool()
def crash() -> str:
    """Kills the server process mid-call."""
    os._exit(3)


@server.tool()
def flood() -> str:
    """A megabyte of text with terminal escapes in it."""
    return "\x1b[2J" + "x" * 1_000_000


@server.tool()
async def pid(seconds: float = 0.0) -> int:
    """The server's process id, after `seconds`."""
    await asyncio.sleep(seconds)
    return os.getpid()


if __name__ == "__main__":
    server.run("stdio")
