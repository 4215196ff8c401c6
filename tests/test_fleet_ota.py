"""Over-the-air deploys to MicroPython boards at the ESP32 heap (microfang's unix port, 110 KB)
already running agents: a 6 KB agent arrives in chunks, each written to flash, and is verified
and started from flash with only its wasm read into RAM; what cannot fit is refused by the
board with its reason, which the deploy job shows at once."""

import asyncio
import re

import pytest
from boards_runtime import RunningBoard
from fleet import wait_until
from helpers import agent_wat, build_bundle
from signing_keys import board_trust

from microfang.deploy import queue_deploy, wait
from microfang.gateway import Gateway
from microfang.gateway.jobs import JobsFailed

RUNNING = ("hello", "echo", "threshold")


def code_heavy(functions, memory_kb=2):
    """An agent whose module is mostly code: `functions` small arithmetic functions called in
    a chain on each event, then a log line "big ok"; `memory_kb` of linear memory."""
    body = "\n".join(f"""(func $f{i} (param i32) (result i32) (local i32)
      (local.set 1 (i32.mul (local.get 0) (i32.const {i * 7 + 3})))
      (local.set 1 (i32.xor (local.get 1) (i32.const {i * 13 + 11})))
      (local.set 1 (i32.add (local.get 1) (i32.shl (local.get 0) (i32.const {i % 31}))))
      (local.set 1 (i32.sub (local.get 1) (i32.rotl (local.get 0) (i32.const {i * 3 % 31}))))
      (i32.add (local.get 1) (i32.const {i})))""" for i in range(functions))
    chain = "(i32.const 1)"
    for i in range(functions):
        chain = f"(call $f{i} {chain})"
    wat = agent_wat(body + f"""
      (data (i32.const 0) "big ok")
      (func (export "mf_on_event") (param i32 i32 i32) (result i32)
        (drop {chain}) (call $log (i32.const 0) (i32.const 6)) (i32.const 0))""",
                    abi='(memory (export "memory") 1 1) (func (export "mf_alloc") (param i32) (result i32) '
                        "(i32.const 1024))")
    return build_bundle(wat, **{"sandbox.agent_id": "big", "sandbox.memory.max_heap_kb": memory_kb,
                                "sandbox.memory.stack_size_kb": 2, "sandbox.memory.grow_limit_pages": 0})


@pytest.fixture(scope="module")
def running(example_bundle):
    return [example_bundle(name) for name in RUNNING]


def deploy_to_micropython_boards(mosquitto, tmp_path, micropython, running, data, boards=("mp1", "mp2"),
                                 heap=None):
    """Boot `boards` with the `running` bundles (at `heap`, else the ESP32's), deploy bundle
    `data` to them; (jobs, board lines)."""
    db = tmp_path / "gw.db"
    (tmp_path / "agent.mfa").write_bytes(data)

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=db, quiet=True) as gw:
            started = []
            for name in boards:
                config = {"device": name, "fleet": "test", "key": gw.add_device(name, fleet="test"),
                          "host": "127.0.0.1", "port": mosquitto.port, **board_trust(),
                          "telemetry_ms": 1000}
                started.append(await RunningBoard("micropython", config, tmp_path, running, micropython,
                                                  heap=heap).start())
            try:
                assert await wait_until(lambda: all(gw.devices[b].get("online") for b in boards), 30), \
                    [b.lines() for b in started]
                try:
                    jobs = await asyncio.to_thread(wait, db, queue_deploy(db, tmp_path / "agent.mfa", list(boards)),
                                                   60)
                except JobsFailed as e:
                    jobs = e.jobs
                await asyncio.sleep(1.5)  # the boards go on: a round of echo after the deploy
            finally:
                lines = [await b.stop() for b in started]
            return jobs, lines

    return asyncio.run(scenario())


def test_a_6_kb_agent_deploys_over_the_air_to_micropython_boards_running_an_agent(mosquitto, tmp_path,
                                                                                  micropython, running):
    data = code_heavy(95)
    assert 5_800 < len(data) < 6_800, len(data)
    jobs, lines = deploy_to_micropython_boards(mosquitto, tmp_path, micropython, running[:1], data)
    assert [(j["state"], j["detail"]) for j in jobs] == [("done", "version 1 running")] * 2, lines
    for seen in lines:
        assert "[big] state running" in seen and "[big] log big ok" in seen, seen
        assert "[hello] state running" in seen, seen


