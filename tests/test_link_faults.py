"""The board's link against a broker that lies (tests/evil_broker.py), on both runtimes: each
malformed packet costs a reconnect or is acknowledged and dropped with a counted reason; the
link never dies, and a poison message is not redelivered forever."""

import asyncio
from pathlib import Path

import pytest
from boards_runtime import RUNTIMES, RunningBoard
from evil_broker import EvilBroker, publish, varint

from microfang.firmware import envelope

KEY = b"k" * 32
CTL = "mf/test/b1/ctl"


def signed_ctl(kind, body, seq=1):
    return envelope.seal(KEY, "b1", seq, "hello", kind, body)


def board_config(port):
    # keepalive 1 s: a PINGREQ every 500 ms, its PINGRESP due within 500 ms; a packet begun must
    # be complete within 300 ms.
    return {"device": "b1", "fleet": "test", "key": KEY, "host": "127.0.0.1", "port": port, "keepalive": 1,
            "read_timeout_ms": 300, "telemetry_ms": 60_000}


async def against(evil, runtime, micropython, tmp_path, check, seconds=15, bundles=()):
    async with evil:
        board = await RunningBoard(runtime, board_config(evil.port), tmp_path, list(bundles),
                                   micropython if runtime == "micropython" else None).start()
        try:
            met = await evil.wait(lambda: check(evil), seconds)
            alive = board.alive()
        finally:
            lines = await board.stop()
    return met, alive, lines


# Each costs the connection: the board connects again, and the next connection (clean) holds.
RECONNECTS = [
    ("empty PUBACK", b"\x40\x00", "malformed PUBACK of 0 bytes"),
    ("3-byte PUBACK", b"\x40\x03\x00\x01\x00", "malformed PUBACK of 3 bytes"),
    ("QoS 1 PUBLISH without packet id", b"\x32\x05\x00\x03abc", "topic of 3 bytes and packet id past a packet of 5"),
    ("QoS 1 PUBLISH with packet id 0", publish("mf/test/b1/ctl", b"x", packet_id=0), "packet id 0"),
    ("topic length past the packet", b"\x30\x04\x00\x10ab", "topic of 16 bytes past a packet of 4"),
    ("remaining length over 4 bytes", b"\x30\xff\xff\xff\xff\x01", "malformed remaining length"),
    ("QoS 2 PUBLISH", b"\x34\x07\x00\x03abc\x00\x01x", "PUBLISH at QoS 2"),
    ("unexpected packet type", b"\x10\x00", "unexpected packet type 0x10"),
    ("60 KB announced, never sent", b"\x30" + varint(60_000) + b"\x00\x0emf/test/b1/ctl", "not complete within 300 ms"),
    ("a refused subscription", b"\x90\x03\x00\x09\x80", "refused a subscription"),
]


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize(("name", "bad", "reason"), RECONNECTS, ids=[r[0] for r in RECONNECTS])
def test_a_malformed_packet_costs_a_reconnect_never_the_link(runtime, name, bad, reason, micropython, tmp_path):
    def back_and_pinging(evil):
        return evil.count(1, 0x10) == 1 and evil.count(1, 0xC0) >= 2

    met, alive, lines = asyncio.run(against(EvilBroker(bad), runtime, micropython, tmp_path, back_and_pinging))
    assert met, (name, lines)
    assert alive
    assert any("link disconnected:" in line and reason in line for line in lines), (name, lines)


def test_a_silent_broker_is_noticed_by_the_pingresp_deadline(micropython, tmp_path):
    for runtime in RUNTIMES:
        met, alive, lines = asyncio.run(against(EvilBroker(pingresp=False), runtime, micropython, tmp_path,
                                                lambda evil: evil.count(1, 0x10) == 1))
        assert met and alive, (runtime, lines)
        assert "[board] link disconnected: no PINGRESP within 500 ms" in lines, (runtime, lines)


