"""A flood from one broker client does not hold up the rest of the fleet: the gateway keeps a
queue per device and serves them in turn, drops what names no device at once, and keeps
/healthz answering while it works through a backlog.

Real Mosquitto, the real gateway process (`microfang gateway`), a flooding paho client and a
quiet board on the wire. Nothing here is timed: a quiet board's requests must all be answered
while the flood is still being worked through (the gateway's own counters, read from /metrics,
show the flood unfinished), and /healthz must answer in the middle of it.
"""

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
FLOOD = 20_000


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
    "garbage on a real board's topic": ("mf/f/noisy/up/a1", b"\xff\x00garbage", "malformed"),
    "garbage on topics of no device": (None, b"\xff\x00garbage", "unknown-device"),
    "valid but refused requests (replays)": ("mf/f/noisy/up/a1", None, "replay"),
}


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
    flood = flooder(mosquitto.port)
    try:
        if reason == "replay":
            flood.publish("mf/f/noisy/up/a1", payload, qos=1).wait_for_publish(5)
        for i in range(FLOOD):
            flood.publish(topic or f"mf/f/ghost{i}/up/a1", payload, qos=1)
        # The flood is at the broker (or on its way): now the quiet board asks, one at a time.
        health = urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=30)
        assert health.status == 200
        mid_flood = dropped(http, reason)
        for i in range(1, 11):
            board.send(i, 1)
            deadline = time.monotonic() + 60
            while len(board.replies) < i and time.monotonic() < deadline:
                time.sleep(0.002)
        flood_done = dropped(http, reason)
        assert sorted(board.replies) == list(range(1, 11))
        # The quiet board was not queued behind the flood: the gateway had not worked it all off.
        assert flood_done < FLOOD, (mid_flood, flood_done)
        assert mid_flood < FLOOD  # /healthz answered in the middle of it
        deadline = time.monotonic() + 120
        while dropped(http, reason) < FLOOD and time.monotonic() < deadline:
            time.sleep(0.2)
        assert dropped(http, reason) == FLOOD  # and every message of the flood was counted
    finally:
        flood.loop_stop()
        flood.disconnect()
        board.stop()
        gateway.terminate()
        gateway.wait(10)