def test_a_6_kb_agent_deploys_over_the_air_to_micropython_boards_already_running_three_agents(
        mosquitto, tmp_path, micropython, running):
    # Issue 16's acceptance: beside hello, echo (a request a second) and threshold, the 6 KB
    # agent finds room for its wasm, runtime and code on the 110 KB heap (once the largest free
    # block at install time was 3.7 KB, below the 5,693 B its wasm needs: the objects a board
    # keeps lay spread over the heap until it collected often and took the engine's blocks
    # from the top, boards/patches/0001; then the three agents' own wasm, 5 KB, stayed in RAM
    # after compiling because wasm3 kept a pointer to it, patches/0022).
    data = code_heavy(95)
    jobs, lines = deploy_to_micropython_boards(mosquitto, tmp_path, micropython, running, data)
    assert [(j["state"], j["detail"]) for j in jobs] == [("done", "version 1 running")] * 2, lines
    for seen in lines:
        assert "[big] state running" in seen and "[big] log big ok" in seen, seen
        after = seen[max(i for i, ln in enumerate(seen) if "[big] state running" in ln):]
        assert any("[echo] log echoed" in ln for ln in after), seen


def test_an_agent_that_does_not_fit_is_refused_at_once_with_the_boards_reason(mosquitto, tmp_path, micropython,
                                                                              running):
    # A 6 KB agent asking for 48 KB of linear memory beside three others finds no room on the
    # 110 KB heap: the board says so with the figures; the job fails with that reason without
    # waiting out its timeout; the board stays online and its agents run on.
    jobs, lines = deploy_to_micropython_boards(mosquitto, tmp_path, micropython, running, code_heavy(95, 48))
    assert [j["state"] for j in jobs] == ["failed", "failed"], jobs
    for job, seen in zip(jobs, lines):
        # Refused where the heap ran out: reading the wasm, or at admission with the figures
        # (48 KB of linear memory, twice the 5.7 KB module, 1 KB of records: sandbox.footprint).
        assert job["detail"] == "not enough free RAM on the board (memory allocation failed, allocating 5693 " \
                                "bytes)" or re.fullmatch(
            r"agent big version 1 did not start \(agent big does not fit: it needs about 6\d{4} bytes \(linear "
            r"memory, module, code\), the board has \d+ free \(before allocating\)\); nothing installed",
            job["detail"]), job
        assert "[big] state running" not in seen
        after = seen[max(i for i, ln in enumerate(seen) if "link connected" in ln):]
        assert any("[echo] log echoed" in ln for ln in after), seen



def test_a_board_without_room_for_the_deploys_chunks_fails_the_job_at_once_with_that_reason(
        mosquitto, tmp_path, micropython):
    # At a 37 KB heap a board cannot hold a 4 KB chunk: its link reads the chunk through,
    # acknowledges it (no redelivery on every reconnect) and counts it dropped "no_memory"; the
    # gateway sees the count in its telemetry and fails the job then, with the reason, instead
    # of probing again until the deploy's timeout.
    jobs, [lines] = deploy_to_micropython_boards(mosquitto, tmp_path, micropython, [], code_heavy(95),
                                                 boards=("mp1",), heap="heapsize=37k")
    [(state, detail)] = [(j["state"], j["detail"]) for j in jobs]
    # Either the link had no room for a chunk (dropped, counted, seen by the gateway in telemetry)
    # or a smaller allocation of the deploy failed first (the board's own refusal): the heap's
    # layout decides which; both fail the job with the reason at once.
    dropped = re.fullmatch(r"not enough free RAM on the board mp1 for this transfer \(it dropped \d+ message\(s\) it "
                           r"had no room for; \d+ bytes free\)", detail)
    refused = re.fullmatch(r"not enough free RAM on the board \(memory allocation failed, allocating \d+ bytes\)", detail)
    assert state == "failed" and (dropped or refused), (detail, lines)
    if dropped:
        assert any(ln.startswith("[board] link dropped no_memory: a message of ") for ln in lines), lines
    # So close to its heap's end the board may also lose its connection to a MemoryError once or
    # twice (CI saw "allocating 513 bytes", then "212 bytes" twice); it is connected again at the
    # end, not looping on a redelivered chunk (which would reconnect for as long as the test ran).
    # The gateway's side of this path is tested deterministically in tests/test_gateway_board_ram.py.
    link = [ln for ln in lines if ln.startswith("[board] link ") and " dropped " not in ln]
    disconnects = [ln for ln in link if ln.startswith("[board] link disconnected")]
    assert link[-1].startswith("[board] link connected") and len(disconnects) <= 3, lines
