"""A transfer to a board that has no RAM for it fails at once with that reason. The board's link
reads a message it cannot hold through, acknowledges it and counts it `dropped_no_memory`
(firmware/mqtt.py; device side: tests/test_fleet_ota.py at a 37 KB heap); the gateway reads the
count in the board's telemetry. Here the board is a paho client with the device key, so the count
it reports is exact: real Mosquitto, a real gateway, a real deploy job."""

import asyncio
import socket

import paho.mqtt.client as mqtt

from microfang.firmware import envelope, protocol
from microfang.gateway import Gateway

KEY = b"k" * 32


class Board:
    """Reports telemetry with the link counts it is told; hears the gateway's ctl commands."""

    def __init__(self, port):
        self.seq = 0
        self.commands = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dev1")
        self.client.on_message = lambda c, u, m: self.commands.append(envelope.open_envelope(m.payload, lambda d: KEY))
        self.client.connect("127.0.0.1", port)
        self.client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.subscribe("mf/f/dev1/ctl", qos=1)
        self.client.loop_start()

    def telemetry(self, dropped_no_memory, free_heap=5000):
        self.seq += 1
        body = {"free_heap": free_heap, "link": {"dropped_no_memory": dropped_no_memory}}
        self.client.publish("mf/f/dev1/tele", envelope.seal(KEY, "dev1", self.seq, "", protocol.K_TELE, body),
                            qos=1).wait_for_publish(5)

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()


async def until(predicate, seconds=10):
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    return predicate()


async def deploy_while_the_board_reports(port, tmp_path, first, counts, wait_s):
    """The board reports `first` as its dropped_no_memory, a deploy job to dev1 starts, and once
    the board has the transfer's first command it reports each of `counts`; return (job, commands the board heard) once the job
    failed or `wait_s` after the gateway took the last report."""
    async with Gateway(broker=f"mqtt://127.0.0.1:{port}", db=tmp_path / "gw.db", quiet=True) as gw:
        gw.add_device("dev1", fleet="f", key=KEY)
        board = Board(port)
        try:
            board.telemetry(first)  # the count the gateway knows before the transfer
            assert await until(lambda: gw.metrics["telemetry"] == 1), gw.metrics
            job_id = gw.store.add_job("deploy", "dev1", "a1", data=b"\x00" * 20000, version=2)
            assert await until(lambda: any(c["kind"] == protocol.C_PUT for c in board.commands)), board.commands
            for count in counts:
                board.telemetry(count)
            await until(lambda: gw.metrics["telemetry"] == 1 + len(counts))
            await until(lambda: gw.store.jobs([job_id])[0]["state"] == "failed", wait_s)
            return gw.store.jobs([job_id])[0], [c["kind"] for c in board.commands]
        finally:
            board.stop()


def test_a_deploy_fails_at_once_when_the_boards_telemetry_says_it_dropped_a_message_for_want_of_ram(mosquitto,
                                                                                                   tmp_path):
    job, commands = asyncio.run(deploy_while_the_board_reports(mosquitto.port, tmp_path, 0, [1], 10))
    assert job["state"] == "failed", job
    assert job["detail"] == ("not enough free RAM on the board dev1 for this transfer (it dropped 1 message(s) it had "
                             "no room for; 5000 bytes free)"), job
    assert commands[0] == protocol.C_PUT, commands


def test_a_board_whose_count_starts_again_after_a_restart_does_not_fail_the_deploy(mosquitto, tmp_path):
    job, _ = asyncio.run(deploy_while_the_board_reports(mosquitto.port, tmp_path, 3, [3, 0], 1))
    assert job["state"] == "sending", job  # 3 again, then 0 from the rebooted board: no new drop
