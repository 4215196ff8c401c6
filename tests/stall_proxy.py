"""A TCP proxy on 127.0.0.1 between boards and their broker that fails the way networks do:
stall() keeps the connections there are open and stops forwarding on them (a NAT that dropped
its state, a half-dead Wi-Fi link: nothing arrives, nothing errors; new connections go
through), mute() stops only what the connections open now send upstream (the client still
hears the broker, the broker hears nothing more from it: a process killed before its
acknowledgements and publishes left it), cut() closes every connection at once (an access
point reboot), partition() stalls the connections there are and every new one too
(accepted, never forwarded) until heal().
What a stalled connection swallowed is lost with it: the peers must find out by their own
deadlines."""

from __future__ import annotations

import asyncio


class StallProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.accepted = 0  # connections taken since the start
        self._forwarding = True  # False during a partition: nothing is forwarded
        self._stalled: set[int] = set()  # connections stall() stopped
        self._muted: set[int] = set()  # connections mute() stopped upstream
        self._links: dict[int, tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> StallProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def stall(self) -> None:
        """Stop forwarding on the connections open now (they stay open); new ones go through."""
        self._stalled.update(self._links)

    def mute(self) -> None:
        """Stop forwarding what the connections open now send to the broker (what the broker
        sends them still arrives); new ones go through."""
        self._muted.update(self._links)

    def partition(self) -> None:
        """The network between boards and broker is gone: nothing is forwarded on any
        connection, old or new, until heal()."""
        self._forwarding = False

    def heal(self) -> None:
        """The network is back: new connections go through. The connections made or stalled
        during the partition are closed, as their peers would find them after it."""
        for n in list(self._links):
            if not self._forwarding or n in self._stalled:
                self._close(n)
        self._forwarding = True

    def cut(self) -> None:
        """Close every connection now."""
        for n in list(self._links):
            self._close(n)

    def _close(self, n: int) -> None:
        for writer in self._links.pop(n, ()):
            writer.close()
        self._stalled.discard(n)
        self._muted.discard(n)

    async def _serve(self, board_r: asyncio.StreamReader, board_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        n = self.accepted
        try:
            broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            board_w.close()
            return
        self._links[n] = (board_w, broker_w)
        if not self._forwarding:
            self._stalled.add(n)  # made during a partition: never forwards
        for src, dst, upstream in ((board_r, broker_w, True), (broker_r, board_w, False)):
            task = asyncio.create_task(self._pump(n, src, dst, upstream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, n: int, src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool) -> None:
        try:
            while True:
                data = await src.read(4096)
                if not data:
                    break
                if not self._forwarding or n in self._stalled or (upstream and n in self._muted):
                    continue  # swallowed: the other side hears nothing
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._close(n)
