"""A MicroPython board at the ESP32's 110 KB heap whose agent takes 64 KB of linear memory (a
valid bundle, spawned at boot) leaves its MQTT link too little to keep a session: the link is the
board's lifeline, so after a few sessions in a row end in MemoryError the agent holding the most
memory is reclaimed, and the board comes online (before, it reconnected for ever, unreachable)."""

from __future__ import annotations

from commands import started, stopped, until
from helpers import HELLO_WAT, build_bundle

from microfang.gateway.store import Store


def latest_agents(db, device: str):
    """The agents in `device`'s latest telemetry, or None before any has arrived."""
    if not db.exists():
        return None
    store = Store(db)
    try:
        telemetry = store.latest_telemetry(device)
    finally:
        store.close()
    return None if telemetry is None else telemetry.get("agents")


def test_an_agent_that_leaves_the_link_no_memory_is_reclaimed_and_the_board_comes_online(tmp_path, micropython):
    (tmp_path / "big.mfa").write_bytes(build_bundle(HELLO_WAT, **{
        "sandbox.agent_id": "big", "sandbox.memory": {"max_heap_kb": 64, "stack_size_kb": 8, "grow_limit_pages": 0}}))
    (tmp_path / "fleet.toml").write_text('profile = "esp32"\n[boards.m1]\nruntime = "micropython"\n'
                                         'agents = ["big.mfa"]\n')
    sim = started(["sim", "fleet.toml", "-t", "0", "--db", "s.db"], tmp_path)
    try:
        heard = until(lambda: (agents := latest_agents(tmp_path / "s.db", "m1")) is not None and [agents], 60)
    finally:
        stopped(sim)
    assert heard == [{}], heard  # online, its telemetry through, "big" reclaimed
