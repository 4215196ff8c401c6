"""Bridges from the fleet to agent ecosystems (microfang.bridges): MCP tools agents may call
(tool.call), A2A agents both ways (a2a.send, the fleet as A2A agents), and the guard every
bridged call passes (permissions from the registered manifest, exfiltration, output filter)."""
