"""Agents' publishes and log lines re-published for users as JSON on microfang/{fleet}/{device}/
{agent}/... (gateway/outputs.py): through a real Mosquitto, from a board running a real agent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest
from fleet import make_board
from helpers import agent_wat, build_bundle

from microfang.firmware import cbor
from microfang.firmware.bundle import decode
from microfang.gateway.core import Gateway
from microfang.gateway.outputs import json_of, topic_level

SAYS = agent_wat("""
  (data (i32.const 0) "temp")
  (data (i32.const 8) "\\15")
  (data (i32.const 16) "hi there")
  (func (export "mf_on_event") (param i32 i32 i32) (result i32)
    (call $log (i32.const 16) (i32.const 8))
    (drop (call $publish (i32.const 0) (i32.const 4) (i32.const 8) (i32.const 1)))
    (i32.const 0))""", imports='(import "mf" "log" (func $log (param i32 i32))) '
                               '(import "mf" "publish" (func $publish (param i32 i32 i32 i32) (result i32)))')
SAYS_BUNDLE = {"sandbox.agent_id": "says", "sandbox.permissions.allowed_host_functions": ["log", "publish"],
               "agent.timers": [{"id": 1, "every_ms": 100}]}  # lines go up only once the link is connected


def subscriber(port: int, messages: list) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="user")
    client.on_message = lambda c, u, m: messages.append((m.topic, json.loads(m.payload), m.retain))
    client.connect("127.0.0.1", port)
    client.subscribe("microfang/#")
    client.loop_start()
    return client


async def board_says(port: int, db, heard: Callable[[], bool], **gateway_options: str) -> None:
    """A gateway and a board running SAYS until `heard()` (or 5 s), then 0.3 s more."""
    bundle = build_bundle(SAYS, **SAYS_BUNDLE)
    async with Gateway(broker=f"mqtt://127.0.0.1:{port}", db=db, quiet=True, **gateway_options) as gw:
        board, _ = make_board("b1", gw.add_device("b1", fleet="test"), port)
        gw.store.register_manifest("b1", decode(bundle)[0])
        board.spawn(bundle)
        run = asyncio.create_task(board.run(10_000))
        for _ in range(100):
            if heard():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        board.stop()
        await run


def test_an_agents_publish_and_log_line_reach_users_as_json(mosquitto, tmp_path):
    messages: list = []
    user = subscriber(mosquitto.port, messages)
    try:
        asyncio.run(board_says(mosquitto.port, tmp_path / "gw.db", lambda: len({m[0] for m in messages}) >= 2))
    finally:
        user.loop_stop()
        user.disconnect()
    by_topic = {topic: (doc, retain) for topic, doc, retain in messages}
    published, _ = by_topic["microfang/test/b1/says/out/temp"]
    assert published["data"] == 21
    line, retained = by_topic["microfang/test/b1/says/log"]
    assert (line["line"], line["dropped"], retained) == ("hi there", 0, False)


def test_outputs_can_be_turned_off(mosquitto, tmp_path):
    messages: list = []
    user = subscriber(mosquitto.port, messages)
    try:
        asyncio.run(board_says(mosquitto.port, tmp_path / "gw.db", lambda: False, outputs=""))
    finally:
        user.loop_stop()
        user.disconnect()
    assert messages == []


@pytest.mark.parametrize(("data", "expected"), [
    (cbor.dumps({"t": 21.5, "unit": "C"}), {"t": 21.5, "unit": "C"}),
    (cbor.dumps([1, "two", None]), [1, "two", None]),
    (cbor.dumps(b"\x00\x01"), {"base64": "QgAB"}),  # CBOR bytes have no JSON form: the agent's bytes
    (b"\xf9\x7e\x00", {"base64": "+X4A"}),  # a CBOR NaN: none in JSON
    (b"\xff\xfe not CBOR", {"base64": "//4gbm90IENCT1I="}),
    (b"", {"base64": ""}),
])
def test_an_agents_data_is_json_when_its_cbor_has_a_json_form(data, expected):
    assert json_of(data) == expected


@pytest.mark.parametrize("topic", ["", "a/+/b", "#", "a/#", "$SYS/x", "a//b", "/a", "a/"])
def test_a_publish_topic_with_wildcards_or_empty_levels_is_not_re_published(topic):
    assert topic_level(topic) is None


def test_a_publish_topic_of_several_levels_is_kept():
    assert topic_level("kitchen/temp") == "kitchen/temp"
