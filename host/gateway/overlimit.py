"""Requests over their agent's rate limit, refused before their HMAC is checked, with no replay
hole.

A board's agent flooding the gateway with fresh signed requests over its registered rate limit
cost a full check per request (CBOR decoded and encoded again, the HMAC, the replay window)
although each is refused. Here, while the agent's token bucket is empty and its error replies
for the second are spent (refusals.py: no reply would go out anyway), a request on its up topic
is refused from its decoded envelope alone (`refuse`): counted and audited in aggregate like any
refusal ("unverified": n in the record), and acknowledged with its batch. Likewise, while a
device has BACKLOG messages queued (a flood), one whose sequence number its replay window
already holds is dropped as a replay from its decoded envelope alone: nothing is recorded for
it, so skipping its HMAC lets nothing in.

Why that opens no replay hole. An unverified sequence number cannot go into the device's replay
window: whoever can publish on the topic could claim any number and shut the device out (the
production broker ACL lets only the device itself publish there, but the gateway must be sound
without it). Left out of the window, a refused message, if genuine, could be published again
later (by whoever recorded it) once the bucket has tokens: it would verify, its number would
look fresh, and it would run. So the refusals are fenced in the transaction that refuses them,
before any of their messages is acknowledged (`_fence`, just before the batch commits): of each
device's requests refused unverified in the batch, the one claiming the highest sequence number
is verified; if it fails, the next highest, and so on (a forger's messages cost a verification
each, as all did before). Once one verifies, its number f is genuine, and every refused message
claiming a number <= f has its number accepted into the window: a copy of it later is a replay.
Every one claiming more than f failed its own verification: a forgery, which no copy can make
executable. A copy arriving in the same batch, before the fence, is caught by its (sequence,
HMAC) pair (`copy_of_refused`). The window is stored with the batch (one write per device), and
the broker redelivers whatever was not acknowledged, so no refused message is acknowledged
without its fence: not across a crash or a restart, nor with several gateways on one store (the
window is the store's). The device's own later messages are numbered above f; the cost, only
where a forger can publish on the device's topic, is that a forged claim <= f marks that number,
so a genuine message with it arriving late (reordered) would be dropped as a replay.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from microfang.firmware import envelope, protocol
from microfang.gateway import fastcbor
from microfang.gateway.refusals import Refusals
from microfang.gateway.router import RATE_LIMITED, Router
from microfang.gateway.store import Store

BACKLOG = 32  # a device's queued messages from which its replays are dropped before their HMAC


class Unverified:
    def __init__(self, store: Store, router: Router, refusals: Refusals, metrics: dict[str, int]) -> None:
        self.store = store
        self.router = router
        self.refusals = refusals
        self.metrics = metrics
        self._of = -1  # the transaction _refused belongs to (Database.transactions)
        self._refused: dict[str, dict[int, dict[bytes, bytes]]] = {}  # device -> {seq: {mac: payload}}

    def _pending(self) -> dict[str, dict[int, dict[bytes, bytes]]]:
        if self._of != self.store.db.transactions:
            self._of, self._refused = self.store.db.transactions, {}
        return self._refused

    def screen(self, device: str, record: dict[str, Any], agent: str | None, doc: dict[str, Any], mac: bytes,
               payload: bytes, flooding: bool) -> str | None:
        """Inside the message's batch, before its HMAC (`doc` and `mac` decoded from `payload` by
        envelope.decode_envelope): "replay" (`flooding` and its number is taken: drop it),
        "refused" (a request on up/{agent} over its agent's rate limit with no error replies
        left: counted, fenced at commit), or None: check it fully."""
        over = agent is not None and self.router.limiter.empty(device, agent) and \
            not self.refusals.may_answer(device, agent)
        if not (over or flooding) or doc["dev"] != device:
            return None  # another device's name: the full check names it
        seq = doc["seq"]
        if not self.store.window(device, record["window"]).fresh(seq):
            return "replay"
        if not over or agent is None or doc["kind"] != protocol.K_REQUEST or doc["agent"] != agent:
            return None
        pending = self._pending()
        if device not in pending:
            pending[device] = {}
            self.store.before_commit(self._fence, (device, record))
        pending[device].setdefault(seq, {})[bytes(mac)] = payload
        self.metrics["requests"] += 1
        self.metrics["refused_unverified"] += 1
        self.router.counts["rate_limited"] += 1
        self.refusals.count(device, agent, "request refused", RATE_LIMITED, verified=False)
        return "refused"

    def copy_of_refused(self, device: str, seq: int, mac: bytes) -> bool:
        """Whether a verified message (its sequence number and mac) is a copy of one refused
        unverified in this batch."""
        macs = self._pending().get(device, {}).get(seq)
        if not macs:
            return False
        return bytes(mac) in macs

    def _fence(self, devices: list[tuple[str, dict[str, Any]]]) -> None:
        """Just before the batch commits: each device's refused numbers into its window, bounded
        by the highest one that verifies (see the module's docstring)."""
        pending = self._pending()
        for device, record in devices:
            refused = pending.pop(device, {})
            fence = self._highest_genuine(device, record["key"], refused)
            if fence is None:
                continue
            window = self.store.window(device, record["window"])
            for seq in refused:
                if seq <= fence:
                    window.accept(seq)
            self.store.save_window(device, window)
            self.store.after_commit(partial(record.__setitem__, "window", window))
            self.metrics["fenced"] += 1

    @staticmethod
    def _highest_genuine(device: str, key: bytes, refused: dict[int, dict[bytes, bytes]]) -> int | None:
        """The highest sequence number among `refused` whose message verifies (None: none does)."""
        for seq in sorted(refused, reverse=True):
            for payload in refused[seq].values():
                try:
                    envelope.open_envelope(payload, lambda dev: key if dev == device else None, codec=fastcbor)
                except envelope.EnvelopeError:
                    continue  # a forgery: nothing to fence for it
                return seq
        return None
