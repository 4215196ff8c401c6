"""Whom the gateway believes online.

A device's `status` topic (retained "online", and the broker's last will "offline") carries no
envelope: whoever the broker lets write it can claim anything there (anyone on an anonymous
broker; on the production broker the device itself, docs/mosquitto/acl). So a status message
is only a claim, and a claim alone changes nothing:

- A device becomes online at a message from it that verified (HMAC, replay window: any kind,
  telemetry included), never at an "online" claim: a forged "online" for a board that is not
  there leaves it offline. A message another gateway on the store verified counts too (the
  store's `online` and `last_seen`, read every SILENCE_CHECK_S): the shared subscription may
  hand this gateway none of a board's messages (two boards' telemetry alternating between two
  gateways: each hears one board; or one of them dead, its session still taking its turn).
- An "offline" claim is believed once no verified message from the device followed it for
  `grace_s` seconds (boards send telemetry every few seconds while connected): a forged
  "offline" for a board that is talking is disproved by its next message and changes nothing.
- Silence is believed too: a board believed online from which no verified message came for
  `silence_s` seconds (it lost power, or its last will never reached the gateway: a broker
  restarted, a gateway down at the time) is offline. Silence is read from the store's
  `last_seen`, so a board talking to another gateway on the store is not silent.

Job retries and `microfang status` read the result (the devices' `online`, in the registry's
records and the store). The store's `last_seen` is when a verified message last came, written
by whichever gateway took it: with gateways sharing a store (each gets only its share of the
fleet's messages, but every status message) the check of an "offline" claim reads it there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from microfang.gateway.store import Store

OFFLINE_GRACE_S = 15.0  # three of a board's default telemetry periods (firmware/link.py, 5 s)
SILENCE_S = 60.0  # twelve telemetry periods without a verified message: offline
SILENCE_CHECK_S = 5.0  # how often the store is asked who fell silent (one query)


def believed_online(record: dict[str, Any], now: float, silence_s: float = SILENCE_S) -> bool:
    """Whether a store's device record (store.devices) is online with no gateway running: online,
    and heard within silence_s (nobody marks a silent board offline then)."""
    seen = record.get("last_seen")
    return bool(record.get("online")) and seen is not None and now - seen < silence_s


def reader_view(store: Store) -> Callable[[dict[str, Any], float], bool]:
    """How a reader of the store (`status`, `keys list`, MCP, the dashboard) tells whether a
    device record is online: while a gateway runs, what it believes (it turns a board offline
    after its own --offline-after silence, which a reader does not know); with none running,
    believed_online's default silence."""
    from microfang.gateway.peers import live_gateways

    if live_gateways(store):
        return lambda record, now: bool(record.get("online"))
    return believed_online


class Presence:
    def __init__(self, store: Store, devices: Callable[[], dict[str, dict[str, Any]]], metrics: dict[str, int],
                 grace_s: float = OFFLINE_GRACE_S, clock: Callable[[], float] = time.time,
                 silence_s: float = SILENCE_S) -> None:
        self.store = store
        self.devices = devices  # the registry's records (their "online" is what the gateway believes)
        self.metrics = metrics
        self.grace_s = grace_s
        self.silence_s = silence_s
        self.clock = clock
        self._offline_claims: dict[str, float] = {}  # device -> when an unconfirmed "offline" came
        self._heard: dict[str, float] = {}  # device -> its last verified message here (not yet in last_seen)
        self._next_silence_check = clock() + SILENCE_CHECK_S

    def claim(self, device: str, record: dict[str, Any], online: bool) -> None:
        """A status message: "offline" waits to be confirmed by silence; "online" waits for a
        verified message (heard)."""
        self.metrics["presence"] += 1
        if online:
            return
        if record.get("online"):
            self._offline_claims.setdefault(device, self.clock())

    def heard(self, device: str, record: dict[str, Any]) -> None:
        """A verified message from the device (inside its store transaction): it is online."""
        self._offline_claims.pop(device, None)
        self._heard[device] = self.clock()
        if not record.get("online"):
            record["online"] = True
            self.store.set_presence(device, True)

    def due(self) -> bool:
        """Whether expire() has something to look at: claims waiting, or a silence check."""
        return bool(self._offline_claims) or self.clock() >= self._next_silence_check

    def expire(self) -> None:
        """Believe the "offline" claims no verified message disproved within grace_s, and the
        silence of boards not heard for silence_s (run in a store transaction, about once a
        second)."""
        now = self.clock()
        if now >= self._next_silence_check:
            self._next_silence_check = now + SILENCE_CHECK_S
            self._believe_silence(now)
        for device, since in list(self._offline_claims.items()):
            if now - since < self.grace_s:
                continue
            del self._offline_claims[device]
            stored = self.store.device(device)
            record = self.devices().get(device)
            if stored is None or record is None:
                continue
            if stored["last_seen"] is not None and stored["last_seen"] >= since:
                continue  # another gateway on the store heard it since: the claim was false
            record["online"] = False
            self.store.set_presence(device, False)

    def _believe_silence(self, now: float) -> None:
        quiet_since = now - self.silence_s
        # One scan of the store's devices table every SILENCE_CHECK_S, whichever gateway heard them.
        rows = self.store.db.execute("SELECT id, online FROM devices WHERE last_seen IS NULL OR last_seen < ?",
                                     (quiet_since,)).fetchall()
        records = self.devices()
        for device, stored_online in rows:
            if self._heard.get(device, float("-inf")) >= quiet_since:
                continue  # heard in this transaction or the last ones: last_seen is written at commit
            record = records.get(device)
            if record is not None and record.get("online"):
                record["online"] = False
            if stored_online:
                self.store.set_presence(device, False)
            self._heard.pop(device, None)
        self._believe_others(quiet_since)

    def _believe_others(self, quiet_since: float) -> None:
        """Boards another gateway on the store verified a message from within the silence are
        online here too (the module docstring: this gateway may hear none of their messages)."""
        records = self.devices()
        rows = self.store.db.execute("SELECT id FROM devices WHERE online = 1 AND last_seen >= ?",
                                     (quiet_since,)).fetchall()
        for (device,) in rows:
            record = records.get(device)
            if record is not None and not record.get("online"):
                record["online"] = True

    @property
    def unconfirmed(self) -> int:
        """"offline" claims waiting for their grace to pass."""
        return len(self._offline_claims)
