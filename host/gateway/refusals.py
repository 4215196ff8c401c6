"""Refused requests, cheap: counted, and audited in aggregate.

A request refused at intake (over its agent's rate limit or budget, or not allowed by the
registered manifest) gets its error reply and nothing else: no audit record of its own, and a
request row only while its error reply is on its way (requests.py: kept until the broker has
it, so a gateway killed meanwhile still answers it). Each device's refusals are counted per
(action, agent, reason) and written as one audit record per device and action a second at
most, with the counts:

    request refused  {"agent": "a1", "reason": "rate limited: ...", "count": 1834, "window_s": 1.0}

(with "unverified": n when n of them were refused before their HMAC was checked, overlimit.py).

The first refusal of a quiet spell is written at once (an attack shows in the audit log as it
starts); what follows within the second is held and written when the second is over, in a
gateway batch (`defer`), so one board's flood costs O(1) audit records a second, not one per
message, and the audit chain's lock is not taken for every refused message.

Error replies are bounded too: each agent gets at most REPLIES_PER_S of them a second (an agent
a little over its limit hears why; a flood's replies would fill the gateway's outgoing queue
ahead of every other board's answers). The rest are dropped unanswered, counted in the record
(`"unanswered": n`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from microfang.gateway.store import Store

WINDOW_S = 1.0  # one aggregate record per device and action in this long, at most
REPLIES_PER_S = 100  # error replies to one agent's refused requests a second, at most (bursts as many)

Key = tuple[str, str, str, str]  # (device, action, agent, reason)
Defer = Callable[[Callable[[], None]], None]


class Refusals:
    def __init__(self, store: Store, defer: Defer, window_s: float = WINDOW_S) -> None:
        self.store = store
        self.defer = defer
        self.window_s = window_s
        self.counted = 0  # refusals since the gateway started
        self._held: dict[Key, list[int]] = {}  # counted, not yet audited: [count, unanswered, unverified]
        self._replies: dict[tuple[str, str], list[float]] = {}  # (device, agent) -> reply bucket [tokens, at]
        self._written: dict[tuple[str, str], float] = {}  # (device, action) -> when last audited
        self._flush_due = False  # a flush is scheduled

    def count(self, device: str, agent: str, action: str, reason: str, verified: bool = True) -> bool:
        """One refusal, inside its message's transaction; whether to answer it (an error reply).
        `verified`: its HMAC was checked (overlimit.py refuses some before: never answered)."""
        self.counted += 1
        now = time.monotonic()
        answer = verified and self._may_answer(device, agent, now)
        if now - self._written.get((device, action), -self.window_s) >= self.window_s and not self._pending(device,
                                                                                                           action):
            self._written[(device, action)] = now
            self.store.audit(device, agent, action, _detail(agent, reason, [1, 0 if answer else 1, 0 if verified else 1],
                                                            0))
            return answer
        held = self._held.setdefault((device, action, agent, reason), [0, 0, 0])
        held[0] += 1
        held[1] += 0 if answer else 1
        held[2] += 0 if verified else 1
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_later(self.window_s, self.defer, self.flush)
        return answer

    def _may_answer(self, device: str, agent: str, now: float) -> bool:
        bucket = self._replies.get((device, agent))
        if bucket is None:
            if len(self._replies) >= 100_000:
                self._replies.clear()  # bounded: forgetting only refills a bucket
            bucket = self._replies[(device, agent)] = [float(REPLIES_PER_S), now]
        bucket[0] = min(float(REPLIES_PER_S), bucket[0] + (now - bucket[1]) * REPLIES_PER_S)
        bucket[1] = now
        if bucket[0] < 1:
            return False
        bucket[0] -= 1
        return True

    def may_answer(self, device: str, agent: str) -> bool:
        """Whether a refusal now would get an error reply (nothing is taken)."""
        bucket = self._replies.get((device, agent))
        if bucket is None:
            return True
        return bucket[0] + (time.monotonic() - bucket[1]) * REPLIES_PER_S >= 1

    def _pending(self, device: str, action: str) -> bool:
        return any(d == device and a == action for d, a, _, _ in self._held)

    def flush(self) -> None:
        """Audit the held counts (in a batch's transaction): one record per (device, action,
        agent, reason) held; a device flooding with one agent and reason gets one a second."""
        self._flush_due = False
        now = time.monotonic()
        held, self._held = self._held, {}
        for (device, action, agent, reason), counts in held.items():
            since = self._written.get((device, action), now - self.window_s)
            self._written[(device, action)] = now
            self.store.audit(device, agent, action, _detail(agent, reason, counts, round(now - since, 3)))


def _detail(agent: str, reason: str, counts: list[int], window_s: float) -> dict[str, object]:
    n, unanswered, unverified = counts
    detail: dict[str, object] = {"agent": agent, "reason": reason, "count": n, "unanswered": unanswered,
                                 "window_s": window_s}
    if unverified:
        detail["unverified"] = unverified
    return detail
