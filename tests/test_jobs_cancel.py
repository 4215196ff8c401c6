"""`microfang jobs cancel [ID...]`: queued jobs no gateway has taken are cancelled (a deploy
queued while no gateway ran, for instance); a job a gateway has taken runs to its end."""

from __future__ import annotations

import pytest

from microfang.cli import main
from microfang.gateway.store import Store


@pytest.fixture
def store_with_jobs(tmp_path):
    db = tmp_path / "gw.db"
    store = Store(db)
    store.add_device("b1", "f")
    queued = [store.add_job("deploy", "b1", "a1", b"x", version=n) for n in (1, 2)]
    taken = store.add_job("deploy", "b1", "a1", b"x", version=3)
    store.update_job(taken, owner="gw-a", state="sending")
    store.close()
    return db, queued, taken


def states(db) -> dict[int, tuple[str, str]]:
    store = Store(db)
    try:
        return {row["id"]: (row["state"], row["detail"]) for row in store.jobs()}
    finally:
        store.close()


def test_cancel_with_ids_cancels_those_queued_jobs(store_with_jobs, capsys):
    db, queued, taken = store_with_jobs
    assert main(["jobs", "cancel", str(queued[0]), "--db", str(db)]) == 0
    assert capsys.readouterr().out.strip() == f"cancelled 1 queued jobs: {queued[0]}"
    assert states(db)[queued[0]] == ("cancelled", "cancelled by the operator")
    assert states(db)[queued[1]][0] == "queued"


def test_cancel_alone_cancels_every_queued_job_and_leaves_a_taken_one(store_with_jobs, capsys):
    db, queued, taken = store_with_jobs
    assert main(["jobs", "cancel", "--db", str(db)]) == 0
    assert [states(db)[j][0] for j in queued] == ["cancelled", "cancelled"]
    assert states(db)[taken][0] == "sending"


def test_a_job_a_gateway_has_taken_or_that_does_not_exist_is_one_line(store_with_jobs, capsys):
    db, queued, taken = store_with_jobs
    assert main(["jobs", "cancel", str(taken), "999", "--db", str(db)]) == 1
    assert capsys.readouterr().err.strip() == \
        f"microfang: job 999: no such job; job {taken}: sending with gateway gw-a, not cancelled"
    assert states(db)[taken][0] == "sending"
