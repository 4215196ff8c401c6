"""The gateway's intake: messages from the broker and deferred writes, committed in batches,
every device served in turn.

paho's client (on the event loop, mqttloop.py) hands each message (topic, payload, mid, qos)
to `offer`, which only appends it and wakes `run`. There each message goes into the queue of the device its topic
names (`source`: a message whose topic names no device at all is dropped and acknowledged at
once; one queue holds everything from names the gateway does not know yet), and `run` takes
ONE message from each queue in turn: a round, and more rounds until the batch holds BATCH
messages or has taken BUDGET_S of handling time (a quarter of it when replies are waiting to
be written: they go out with that batch). So a device that floods the gateway, with garbage or with valid
messages that are refused, has one turn in each round like every other device: a quiet board's
message waits for at most about one batch, not for the flood's backlog.

A batch's messages are handled, with the writes deferred since the last batch (replies, the
end of requests whose reply the broker has), in ONE store transaction (a savepoint per message,
so a bug rolls back only its own message) and acknowledged to the broker only once it has
committed. While the store fails (or a bug breaks the commit itself, a staged write: only a
message's own handling has a savepoint) the batch is tried again with back-off and nothing is
acknowledged; `problem` says why (/healthz reports it), and the intake never stops for good.
Between batches the loop yields, so /healthz, /metrics and the requests' own tasks run however
long the backlog is.

A device's queue holds at most DEVICE_BYTES of payloads: past that its messages are dropped as
over-quota (and acknowledged), so a flood cannot exhaust the gateway's memory either. MQTT 3.1.1
asks for PUBACKs in the order the messages came; serving devices in turn acknowledges across
devices out of that order (Mosquitto matches acknowledgements by message id).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from microfang.gateway.db import RETRY_S, StoreFailure
from microfang.gateway.store import Store

BATCH = 256  # messages committed in one transaction, at most
BUDGET_S = 0.002  # handling time one batch takes, at most (plus its last message)
DEVICE_BYTES = 1 << 20  # payload bytes queued for one device, at most
Message = tuple[str, bytes, int, int]  # (topic, payload, MQTT message id, qos)
Source = Callable[[str], str | None]  # topic -> the queue it joins; None: dropped (and counted)
Drop = Callable[[str, str, str], None]  # (reason, topic, detail): counted and logged


class Batches:
    def __init__(self, store: Store, handle: Callable[[str, bytes], None], ack: Callable[[int, int], object],
                 log: Callable[[str], None], metrics: dict[str, int], source: Source, drop: Drop) -> None:
        self.store = store
        self.handle = handle  # one message, inside the batch's transaction
        self.ack = ack
        self.log = log
        self.metrics = metrics
        self.source = source
        self.drop = drop
        self.problem: str | None = None  # why the store fails right now (None: it works)
        self._loop = asyncio.get_running_loop()
        self._arrived: deque[Message] = deque()  # from the broker, not yet in a device's queue
        self._work = asyncio.Event()
        self._queues: dict[str, deque[Message]] = {}  # device -> its messages, oldest first
        self._bytes: dict[str, int] = {}  # device -> payload bytes in its queue
        self._turns: deque[str] = deque()  # devices with queued messages, in serving order
        self._deferred: list[Callable[[], None]] = []

    def offer(self, message: Message) -> None:
        """A message from the broker (paho's on_message)."""
        self._arrived.append(message)
        self._work.set()

    def defer(self, action: Callable[[], None]) -> None:
        """Run `action` (a write) in the next batch's transaction."""
        self._deferred.append(action)
        self._work.set()

    @property
    def queued(self) -> int:
        """Messages waiting for their turn."""
        return sum(len(q) for q in self._queues.values()) + len(self._arrived)

    def backlog(self, device: str) -> int:
        """The device's messages waiting for their turn."""
        queue = self._queues.get(device)
        return 0 if queue is None else len(queue)

    async def run(self) -> None:
        while True:
            if not (self._arrived or self._turns or self._deferred):
                self._work.clear()
                await self._work.wait()
            self._sort()
            actions, self._deferred = self._deferred, []
            taken = await self._commit(actions)
            for _, _, mid, qos in taken:
                if qos:
                    self.ack(mid, qos)  # only now: its effects are committed
            await asyncio.sleep(0)  # let /healthz and the requests' tasks run between batches

    def _sort(self) -> None:
        """Put what arrived into its device's queue (what names no device is dropped now).
        Only what is there now."""
        for _ in range(len(self._arrived)):
            message = self._arrived.popleft()
            topic, payload, mid, qos = message
            device = self.source(topic)
            if device is not None and self._bytes.get(device, 0) + len(payload) > DEVICE_BYTES:
                self.drop("over-quota", topic, f"{DEVICE_BYTES} bytes already queued from {device!r}")
                device = None
            if device is None:
                if qos:
                    self.ack(mid, qos)  # nothing of it is kept
                continue
            queue = self._queues.get(device)
            if queue is None:
                queue = self._queues[device] = deque()
                self._turns.append(device)
            queue.append(message)
            self._bytes[device] = self._bytes.get(device, 0) + len(payload)

    def _next(self) -> Message:
        """The next device's oldest message (the device goes to the back of the line)."""
        device = self._turns[0]
        queue = self._queues[device]
        message = queue.popleft()
        self._bytes[device] -= len(message[1])
        if queue:
            self._turns.rotate(-1)
        else:
            self._turns.popleft()
            del self._queues[device], self._bytes[device]
        return message

    def _take(self, taken: list[Message]) -> None:
        taken.append(self._next())  # first: a store failure while handling it retries it too
        self.handle(taken[-1][0], taken[-1][1])

    async def _commit(self, actions: list[Callable[[], None]]) -> list[Message]:
        """Handle the deferred writes and the next messages in turn in one transaction; return
        the messages it took. While the store fails, try the same again with back-off (the
        messages are not acknowledged meanwhile, so a gateway stopped now gets them again from
        the broker)."""
        wait = RETRY_S[0]
        taken: list[Message] = []
        first = True
        while True:
            try:
                with self.store.transaction():
                    self.store.serialize()
                    for action in actions:
                        self._run_deferred(action)
                    for topic, payload, _, _ in taken:  # a retry: the same messages again
                        self.handle(topic, payload)
                    if first:
                        first = False
                        # Replies are waiting to go out: a short budget, so they are not held
                        # up by a flood's.
                        budget = BUDGET_S / 4 if actions else BUDGET_S
                        deadline = time.perf_counter() + budget
                        for _ in range(min(len(self._turns), BATCH)):  # a round: each device one message
                            self._take(taken)
                        while self._turns and len(taken) < BATCH and time.perf_counter() < deadline:
                            self._take(taken)
            except Exception as e:  # the store failing, or a bug in what commits (a staged write)
                failure = str(e) if isinstance(e, StoreFailure) else f"internal error committing a batch: {e!r}"
                self.metrics["store_failures"] += 1
                if self.problem != failure:
                    self.log(f"store failing, not acknowledging, retrying: {failure}")
                self.problem = failure
                await asyncio.sleep(wait)
                wait = min(wait * 2, RETRY_S[1])
                continue
            self.metrics["batches"] += 1
            if self.problem is not None:
                self.log("store works again")
                self.problem = None
            return taken

    def _run_deferred(self, action: Callable[[], None]) -> None:
        try:
            with self.store.transaction(savepoint=True):
                action()
        except StoreFailure:
            raise
        except Exception as e:  # a bug: logged, its writes rolled back, the batch goes on
            self.log(f"error in a deferred write: {e!r}")
