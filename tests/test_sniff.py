"""`microfang sniff`: envelopes on the wire as readable lines, forgeries marked."""

import json
import subprocess
import sys
import time

import paho.mqtt.client as mqtt

from microfang.firmware import cbor, envelope
from microfang.gateway.store import Store
from microfang.sniff import describe, line


def test_an_envelope_reads_as_a_line_with_its_body_made_readable():
    key = b"k" * 32
    payload = envelope.seal(key, "kitchen", 7, "plant", "publish", {"topic": "water", "data": b"\xf5", "note": b"dry"})
    view = describe("mf/home/kitchen/up/plant", payload, {"kitchen": key}.get)
    assert view["check"] == "verified" and view["kind"] == "publish" and view["seq"] == 7
    assert line(view) == 'mf/home/kitchen/up/plant publish plant #7 {"topic":"water","data":"0xf5","note":"dry"}'


def test_a_forgery_an_unknown_sender_and_garbage_are_named():
    forged = envelope.seal(b"x" * 32, "kitchen", 1, "plant", "publish", {})
    assert describe("t", forged, {"kitchen": b"k" * 32}.get)["check"] == "forged"
    assert describe("t", forged, {}.get)["check"] == "unknown-device"
    assert "[FORGED]" in line(describe("t", forged, {"kitchen": b"k" * 32}.get))
    assert describe("t", b"\xff\x00garbage")["error"].startswith("not CBOR")
    assert describe("t", cbor.dumps({"v": 9}))["error"] == "not a version 1 envelope"
    assert line(describe("mf/home/kitchen/status", b"online")) == "mf/home/kitchen/status presence online"


def test_sniff_follows_a_broker_and_checks_envelopes_against_the_registry(mosquitto, tmp_path):
    store = Store(tmp_path / "gw.db")
    key = store.add_device("kitchen", "home")
    store.close()
    proc = subprocess.Popen([sys.executable, "-m", "microfang", "sniff", "--broker", f"mqtt://127.0.0.1:{mosquitto.port}",
                             "--db", str(tmp_path / "gw.db"), "-n", "2", "-t", "30", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    time.sleep(1.0)  # sniff subscribes
    client.publish("mf/home/kitchen/tele", envelope.seal(key, "kitchen", 1, "", "tele", {"uptime_ms": 5}), qos=1)
    client.publish("mf/home/kitchen/up/a", envelope.seal(b"y" * 32, "kitchen", 2, "a", "request", {}), qos=1)
    out, err = proc.communicate(timeout=40)
    client.loop_stop()
    views = [json.loads(row) for row in out.splitlines()]
    assert proc.returncode == 0, err
    assert [(v["kind"], v["check"]) for v in views] == [("tele", "verified"), ("request", "forged")]


def test_values_json_cannot_hold_and_terminal_escapes_are_made_harmless():
    from microfang.console import printable

    view = describe("t", cbor.dumps({"v": 1, "dev": "d", "agent": "a", "kind": "k", "seq": float("nan"),
                                     "ts": float("inf"), "body": {}}))
    assert json.loads(json.dumps(view, allow_nan=False))["seq"] == "nan"
    shown = printable(line(describe("mf/x/y/status", b"\x1b]0;PWNED\x07\x1b[41m")))
    assert "\x1b" not in shown and "\\x1b]0;PWNED" in shown
