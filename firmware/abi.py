# The agent ABI: what an agent may import and must export (docs/protocol.md "Agent ABI").
#
# This table is the single list of host functions: the build checks imports against it and
# the sandbox links from it. Signatures use wasm3's notation: result letter, then params.

HOST_MODULE = "mf"

# name -> wasm3 signature
HOST_FUNCTIONS = {
    "log": "v(ii)",  # (ptr, len): a UTF-8 line for the board log
    "now_ms": "I()",  # milliseconds since the supervisor started
    "publish": "i(iiii)",  # (topic_ptr, topic_len, body_ptr, body_len) -> 0 or error code
    "request": "i(iiii)",  # (kind_ptr, kind_len, body_ptr, body_len) -> request id (> 0) or error code
    "sensor_read": "i(i)",  # (channel) -> reading (board-defined units, e.g. centi-degrees)
    "mem_append": "i(ii)",  # (ptr, len) -> sequence number or error code
    "mem_read": "i(iii)",  # (seq, ptr, cap) -> bytes written or error code
}

REQUIRED_EXPORTS = {
    "memory": 2,  # export kind: memory
    "mf_alloc": 0,  # func (len) -> ptr: where the host writes event payloads
    "mf_on_event": 0,  # func (kind, ptr, len) -> status
}
OPTIONAL_EXPORTS = {"mf_init": 0}

EXPORT_SIGNATURES = {"mf_alloc": "i(i)", "mf_on_event": "i(iii)", "mf_init": "v()"}

# Event kinds delivered to mf_on_event.
EV_START = 1
EV_TIMER = 2
EV_MESSAGE = 3
EV_REPLY = 4
EV_REFUEL = 5
EV_STOP = 6
EVENT_NAMES = {1: "start", 2: "timer", 3: "message", 4: "reply", 5: "refuel", 6: "stop"}

# Error codes host functions return to agents (negative so they never collide with results).
E_FAULT = -1  # pointer/length outside the agent's memory
E_TOO_BIG = -2  # length above the per-call cap
E_DENIED = -3  # not permitted by the manifest
E_FULL = -4  # a queue, log or budget is full
E_NOT_FOUND = -5
E_RATE = -6  # rate limit hit

# Largest single payload an agent may hand the host in one call.
MAX_HOST_PAYLOAD = 4096

# What one agent may ask of a board at most (the build refuses more, the board checks again).
MAX_AGENT_MEMORY = 4 * 1024 * 1024
MAX_AGENT_STACK = 256 * 1024
MAX_FUEL = 1 << 48
