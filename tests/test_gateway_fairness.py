"""A flood from one broker client does not hold up the rest of the fleet: the gateway keeps a
queue per device and serves them in turn, drops what names no device at once, and keeps
/healthz answering while it works through a backlog.

Real Mosquitto, the real gateway process (`microfang gateway`), a flooding paho client and a
quiet board on the wire. Nothing here is timed: the flood is published first (FLOOD_MAX
valid but refused requests, each costing the gateway a full check: a backlog builds), then the
board asks; its requests must be answered, and /healthz too, before the gateway has worked the
flood off (its own counters, read from /metrics, show it unfinished); then every message of
the flood must have been counted. A garbage flood (cheap to refuse) is measured in
bench/fleet_flood.py: how long a backlog it leaves depends on the machine's speed.
"""

import signal
import socket
import subprocess
import sys
import time
import urllib.request

import paho.mqtt.client as mqtt
import pytest
from wireboard import WireBoard

from microfang.broker import free_port
from microfang.firmware import envelope
from microfang.gateway.store import Store

KEY = b"q" * 32
NOISY_KEY = b"n" * 32
FLOOD_MAX = 20_000


def start_gateway(port, db, http):
    proc = subprocess.Popen([sys.executable, "-m", "microfang", "gateway", "--broker", f"mqtt://127.0.0.1:{port}",
                             "--db", str(db), "--http", str(http), "--memory", "none", "--rate", "1000000"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    assert line.startswith("gateway up"), line
    return proc


def dropped(http, reason):
    """The gateway's drop counters, by reason, from /metrics (a flood past a device's queue
    quota is dropped as over-quota: counted with the flood's own reason here)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("microfang_dropped_total{"):
            name, value = line.split(" ")
            out[name.split('"')[1]] = int(float(value))
    return out.get(reason, 0) + out.get("over-quota", 0)


def flooder(port):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flooder")
    client.max_inflight_messages_set(0)  # no limit: as fast as the broker takes them
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.loop_start()
    return client


def replayed_request():
    """A request the noisy board really signed, accepted once: every copy after is a replay
    (valid, verified, refused)."""
    return envelope.seal(NOISY_KEY, "noisy", 1, "a1", "request", {"id": 1, "kind": "echo", "body": b"\xf6"})


FLOODS = {
    # name: (topic, payload, drop reason)
    "valid but refused requests (replays)": ("mf/f/noisy/up/a1", None, "replay"),
}


# The flooding client, in a process of its own (in this one it would starve the quiet board of
# the GIL): publishes as fast as it can until SIGTERM or FLOOD_MAX messages, says "flooding"
# after the first 2,000 and "over N" once it stops; it exits once the broker has taken all N.
FLOODER = """
import signal, socket, sys, time
import paho.mqtt.client as mqtt
port, topic, payload, most = int(sys.argv[1]), sys.argv[2], bytes.fromhex(sys.argv[3]), int(sys.argv[4])
stopping, acked = [], [0]
signal.signal(signal.SIGTERM, lambda *a: stopping.append(1))
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flooder")
client.max_inflight_messages_set(0)
client.max_queued_messages_set(0)
client.on_publish = lambda *a: acked.__setitem__(0, acked[0] + 1)
client.connect("127.0.0.1", port)
client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
client.loop_start()
sent = 0
while not stopping and sent < most:
    client.publish(topic, payload, qos=1)
    sent += 1
    if sent == 2000:
        print("flooding", flush=True)
print("over", sent, flush=True)
deadline = time.monotonic() + 60
while acked[0] < sent and time.monotonic() < deadline:
    time.sleep(0.01)
client.loop_stop()
client.disconnect()
"""


class Flood:
    def __init__(self, port, topic, payload):
        self.proc = subprocess.Popen([sys.executable, "-c", FLOODER, str(port), topic, payload.hex(),
                                      str(FLOOD_MAX)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline() == "flooding\n"

    def stop(self, wait=False):
        """Stop it (`wait`: let it publish all it would); how many messages it published."""
        if self.proc.poll() is None and not wait:
            self.proc.send_signal(signal.SIGTERM)
        line = self.proc.stdout.readline()
        self.proc.wait(70)
        return int(line.split()[1]) if line.startswith("over") else None


@pytest.mark.parametrize("name", list(FLOODS))
def test_a_quiet_board_is_answered_while_another_client_floods_the_gateway(mosquitto, tmp_path, name):
    topic, payload, reason = FLOODS[name]
    payload = payload or replayed_request()
    db = tmp_path / "gw.db"
    store = Store(db)
    store.add_device("quiet", "f", KEY)
    store.add_device("noisy", "f", NOISY_KEY)
    store.close()
    http = free_port()
    gateway = start_gateway(mosquitto.port, db, http)
    board = WireBoard(mosquitto.port, device="quiet", key=KEY)
    if reason == "replay":  # accepted once: every copy after is a replay
        first = flooder(mosquitto.port)
        first.publish("mf/f/noisy/up/a1", payload, qos=1).wait_for_publish(5)
        first.loop_stop()
        first.disconnect()
    flood = Flood(mosquitto.port, topic, payload)
    try:
        sent = flood.stop(wait=True)  # all FLOOD_MAX of it at the broker, or past it already
        health = urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=60)
        assert health.status == 200
        for i in range(1, 11):
            board.send(i, 1)
            deadline = time.monotonic() + 60
            while len(board.replies) < i and time.monotonic() < deadline:
                time.sleep(0.002)
        counted_then = dropped(http, reason)
        assert sorted(board.replies) == list(range(1, 11))
        # The quiet board was not queued behind the flood: the gateway had not worked it all off.
        assert counted_then < sent, counted_then
        deadline = time.monotonic() + 120
        while dropped(http, reason) < sent and time.monotonic() < deadline:
            time.sleep(0.2)
        assert dropped(http, reason) == sent  # and every message of the flood was counted
    finally:
        flood.stop()
        board.stop()
        gateway.terminate()
        gateway.wait(10)
