"""A gateway on a PostgreSQL store when the connection is lost: the server restarts, or the
gateway's backend is terminated (pg_terminate_backend). It backs off, answers 503 on /healthz
with the reason while the server is away, acknowledges nothing it has not committed, opens the
connection again between transactions and carries on: every request answered exactly once,
the audit chain intact, its name lock held again. A board on the wire is a paho client sending
signed requests (tests/wireboard.py)."""

import asyncio

import psycopg
import pytest
from postgres import PostgresCluster
from test_gateway_store_faults import REQUESTS, through_a_failure

from microfang.firmware.errors import MicrofangError
from microfang.gateway import Gateway
from microfang.gateway.db import StoreFailure, connect


@pytest.fixture
def own_pg(tmp_path):
    """A PostgreSQL cluster of this test's own: the test stops and starts its server."""
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


def terminate_others(dsn):
    """End every other session on the database, as an administrator's pg_terminate_backend does."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        ended = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                              "datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]
    assert ended >= 1


def test_a_terminated_backend_loses_no_request_and_the_gateway_reconnects(mosquitto, pg_store):
    replies, _, after, _, audit, sessions = asyncio.run(through_a_failure(
        mosquitto.port, pg_store, lambda: terminate_others(pg_store), lambda: None, stays_failing=False))
    assert sessions >= 2  # the connection was lost and opened again
    assert replies == list(range(1, REQUESTS + 1))  # every request answered, exactly once
    assert after[0] == 200 and after[1]["store"] == "ok", after
    assert audit[1] is None and audit[0] >= 2 * REQUESTS


def test_a_restarted_server_loses_no_request_and_healthz_says_why_meanwhile(mosquitto, own_pg):
    replies, failing, after, failures, audit, _ = asyncio.run(through_a_failure(
        mosquitto.port, own_pg.dsn, own_pg.stop_server, own_pg.start_server))
    assert failures > 0
    assert failing[0] == 503 and failing[1]["store"].startswith("postgresql://"), failing
    assert replies == list(range(1, REQUESTS + 1))
    assert after[0] == 200 and after[1]["store"] == "ok", after
    assert audit[1] is None and audit[0] >= 2 * REQUESTS


def test_the_gateway_holds_its_name_again_after_reconnecting(mosquitto, pg_store):
    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=pg_store, name="gw-a", quiet=True) as gw:
            terminate_others(pg_store)
            await asyncio.sleep(1.5)  # a heartbeat: it reconnects and takes its name again
            assert gw.store.db.sessions >= 2
            with pytest.raises(MicrofangError, match="gateway name 'gw-a': already running"):
                async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=pg_store, name="gw-a",
                                   quiet=True):
                    pass

    asyncio.run(scenario())


def test_a_connection_lost_inside_a_transaction_fails_it_whole(pg_store):
    db = connect(pg_store)
    db.execute("CREATE TABLE t (n BIGINT)")
    with pytest.raises(StoreFailure, match=r"^postgresql://.*: "), db.transaction():
        db.execute("INSERT INTO t VALUES (1)")
        terminate_others(pg_store)
        db.execute("INSERT INTO t VALUES (2)")  # not on a new connection: the first insert died with the old one
    assert db.problem is not None
    with db.transaction():  # the next transaction opens the connection again
        db.execute("INSERT INTO t VALUES (3)")
    assert [r[0] for r in db.execute("SELECT n FROM t ORDER BY n")] == [3]
    assert db.problem is None and db.sessions == 2
    db.close()


def test_a_closed_store_stays_closed(pg_store):
    db = connect(pg_store)
    db.close()
    with pytest.raises(StoreFailure, match="the connection is closed"):
        db.execute("SELECT 1")
