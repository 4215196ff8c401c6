"""microfang.bridges (the repo's host/bridges/): bridges from the fleet to agent ecosystems —
MCP tools agents may call (tool.call), A2A agents both ways (a2a.send, the fleet as A2A
agents), and the guard every bridged call passes (permissions from the registered manifest,
exfiltration, output filter). A gateway plug-in: imports only microfang.request and
microfang.config of the host."""
