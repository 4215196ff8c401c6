"""Refused requests, cheap: counted, and audited in aggregate.

A request refused at intake (over its agent's rate limit or budget, or not allowed by the
registered manifest) gets its error reply and nothing else: no request row, no audit record of
its own. Each device's refusals are counted per (action, agent, reason) and written as one audit
record per device and action a second at most, with the counts:

    request refused  {"agent": "a1", "reason": "rate limited: ...", "count": 1834, "window_s": 1.0}

The first refusal of a quiet spell is written at once (an attack shows in the audit log as it
starts); what follows within the second is held and written when the second is over, in a
gateway batch (`defer`), so one board's flood costs O(1) audit records a second, not one per
message, and the audit chain's lock is not taken for every refused message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from microfang.gateway.store import Store

WINDOW_S = 1.0  # one aggregate record per device and action in this long, at most

Key = tuple[str, str, str, str]  # (device, action, agent, reason)
Defer = Callable[[Callable[[], None]], None]


class Refusals:
    def __init__(self, store: Store, defer: Defer, window_s: float = WINDOW_S) -> None:
        self.store = store
        self.defer = defer
        self.window_s = window_s
        self.counted = 0  # refusals since the gateway started
        self._held: dict[Key, int] = {}  # refusals counted but not yet audited
        self._written: dict[tuple[str, str], float] = {}  # (device, action) -> when last audited
        self._flush_due = False  # a flush is scheduled

    def count(self, device: str, agent: str, action: str, reason: str) -> None:
        """One refusal, inside its message's transaction."""
        self.counted += 1
        now = time.monotonic()
        if now - self._written.get((device, action), -self.window_s) >= self.window_s and not self._pending(device,
                                                                                                           action):
            self._written[(device, action)] = now
            self.store.audit(device, agent, action, {"agent": agent, "reason": reason, "count": 1, "window_s": 0})
            return
        key = (device, action, agent, reason)
        self._held[key] = self._held.get(key, 0) + 1
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_later(self.window_s, self.defer, self.flush)

    def _pending(self, device: str, action: str) -> bool:
        return any(d == device and a == action for d, a, _, _ in self._held)

    def flush(self) -> None:
        """Audit the held counts (in a batch's transaction): one record per (device, action,
        agent, reason) held; a device flooding with one agent and reason gets one a second."""
        self._flush_due = False
        now = time.monotonic()
        held, self._held = self._held, {}
        for (device, action, agent, reason), n in held.items():
            since = self._written.get((device, action), now - self.window_s)
            self._written[(device, action)] = now
            self.store.audit(device, agent, action, {"agent": agent, "reason": reason, "count": n,
                                                     "window_s": round(now - since, 3)})
