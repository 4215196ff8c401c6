"""A local MQTT broker for zero-setup runs (`microfang sim`, the demo): Mosquitto when it is
installed, otherwise the embedded amqtt broker in a background thread. Production points the
gateway and the boards at a real broker URL instead (docs/mosquitto/)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from microfang.firmware.envelope import MAX_ENVELOPE
from microfang.firmware.errors import MicrofangError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, alive: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if not alive() or time.monotonic() > deadline:
                raise MicrofangError(f"{what} did not start on 127.0.0.1:{port}") from None
            time.sleep(0.05)


def mosquitto_conf(port: int) -> str:
    """The local broker's configuration. set_tcp_nodelay: request/response stalls 40+ ms per
    exchange without it (FACTS.md); message_size_limit: a board takes no message over one
    envelope, so the broker refuses them rather than deliver what a board must drop."""
    return (f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
            f"max_queued_messages 100000\nmessage_size_limit {MAX_ENVELOPE}\nlog_dest none\n")


@contextmanager
def mosquitto(exe: str) -> Iterator[int]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="microfang-broker-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(mosquitto_conf(port), encoding="utf-8")
        proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_listening(port, lambda: proc.poll() is None, "mosquitto")
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@contextmanager
def embedded() -> Iterator[int]:
    """amqtt on 127.0.0.1 in its own thread and event loop."""
    try:
        from amqtt.broker import Broker
    except ImportError:
        raise MicrofangError("no MQTT broker: install mosquitto (apt install mosquitto) or amqtt "
                             "(pip install amqtt), or pass --broker URL") from None
    # amqtt logs warnings about its own defaults (no password file, idle clients) through the
    # root logger's last-resort handler: they are not the user's business in a private broker.
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    port = free_port()
    loop = asyncio.new_event_loop()
    config = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}}, "sys_interval": 0,
              "auth": {"allow-anonymous": True, "plugins": ["auth_anonymous"]}, "topic-check": {"enabled": False}}
    thread = threading.Thread(target=loop.run_forever, name="microfang-embedded-broker", daemon=True)
    thread.start()

    async def start() -> Broker:
        # Made inside its own loop's thread: amqtt looks up "the current event loop".
        broker = Broker(config)
        await broker.start()
        return broker

    broker = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        _wait_listening(port, thread.is_alive, "the embedded broker")
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@contextmanager
def local_broker() -> Iterator[tuple[int, str]]:
    """Yield (port, "mosquitto" | "amqtt") for a private broker on 127.0.0.1."""
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if exe is not None:
        with mosquitto(exe) as port:
            yield port, "mosquitto"
    else:
        with embedded() as port:
            yield port, "amqtt"
