"""Boards, gateway and a real Mosquitto on 127.0.0.1, end to end."""

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest
from brokers import free_port
from fleet import make_board, wait_until

from microfang.gateway import Gateway

EXAMPLES = Path(__file__).resolve().parent.parent / "tools" / "sdk" / "examples"


@pytest.fixture(scope="module")
def echo_bundle(tmp_path_factory):
    from microfang.tools.build import build

    out, _ = build(EXAMPLES / "echo" / "agent.toml", tmp_path_factory.mktemp("echo") / "echo.mfa")
    return out.read_bytes()


def test_three_boards_get_their_agents_requests_answered(mosquitto, tmp_path, echo_bundle):
    async def scenario():
        http = free_port()
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", http_port=http,
                           quiet=True) as gw:
            boards = []
            for n in range(3):
                key = gw.add_device(f"board{n}", fleet="test")
                board, rec = make_board(f"board{n}", key, mosquitto.port)
                board.spawn(echo_bundle)
                boards.append((board, rec))
            runs = [asyncio.create_task(board.run(3000)) for board, _ in boards]
            answered = await wait_until(lambda: all("echoed: ping 1" in rec.texts("echo", "log") for _, rec in boards))
            health = json.loads(await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz").read()))
            metrics = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics").read().decode())
            await asyncio.gather(*runs)
            return answered, boards, gw, health, metrics

    answered, boards, gw, health, metrics = asyncio.run(scenario())
    assert answered, [rec.seen for _, rec in boards]
    assert health["status"] == "ok" and health["devices"] == 3
    assert "microfang_requests_total" in metrics and 'microfang_dropped_total{reason="forged"} 0' in metrics
    assert gw.metrics["requests"] >= 3 and gw.metrics["replies"] >= 3
    assert gw.metrics["telemetry"] >= 3


def test_a_micropython_board_gets_its_agents_request_answered(mosquitto, tmp_path, echo_bundle):
    """The real firmware on microfang's MicroPython (ESP32 heap) boots from a flash image and
    talks to the gateway: signed envelopes agree across the two runtimes."""
    from microfang.boards import PROFILES
    from microfang.provision import write_image
    from microfang.tools import portbuild

    micropython = portbuild.build_unix(lambda line: None)

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", quiet=True) as gw:
            key = gw.add_device("mp1", fleet="test")
            write_image(tmp_path / "mp1.img", {"device": "mp1", "fleet": "test", "key": key, "host": "127.0.0.1",
                                               "port": mosquitto.port, "telemetry_ms": 500}, [echo_bundle])
            proc = await asyncio.create_subprocess_exec(
                str(micropython), "-X", PROFILES["esp32"].heapsize_arg(), "-m", "microfang.firmware.main",
                str(tmp_path / "mp1.img"), "2.5", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            return out.decode(), dict(gw.metrics)

    output, metrics = asyncio.run(scenario())
    assert "[echo] log echoed: ping 1" in output, output
    assert metrics["replies"] >= 2 and metrics["telemetry"] >= 1
    assert sum(v for k, v in metrics.items() if k.startswith("dropped_")) == 0, metrics


def test_memory_logs_replicate_to_the_gateway_and_are_acknowledged(mosquitto, tmp_path):
    from helpers import agent_wat, build_bundle

    writer = agent_wat(
        """
      (data (i32.const 0) "note")
      (func (export "mf_on_event") (param i32 i32 i32) (result i32)
        (drop (call $append (i32.const 0) (i32.const 4))) (i32.const 0))""",
        imports='(import "mf" "mem_append" (func $append (param i32 i32) (result i32)))')
    bundle = build_bundle(writer, **{"sandbox.permissions.allowed_host_functions": ["mem_append"],
                                     "sandbox.agent_id": "notes", "agent.timers": [{"id": 1, "every_ms": 50}]})

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", quiet=True) as gw:
            key = gw.add_device("b1", fleet="test")
            board, rec = make_board("b1", key, mosquitto.port)
            board.spawn(bundle)
            run = asyncio.create_task(board.run(3000))
            log = board.supervisor.log("notes")
            await wait_until(lambda: log.last_seq >= 10 and log.acked >= 10)
            board.stop()
            await run
            return log, gw.store.replica("b1", "notes")

    log, replica = asyncio.run(scenario())
    assert log.acked >= 10  # the gateway acknowledged them: they may now be compacted on the board
    assert [seq for seq, _ in replica][: log.acked] == list(range(1, log.acked + 1))
    assert all(payload == b"note" for _, payload in replica)


def test_the_embedded_broker_serves_a_board_and_the_gateway(tmp_path, echo_bundle):
    """Zero setup without mosquitto: the amqtt broker in a thread (broker.embedded)."""
    from microfang.broker import embedded

    async def scenario(port):
        async with Gateway(broker=f"mqtt://127.0.0.1:{port}", db=tmp_path / "gw.db", quiet=True) as gw:
            board, rec = make_board("b1", gw.add_device("b1", fleet="test"), port)
            board.spawn(echo_bundle)
            run = asyncio.create_task(board.run(4000))
            answered = await wait_until(lambda: "echoed: ping 1" in rec.texts("echo", "log"))
            board.stop()
            await run
            return answered

    with embedded() as port:
        assert asyncio.run(scenario(port))


def test_a_slow_handler_never_delays_other_requests():
    from microfang.gateway import Router
    from microfang.request import Request

    async def scenario():
        router = Router()

        async def slow(request):
            await asyncio.sleep(2)
            return {"text": "late"}

        router.add("slow", slow)
        replies = []

        def reply(request, ok, body):
            replies.append((request.kind, asyncio.get_running_loop().time()))

        start = asyncio.get_running_loop().time()
        router.dispatch(Request("d", "a", "slow", 1, None), reply)
        for n in range(50):
            router.dispatch(Request("d", "a", "echo", n + 2, n), reply)
        await wait_until(lambda: len(replies) >= 51, 5)
        return start, replies

    start, replies = asyncio.run(scenario())
    echo_times = [t for kind, t in replies if kind == "echo"]
    assert len(echo_times) == 50 and max(echo_times) - start < 0.5  # all answered while "slow" still ran
    assert replies[-1][0] == "slow"


def test_board_and_gateway_talk_over_tls(tmp_path, echo_bundle):
    from brokers import Mosquitto, make_tls_files

    ca, cert, key = make_tls_files(tmp_path)
    broker = Mosquitto(tmp_path, tls=(ca, cert, key)).start()

    async def scenario():
        async with Gateway(broker=f"mqtts://127.0.0.1:{broker.port}", db=tmp_path / "gw.db", cafile=str(ca),
                           quiet=True) as gw:
            board, rec = make_board("b1", gw.add_device("b1", fleet="test"), broker.port, tls=True, cafile=str(ca))
            board.spawn(echo_bundle)
            run = asyncio.create_task(board.run(4000))
            answered = await wait_until(lambda: "echoed: ping 1" in rec.texts("echo", "log"))
            board.stop()
            await run
            return answered, rec

    try:
        answered, rec = asyncio.run(scenario())
    finally:
        broker.stop()
    assert answered, rec.seen


def test_a_board_refuses_a_broker_it_cannot_verify(tmp_path, echo_bundle):
    from brokers import Mosquitto, make_tls_files

    broker = Mosquitto(tmp_path, tls=make_tls_files(tmp_path)).start()

    async def scenario():
        board, rec = make_board("b1", b"k" * 32, broker.port, tls=True)  # system CAs: not ours
        run = asyncio.create_task(board.run(800))
        await run
        return board, rec

    try:
        board, rec = asyncio.run(scenario())
    finally:
        broker.stop()
    assert not board.link.connected
    assert any("CERTIFICATE_VERIFY_FAILED" in t for a, k, t in rec.seen if k == "link"), rec.seen


def test_boards_registered_while_the_gateway_runs_are_heard_from_their_first_message(mosquitto, tmp_path,
                                                                                     echo_bundle):
    """Two boards registered one after the other within a second (as `microfang flash` does for
    a batch): the second one's first messages must not be dropped as from an unknown device."""
    from microfang.gateway.store import Store

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", quiet=True) as gw:
            boards = []
            for name in ("first", "second"):
                store = Store(tmp_path / "gw.db")  # registered by another process, not through gw
                key = store.add_device(name, "test")
                store.close()
                board, rec = make_board(name, key, mosquitto.port)
                board.spawn(echo_bundle)
                boards.append((board, rec, asyncio.create_task(board.run(5000))))
                await asyncio.sleep(0.3)
            answered = await wait_until(lambda: all("echoed: ping 1" in rec.texts("echo", "log")
                                                    for _, rec, _ in boards))
            for board, _, run in boards:
                board.stop()
                await run
            return answered, gw.metrics["dropped_unknown-device"]

    answered, dropped = asyncio.run(scenario())
    assert answered and dropped == 0
