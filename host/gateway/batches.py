"""The gateway's intake: messages from the broker and deferred writes, committed in batches.

paho's thread puts each message (topic, payload, mid, qos) on `queue`; `run` takes what has
arrived (up to BATCH messages) with the writes deferred since the last batch (replies, the end
of requests whose reply the broker has), handles them in ONE store transaction (a savepoint per
message, so a bug rolls back only its own message) and acknowledges the messages to the broker
only once it has committed. While the store fails the batch is tried again with back-off and
nothing is acknowledged; `problem` says why (/healthz reports it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from microfang.gateway.db import RETRY_S, StoreFailure
from microfang.gateway.store import Store

BATCH = 256  # messages committed in one transaction, at most
Message = tuple[str, bytes, int, int]  # (topic, payload, MQTT message id, qos)


class Batches:
    def __init__(self, store: Store, handle: Callable[[str, bytes], None], ack: Callable[[int, int], object],
                 log: Callable[[str], None], metrics: dict[str, int]) -> None:
        self.store = store
        self.handle = handle  # one message, inside the batch's transaction
        self.ack = ack
        self.log = log
        self.metrics = metrics
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self.problem: str | None = None  # why the store fails right now (None: it works)
        self._deferred: list[Callable[[], None]] = []
        self._woken = False  # a None in the queue already asks for a batch

    def defer(self, action: Callable[[], None]) -> None:
        """Run `action` (a write) in the next batch's transaction."""
        self._deferred.append(action)
        if not self._woken:
            self._woken = True
            self.queue.put_nowait(None)

    async def run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            self._woken = False
            actions, self._deferred = self._deferred, []
            messages = [item for item in batch if item is not None]
            await self._commit(messages, actions)
            for _, _, mid, qos in messages:
                if qos:
                    self.ack(mid, qos)  # only now: its effects are committed

    async def _commit(self, messages: list[Message], actions: list[Callable[[], None]]) -> None:
        """While the store fails, try again with back-off (the messages are not acknowledged
        meanwhile, so a gateway stopped now gets them again from the broker)."""
        wait = RETRY_S[0]
        while True:
            try:
                with self.store.transaction():
                    self.store.serialize()
                    for action in actions:
                        self._run_deferred(action)
                    for topic, payload, _, _ in messages:
                        self.handle(topic, payload)
            except StoreFailure as e:
                self.metrics["store_failures"] += 1
                if self.problem != str(e):
                    self.log(f"store failing, not acknowledging, retrying: {e}")
                self.problem = str(e)
                await asyncio.sleep(wait)
                wait = min(wait * 2, RETRY_S[1])
                continue
            if self.problem is not None:
                self.log("store works again")
                self.problem = None
            return

    def _run_deferred(self, action: Callable[[], None]) -> None:
        try:
            with self.store.transaction(savepoint=True):
                action()
        except StoreFailure:
            raise
        except Exception as e:  # a bug: logged, its writes rolled back, the batch goes on
            self.log(f"error in a deferred write: {e!r}")
