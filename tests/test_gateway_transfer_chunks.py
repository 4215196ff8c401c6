"""A deploy's chunks are the size the board asks for in its put_ack (`chunk`), clamped to
protocol.CHUNK_MIN..CHUNK_MAX; a board that names none gets CHUNK_MAX (issue 16: a 4 KB chunk
needs a 4 KB hole on a board at the ESP32 heap full of agents, 512 B ones fit)."""

from typing import Any

import pytest

from microfang.firmware import protocol
from microfang.gateway.transfers import WINDOW, Transfers

SIGNED = bytes(range(256)) * 40  # 10,240 bytes: what is put


class FakeStore:
    def job_data(self, job_id: int) -> bytes:
        return SIGNED

    def update_job(self, job_id: int, **fields: Any) -> None:
        pass

    def audit(self, *args: Any) -> None:
        pass


class FakeGateway:
    def __init__(self) -> None:
        self.store = FakeStore()
        self.devices = {"b1": {"online": True}}
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send(self, device: str, agent: str, kind: str, body: Any, control: bool = False, on_delivered: Any = None) -> bytes:
        self.sent.append((kind, body))
        return b""

    def log(self, line: str) -> None:
        pass


def chunks_after_probe(put_ack: dict[str, Any]) -> list[tuple[int, int]]:
    """(offset, size) of the chunks the gateway sends after the board's first put_ack."""
    gw = FakeGateway()
    transfers = Transfers(gw)  # type: ignore[arg-type]
    transfers.take({"id": 1, "kind": "deploy", "device": "b1", "target": None, "agent": "a1", "state": "queued"})
    assert [kind for kind, _ in gw.sent] == [protocol.C_PUT]
    transfers.on_board("b1", "a1", protocol.K_PUT_ACK, {"xfer": "d1", "offset": 0, "probe": True, **put_ack})
    return [(body["offset"], len(body["data"])) for kind, body in gw.sent if kind == protocol.C_CHUNK]


def test_a_board_asking_for_512_byte_chunks_gets_a_window_of_512_byte_chunks():
    assert chunks_after_probe({"chunk": 512}) == [(i * 512, 512) for i in range(WINDOW)]


def test_a_board_that_names_no_chunk_size_gets_4_kib_chunks():
    assert chunks_after_probe({}) == [(0, 4096), (4096, 4096), (8192, 2048)]


@pytest.mark.parametrize(("asked", "sent"), [(1, 256), (0, 256), (-5, 256), (1 << 20, 4096), ("512", 4096),
                                             (None, 4096), (True, 4096)])
def test_a_chunk_size_outside_256_to_4096_or_not_an_integer_is_clamped_or_ignored(asked, sent):
    assert chunks_after_probe({"chunk": asked})[0] == (0, sent)


def test_the_chunk_size_asked_in_a_probe_holds_for_the_acks_that_follow():
    gw = FakeGateway()
    transfers = Transfers(gw)  # type: ignore[arg-type]
    transfers.take({"id": 1, "kind": "deploy", "device": "b1", "target": None, "agent": "a1", "state": "queued"})
    transfers.on_board("b1", "a1", protocol.K_PUT_ACK, {"xfer": "d1", "offset": 0, "probe": True, "chunk": 512})
    gw.sent.clear()
    transfers.on_board("b1", "a1", protocol.K_PUT_ACK, {"xfer": "d1", "offset": 512})
    assert [(body["offset"], len(body["data"])) for _, body in gw.sent] == [(2048, 512)]
