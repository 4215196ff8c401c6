"""A staged rollout's steps in the gateway's store (gateway/rollouts.py), without boards: which
jobs each wave queues, when the next wave goes, when it stops; cancelling; two gateways taking
the same step at once (real PostgreSQL); a database from before rollouts."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from microfang.cli import main
from microfang.gateway.rollouts import Plan, Rollouts
from microfang.gateway.store import Store

BOARDS = [f"b{n}" for n in range(7)]  # waves of 1, 2, 4 with canary 1, ramp 2


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "gw.db")
    for board in BOARDS:
        store.add_device(board, "f")
    yield store
    store.close()


def start(store, abort_at=30.0, wave_timeout=60.0) -> tuple[Rollouts, int]:
    rollouts = Rollouts(store)
    plan = Plan(canary=1, ramp=2.0, abort_at=abort_at, wave_timeout=wave_timeout)
    return rollouts, rollouts.add("f", "a1", 2, plan, plan.waves(BOARDS), b"signed bundle")


def states(rollouts, rollout) -> dict[str, str]:
    return {job["device"]: job["state"] for job in rollouts.jobs(rollout)}


def end_jobs(store, rollouts, rollout, outcome: dict[str, str]) -> None:
    for job in rollouts.jobs(rollout):
        if job["device"] in outcome:
            store.update_job(job["id"], state=outcome[job["device"]])


def step(store, rollouts, now) -> list[str]:
    with store.transaction():
        return rollouts.advance(now)


def test_only_the_canary_is_queued_the_other_waves_are_held(store):
    rollouts, rollout = start(store)
    assert states(rollouts, rollout) == {"b0": "queued", **dict.fromkeys(BOARDS[1:], "held")}
    assert [job["wave"] for job in rollouts.jobs(rollout)] == [0, 1, 1, 2, 2, 2, 2]


def test_the_next_wave_is_queued_once_every_job_of_the_wave_has_ended(store):
    rollouts, rollout = start(store)
    assert step(store, rollouts, 1000.0) == []  # the first gateway to see it starts the wave's clock
    store.update_job(rollouts.jobs(rollout)[0]["id"], state="sending")
    assert step(store, rollouts, 1001.0) == []
    end_jobs(store, rollouts, rollout, {"b0": "done"})
    assert step(store, rollouts, 1002.0) == ["rollout 1 of a1 v2 to f: wave 2 of 3 queued (1 of 1 boards took it so far)"]
    assert [states(rollouts, rollout)[b] for b in ("b1", "b2", "b3")] == ["queued", "queued", "held"]


def test_a_rollout_whose_failures_pass_the_threshold_is_aborted_and_its_held_jobs_cancelled(store):
    rollouts, rollout = start(store, abort_at=30.0)
    step(store, rollouts, 1000.0)
    end_jobs(store, rollouts, rollout, {"b0": "done"})
    step(store, rollouts, 1001.0)
    end_jobs(store, rollouts, rollout, {"b1": "done", "b2": "failed"})  # 1 of 3: 33% > 30%
    assert step(store, rollouts, 1002.0) == [
        "rollout 1 of a1 v2 to f aborted at wave 2 of 3: 1 of 3 boards failed (33% > 30%)"]
    assert [states(rollouts, rollout)[b] for b in BOARDS[3:]] == ["cancelled"] * 4
    [row] = rollouts.get([rollout])
    assert (row["state"], row["jobs"]) == ("aborted", {"done": 2, "failed": 1, "cancelled": 4})
    assert store.jobs([rollouts.jobs(rollout)[3]["id"]])[0]["detail"] == "not deployed: rollout 1 aborted"


def test_a_wave_whose_time_is_up_counts_its_unfinished_jobs_as_failed(store):
    rollouts, rollout = start(store, abort_at=50.0, wave_timeout=10.0)
    step(store, rollouts, 1000.0)
    store.update_job(rollouts.jobs(rollout)[0]["id"], state="sending", owner="gw-a")  # its board went quiet
    assert step(store, rollouts, 1009.0) == []
    assert step(store, rollouts, 1010.0) == [
        "rollout 1 of a1 v2 to f aborted at wave 1 of 3: 1 of 1 boards failed (100% > 50%)"]
    assert states(rollouts, rollout)["b0"] == "sending"  # it goes on: its board may still take it


def test_the_last_wave_ended_makes_the_rollout_done(store):
    rollouts, rollout = start(store, abort_at=100.0)
    step(store, rollouts, 1000.0)
    for wave in (["b0"], ["b1", "b2"], BOARDS[3:]):
        end_jobs(store, rollouts, rollout, dict.fromkeys(wave, "done"))
        step(store, rollouts, 1001.0)
    [row] = rollouts.get([rollout])
    assert (row["state"], row["detail"], row["jobs"]) == ("done", "7 of 7 boards took it", {"done": 7})


def test_a_rollout_added_while_no_gateway_ran_gets_its_whole_time_from_when_one_sees_it(store):
    rollouts, rollout = start(store, wave_timeout=10.0)
    assert rollouts.get([rollout])[0]["wave_started"] is None
    step(store, rollouts, 5000.0)  # long after it was added
    assert step(store, rollouts, 5009.0) == []
    assert rollouts.get([rollout])[0]["state"] == "running"


def test_jobs_cancel_rollout_cancels_what_no_gateway_took_and_leaves_the_rest(store, tmp_path, capsys):
    rollouts, rollout = start(store)
    store.update_job(rollouts.jobs(rollout)[0]["id"], state="sending", owner="gw-a")
    assert main(["jobs", "cancel", "--rollout", str(rollout), "--db", str(tmp_path / "gw.db")]) == 0
    assert capsys.readouterr().out.strip() == f"cancelled 1 rollouts: {rollout}"
    assert states(rollouts, rollout) == {"b0": "sending", **dict.fromkeys(BOARDS[1:], "cancelled")}
    [row] = rollouts.get([rollout])
    assert (row["state"], row["detail"]) == ("cancelled", "cancelled by the operator at wave 1 of 3")
    assert main(["jobs", "cancel", "--rollout", str(rollout), "--rollout", "9", "--db", str(tmp_path / "gw.db")]) == 1
    assert capsys.readouterr().err.strip() == \
        f"microfang: rollout 9: no such rollout; rollout {rollout}: cancelled, not cancelled"


def test_jobs_cancel_alone_stops_running_rollouts_too(store, tmp_path, capsys):
    rollouts, rollout = start(store)
    assert main(["jobs", "cancel", "--db", str(tmp_path / "gw.db")]) == 0
    assert capsys.readouterr().out.splitlines() == [f"cancelled 1 rollouts: {rollout}", "cancelled 0 queued jobs"]
    assert set(states(rollouts, rollout).values()) == {"cancelled"}


def test_jobs_rollouts_json_lists_each_rollout_with_its_plan_and_boards(store, tmp_path, capsys):
    rollouts, rollout = start(store)
    assert main(["jobs", "rollouts", "--json", "--db", str(tmp_path / "gw.db")]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert {k: row[k] for k in ("id", "agent", "version", "fleet", "canary", "ramp", "abort_at", "state", "wave",
                                "waves", "jobs")} == {
        "id": rollout, "agent": "a1", "version": 2, "fleet": "f", "canary": 1, "ramp": 2.0, "abort_at": 30.0,
        "state": "running", "wave": 0, "waves": 3, "jobs": {"queued": 1, "held": 6}}
    assert main(["jobs", "--json", "--db", str(tmp_path / "gw.db")]) == 0
    assert [(j["rollout"], j["wave"]) for j in json.loads(capsys.readouterr().out)][:3] == [(1, 0), (1, 1), (1, 1)]


def test_two_gateways_taking_the_same_step_at_once_queue_the_next_wave_once(pg_store):
    first, second = Store(pg_store), Store(pg_store)
    try:
        for board in BOARDS:
            first.add_device(board, "f")
        rollouts, rollout = start(first)
        step(first, rollouts, 1000.0)
        end_jobs(first, rollouts, rollout, {"b0": "done"})
        said: dict[str, list[str]] = {}
        with first.transaction():
            said["first"] = rollouts.advance(1001.0)  # holds the rollout's row until it commits
            other = threading.Thread(target=lambda: said.update(second=step(second, Rollouts(second), 1001.0)))
            other.start()
            other.join(0.5)
            assert other.is_alive()  # waiting for the first's row lock
        other.join(10)
        assert said == {"first": ["rollout 1 of a1 v2 to f: wave 2 of 3 queued (1 of 1 boards took it so far)"],
                        "second": []}
        [row] = rollouts.get([rollout])
        assert (row["wave"], row["jobs"]) == (1, {"done": 1, "queued": 2, "held": 4})
    finally:
        first.close()
        second.close()


def test_a_database_from_before_rollouts_gets_its_columns(tmp_path):
    con = sqlite3.connect(tmp_path / "old.db")
    con.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, device TEXT NOT NULL, target TEXT, "
                "agent TEXT NOT NULL, version BIGINT, data BLOB, state TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', "
                "progress BIGINT NOT NULL DEFAULT 0, size BIGINT NOT NULL DEFAULT 0, created DOUBLE PRECISION NOT NULL, "
                "updated DOUBLE PRECISION NOT NULL)")
    con.execute("INSERT INTO jobs (kind, device, agent, state, created, updated) VALUES ('deploy', 'b1', 'a1', 'done', 1, 1)")
    con.commit()
    con.close()
    store = Store(tmp_path / "old.db")
    try:
        assert [(j["id"], j["state"], j["owner"], j["rollout"], j["wave"]) for j in store.jobs()] == \
            [(1, "done", "", None, None)]
    finally:
        store.close()
