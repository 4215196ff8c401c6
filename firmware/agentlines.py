# Agents' mf_log lines, forwarded to the gateway (kind "lines" on up/{agent}, protocol.py) as
# `microfang logs` and the dashboard show them. Each agent has a budget (a token bucket of
# protocol.LINES_BURST lines refilled at protocol.LINES_PER_S) so a chatty agent cannot fill the
# outbox or the flash under it; a line is cut to protocol.LINE_MAX bytes; the lines over budget
# are counted, and the count goes up with the next line that fits ("dropped"), so a reader
# sees that lines are missing and how many. Lines are best effort: the link sends them only
# while it is connected (link.py). Runs on MicroPython and CPython.
#
#     lines = AgentLines(send, clock)      # send(agent_id, body) -> stored in the outbox or not
#     lines.forward("hello", "tick 3")     # True: sent; False: over budget (counted)

from . import port, protocol


class AgentLines:
    def __init__(self, send, clock=port.ticks_ms):
        self._send = send
        self._clock = clock
        self._budgets = {}  # agent id -> [tokens (in thousandths of a line), last refill ms, dropped]
        self.dropped = 0  # lines over budget, all agents (the board's telemetry)

    def forward(self, agent_id, line):
        now = self._clock()
        budget = self._budgets.get(agent_id)
        if budget is None:
            budget = self._budgets[agent_id] = [protocol.LINES_BURST * 1000, now, 0]
        else:
            refill = port.ticks_diff(now, budget[1]) * protocol.LINES_PER_S
            budget[0] = min(protocol.LINES_BURST * 1000, budget[0] + refill)
            budget[1] = now
        if budget[0] < 1000:
            budget[2] += 1
            self.dropped += 1
            return False
        text = line
        data = line.encode()
        if len(data) > protocol.LINE_MAX:
            cut = protocol.LINE_MAX
            while cut > 0 and data[cut] & 0xC0 == 0x80:  # not inside a character: before it
                cut -= 1
            text = str(data[:cut], "utf-8")
        if not self._send(agent_id, {"line": text, "ms": now & 0xFFFFFFFF, "dropped": budget[2]}):
            budget[2] += 1  # the outbox is full: this one is lost too
            self.dropped += 1
            return False
        budget[0] -= 1000
        budget[2] = 0
        return True

    def forget(self, agent_id):
        """The agent was reclaimed: its budget goes with it."""
        self._budgets.pop(agent_id, None)
