# Memory-log replication: each agent's log records go to the gateway on log/{agent} (through
# the link's durable outbox) soon after they are appended, and leave the board's log once the
# gateway has acknowledged them (ctl log_ack, Link._log_ack). An agent appending 50 records
# a second never fills its log while the gateway is reachable:
#   a record appended is sent within _REPLICATE_MS; records appended meanwhile ride along
#   a log/ message carries up to _REPLICATE_BYTES of payload (a big record: alone)
#   at most _REPLICATE_ROUNDS messages per agent and turn: a backlog (after an outage)
#   drains over turns and leaves the outbox room for requests
#   a full outbox sends nothing and loses nothing: the agent stays due
# The link's telemetry tick sweeps every agent too (records appended before it connected).

from . import port

_REPLICATE_MS = 200
_REPLICATE_BYTES = 2048
_REPLICATE_ROUNDS = 4


class Replicator:
    """`send(agent_id, records)` queues one log/ message of [[seq, payload], ...] and returns
    its outbox sequence number, or a negative abi error code when it could not be stored."""

    def __init__(self, supervisor, send, clock=port.ticks_ms):
        self.supervisor = supervisor
        self.send = send
        self.clock = clock
        self.replicated = {}  # agent -> highest seq sent (acknowledged ones come back on ctl)
        self._due = set()  # agents whose logs grew since their last replication
        self._since = 0  # when the oldest of those records was appended

    def logged(self, agent_id):
        """An agent appended to its memory log. True when nothing was due before: the owner's
        loop must wake to schedule the next replication."""
        idle = not self._due
        if idle:
            self._since = self.clock()
        self._due.add(agent_id)
        return idle

    def due_in(self, now):
        """Milliseconds from `now` until replicate_due() has work, or None."""
        if not self._due:
            return None
        return max(0, _REPLICATE_MS - port.ticks_diff(now, self._since))

    def replicate_due(self, now):
        if self._due and port.ticks_diff(now, self._since) >= _REPLICATE_MS:
            self.replicate(self._due)

    def replicate(self, agents=None):
        """Send the records the gateway does not have yet of `agents` (None: every agent). An
        agent with records left (a backlog, a full outbox) stays due."""
        pending = set()
        for agent_id in list(self.supervisor.agents if agents is None else agents):
            log = self.supervisor.log(agent_id)
            if log is not None and not self._replicate_log(agent_id, log):
                pending.add(agent_id)
        self._due = pending
        self._since = self.clock()

    def _replicate_log(self, agent_id, log):
        # True when everything appended so far is on its way.
        for _ in range(_REPLICATE_ROUNDS):
            start = max(log.acked, self.replicated.get(agent_id, 0)) + 1
            if start > log.last_seq:
                return True
            batch, size = [], 0
            for seq, payload in log.records(start):
                if batch and size + len(payload) > _REPLICATE_BYTES:
                    break
                batch.append([seq, payload])
                size += len(payload)
            if not batch:
                return True
            if self.send(agent_id, batch) < 0:
                return False  # the outbox is full: again once acknowledgements make room
            self.replicated[agent_id] = batch[-1][0]
        return False
