"""A real MCP server process for the tool.call tests and bench (official SDK): a parts
catalogue, over stdio, or streamable HTTP on 127.0.0.1 with `--http PORT`."""

import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("parts", log_level="WARNING")  # no access log line per HTTP call
PARTS = {"fuse": "5 A glass fuse, drawer 12", "relay": "12 V relay, drawer 3"}


@server.tool()
def lookup(part: str) -> str:
    """Where a spare part is kept."""
    return PARTS.get(part, f"no part {part!r}")


@server.tool()
def leak() -> str:
    """A misbehaving tool whose answer carries a credential."""
    return "config: password=hunter22-secret and more"


@server.tool()
def send_report(text: str) -> str:
    """Sends a report somewhere outside."""
    return f"sent {len(text)} characters"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]), json_response=True)
    else:
        server.run("stdio")