# Each is a whole packet with a packet id: acknowledged once, dropped and counted, and the
# connection goes on (a persistent session would otherwise deliver it on every reconnect).
# The board runs the hello example, whose memory log the log_ack names.
DROPS = [
    ("topic not UTF-8", publish(b"mf/test/b1/\xff\xfe", b"x"), "dropped malformed: a topic that is not UTF-8"),
    ("message over the board's limit", publish(CTL, b"\x00" * 70_000),
     "dropped oversized: a message of 70018 bytes is over the board's"),
    ("ctl log_ack with body 'x'", publish(CTL, signed_ctl("log_ack", "x")), "dropped malformed: ctl log_ack"),
    ("ctl log_ack with body None", publish(CTL, signed_ctl("log_ack", None)), "dropped malformed: ctl log_ack"),
]


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize(("name", "bad", "report"), DROPS, ids=[d[0] for d in DROPS])
def test_a_bad_message_is_acknowledged_dropped_and_counted(runtime, name, bad, report, micropython, example_bundle,
                                                            tmp_path):
    def acked_and_pinging(evil):
        return 7 in evil.pubacks(0) and evil.count(0, 0xC0) >= 2

    met, alive, lines = asyncio.run(against(EvilBroker(bad), runtime, micropython, tmp_path, acked_and_pinging,
                                            bundles=[example_bundle("hello")]))
    assert met and alive, (name, lines)
    assert not any("disconnected" in line for line in lines), (name, lines)
    assert any(report in line for line in lines), (name, lines)


def test_a_message_the_heap_cannot_hold_is_dropped_once_not_redelivered_on_every_reconnect(micropython, tmp_path):
    """A board short of RAM (MicroPython at 40 KB) is sent a 14 KB message on every connection,
    as a persistent session redelivers one never acknowledged: it is read through in pieces,
    acknowledged once and dropped with a counted reason, and the connection holds. Before, each
    try was a MemoryError and a reconnect (16 connections in 4 s, none acknowledged)."""
    async def scenario():
        async with EvilBroker(publish(CTL, b"\x00" * 14_000), again=True) as evil:
            board = await RunningBoard("micropython", board_config(evil.port), tmp_path, [], micropython,
                                       heap="heapsize=40k").start()
            try:
                met = await evil.wait(lambda: 7 in evil.pubacks(0) and evil.count(0, 0xC0) >= 4, 15)
            finally:
                lines = await board.stop()
            return met, len(evil.connections), lines

    met, connections, lines = asyncio.run(scenario())
    assert met and connections == 1, (connections, lines)
    assert "[board] link dropped no_memory: a message of 14018 bytes: no block that large free on the heap" in lines
    assert not any("disconnected" in line for line in lines), lines


def test_the_shipped_broker_configs_refuse_messages_over_the_board_limit():
    from microfang.broker import mosquitto_conf

    docs = (Path(__file__).resolve().parent.parent / "docs" / "mosquitto" / "mosquitto.conf").read_text()
    for conf in (docs, mosquitto_conf(1883)):
        limits = [line.split()[1] for line in conf.splitlines() if line.startswith("message_size_limit")]
        assert limits == [str(envelope.MAX_ENVELOPE)], conf


def test_a_puback_that_comes_back_while_the_publish_is_still_being_written_is_not_lost():
    """The broker's PUBACK can be read while publish() awaits the socket: the message must be in
    flight before the write, or its acknowledgement finds nothing and the outbox never drains."""
    import asyncio

    from fleet import make_board
    from microfang.firmware import mqtt

    board, _ = make_board("b1", b"k" * 32, 1)
    link = board.link

    class AcksAtOnce(mqtt.MQTTClient):  # the real client, its socket write replaced by an instant PUBACK
        async def _send(self, data):
            if data[0] >> 4 == 3 and data[0] & 0x06:  # a QoS 1 PUBLISH: the broker answers before we return
                await asyncio.sleep(0)
                link._on_puback(self._last_id)

        def next_packet_id(self):
            self._last_id = super().next_packet_id()
            return self._last_id

    async def scenario():
        link.client = AcksAtOnce("b1", "127.0.0.1", 1, on_puback=link._on_puback)
        link.connected = True
        for n in range(5):
            assert link.send("up/a", "a", "publish", {"n": n}) > 0
        await link._flush()
        return dict(link.inflight), link.sent_upto

    inflight, sent = asyncio.run(scenario())
    assert sent == 5 and inflight == {}
