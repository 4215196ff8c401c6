# The board-gateway wire (docs/protocol.md "Wire protocol"): what abi.py is for the agent ABI.
#
# One table both ends obey: the board's link (firmware/link.py, firmware/deploy.py) and the
# gateway (host/gateway/) import their topics, message kinds, control kinds, transfer sizes and
# name rule from here and from nowhere else. Runs on MicroPython and CPython (no re, no typing).
#
# Topics live under mf/{fleet}/{device}/:
#
#   channel      direction          payload
#   status       board -> gateway   b"online" / b"offline" (retained; the last will says offline)
#   tele         board -> gateway   envelope, kind "tele"
#   up/{agent}   board -> gateway   envelope: an agent's requests, publishes, spawns, log lines
#                                   (the K_ kinds below) and the deploy answers BOARD_ANSWERS
#   log/{agent}  board -> gateway   envelope, kind "log": [[seq, payload], ...]
#   down/{agent} gateway -> board   envelope, kind "reply" or "message"
#   ctl          gateway -> board   envelope, kinds CTL_KINDS

ROOT = "mf"

# Channels: the third level of a topic.
STATUS = "status"
TELE = "tele"
UP = "up"
LOG = "log"
DOWN = "down"
CTL = "ctl"
AGENT_CHANNELS = (UP, LOG, DOWN)  # channels followed by /{agent}
BOARD_CHANNELS = (STATUS, TELE, UP, LOG)  # what a board publishes (the gateway subscribes to them)

ONLINE = b"online"
OFFLINE = b"offline"

# Message kinds on up/{agent} (and tele, log), board -> gateway.
K_TELE = "tele"  # {uptime_ms, free_heap, flash_used, flash_total, agents, link, rtt_p50_ms}
K_LOG = "log"  # [[seq, payload], ...]: memory-log records to replicate
K_REQUEST = "request"  # {id, kind, body}: an agent's request (body: the agent's own CBOR)
K_PUBLISH = "publish"  # {topic, data}: an agent's publish
K_AGENT = "agent"  # {version, budgets}: an agent was spawned; the gateway enforces its budgets
K_UNDELIVERED = "undelivered"  # {kind, id, reason}: a down/ message the board took but could not queue
K_LINES = "lines"  # {line, ms, dropped}: an agent's mf_log line (agentlines.py), within the budget below
LINE_MAX = 160  # bytes of a line forwarded (longer ones are cut)
LINES_PER_S = 5  # lines an agent may forward a second, on average ...
LINES_BURST = 20  # ... and at once

# The board's answers to deploy and migration commands (firmware/deploy.py), on up/{agent}.
K_PUT_ACK = "put_ack"  # {xfer, offset, probe?, chunk?}: what the board holds of a transfer, the chunk size it wants
K_DEPLOYED = "deploy"  # {xfer, ok, version | reason}: a transfer was installed (or refused)
K_SNAPSHOT = "snapshot"  # {ok, size, sha256 | reason}: a snapshot was taken (also a ctl command)
K_SNAP_CHUNK = "snap_chunk"  # {offset, data}: a piece of a snapshot
K_REMOVED = "removed"  # {}: the agent was removed after it moved
BOARD_ANSWERS = (K_PUT_ACK, K_DEPLOYED, K_SNAPSHOT, K_SNAP_CHUNK, K_REMOVED)

# Message kinds on down/{agent}, gateway -> board.
K_REPLY = "reply"  # {id, ok, body | text | error}: the answer to a request
K_MESSAGE = "message"  # any CBOR: a message event for the agent

# Control kinds on ctl, gateway -> board. Lifecycle commands carry no body (0).
C_LOG_ACK = "log_ack"  # body: the highest memory-log seq the gateway holds
C_SUSPEND = "suspend"
C_RESUME = "resume"
C_RECLAIM = "reclaim"
LIFECYCLE = (C_SUSPEND, C_RESUME, C_RECLAIM)
# Deploy and migration commands, carried out by deploy.Installer.control.
C_PUT = "put"  # {xfer, size, sha256, what}: begin or probe a transfer
C_CHUNK = "chunk"  # {xfer, offset, data, size, what}
C_SNAPSHOT = K_SNAPSHOT  # {}: suspend the agent and snapshot it
C_SNAP_READ = "snap_read"  # {offset}
C_REMOVE = "remove"  # {}: the agent runs elsewhere now
TRANSFER_COMMANDS = (C_PUT, C_CHUNK, C_SNAPSHOT, C_SNAP_READ, C_REMOVE)
CTL_KINDS = (C_LOG_ACK,) + LIFECYCLE + TRANSFER_COMMANDS
# What a transfer (put, chunk: `what`) carries.
WHAT_BUNDLE = "bundle"  # a signed bundle: installed
WHAT_SNAPSHOT = "snapshot"  # a migrating agent's snapshot: restored

# Transfer sizes.
MAX_TRANSFER = 1 << 20  # a bundle or a snapshot; more would not fit a board's flash anyway
CHUNK_MAX = 4096  # gateway -> board: one chunk per message, written to flash before the ack
# The chunk size a board asks for in its put_ack (`chunk`); the gateway sends that, clamped to
# CHUNK_MIN..CHUNK_MAX, and CHUNK_MAX to a board that names none. A board with a small heap
# (port.SMALL_HEAP: a plain ESP32, ~110 KB) asks for CHUNK_SMALL: a 4 KB message needs a 4 KB
# hole, which a heap full of agents has not (issue 16); others ask for CHUNK_MAX.
CHUNK_MIN = 256
CHUNK_SMALL = 512


def chunk_size(asked):
    """The chunk size the gateway sends a board that asked for `asked` (None: it did not say)."""
    if not isinstance(asked, int) or isinstance(asked, bool):
        return CHUNK_MAX
    return max(CHUNK_MIN, min(CHUNK_MAX, asked))

READ_MAX = 2048  # board -> gateway: one snapshot piece, fits one outbox record with its envelope

# A reply's text or results: what fits the SDK's 512-byte event buffer with the reply's CBOR
# around it (tools/sdk/mf.h).
REPLY_BYTES = 384

# One name rule for agents, devices, fleets and transfers: they become topic levels and file
# names (NAME_RULE).
NAME_MAX = 32
NAME_RULE = "1-32 of a-z 0-9 _ - starting with a letter or digit"


def _name_char(c, first):
    return "a" <= c <= "z" or "0" <= c <= "9" or (not first and c in "-_")


def name_ok(name):
    """Whether `name` follows the name rule."""
    if not isinstance(name, str) or not 0 < len(name) <= NAME_MAX:
        return False
    for i in range(len(name)):
        if not _name_char(name[i], i == 0):
            return False
    return True


def prefix(fleet, device):
    """mf/{fleet}/{device}/: every topic of one board starts so."""
    return "%s/%s/%s/" % (ROOT, fleet, device)


def topic(fleet, device, channel, agent=None):
    """The topic of `channel` (and `agent` for up, log and down) of one board."""
    return prefix(fleet, device) + (channel if agent is None else channel + "/" + agent)


def subscriptions(fleet=None, device=None):
    """Topic filters: a board's (gateway -> board) when named, else the gateway's (board ->
    gateway, every fleet and device)."""
    if device is not None:
        return [prefix(fleet, device) + DOWN + "/#", prefix(fleet, device) + CTL]
    return ["%s/+/+/%s" % (ROOT, c) + ("/+" if c in AGENT_CHANNELS else "") for c in BOARD_CHANNELS]


def parse_topic(text):
    """(fleet, device, channel, agent or None) of a board -> gateway topic; None for a topic
    outside the scheme (a bad level, a name against the rule, an unknown channel)."""
    parts = text.split("/")
    if len(parts) not in (4, 5) or parts[0] != ROOT or parts[3] not in BOARD_CHANNELS:
        return None
    if (len(parts) == 5) != (parts[3] in AGENT_CHANNELS):
        return None
    for name in parts[1:3] + parts[4:]:
        if not name_ok(name):
            return None
    return parts[1], parts[2], parts[3], parts[4] if len(parts) == 5 else None
