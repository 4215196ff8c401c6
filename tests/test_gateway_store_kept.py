"""What the gateway keeps in memory between transactions on its own SQLite file (store.py
`_kept`: the down sequence numbers, agents' permissions) and the savepoints it issues only when
a statement runs inside them (db.py): never a number handed out twice, never a permission
another process or a rolled-back transaction changed. Real SQLite files; a second Store on the
same file is another process's connection (`microfang flash`, `keys`)."""

from __future__ import annotations

import pytest

from microfang.gateway.store import Store

MANIFEST = {"agent_id": "a1", "version": 1, "permissions": {"allowed": ["request"], "denied": []}}


@pytest.fixture
def gateway_store(tmp_path):
    store = Store(tmp_path / "gw.db", exclusive=True)
    store.add_device("dev1", "f")
    store.register_manifest("dev1", MANIFEST)
    yield store
    store.close()


def in_transaction(store, action, fail=False):
    try:
        with store.transaction():
            result = action()
            if fail:
                raise RuntimeError("the batch failed")
            return result
    except RuntimeError:
        return result


def test_down_sequence_numbers_that_go_out_never_repeat_across_rollbacks_and_sends_outside_batches(gateway_store):
    # What a rolled-back transaction sealed is never published (send() publishes after commit).
    store = gateway_store
    handed = []
    handed += in_transaction(store, lambda: [store.next_down_seq("dev1") for _ in range(3)])
    in_transaction(store, lambda: [store.next_down_seq("dev1") for _ in range(2)], fail=True)
    handed.append(store.next_down_seq("dev1"))  # outside a batch (ask(), a command)
    handed += in_transaction(store, lambda: [store.next_down_seq("dev1") for _ in range(3)])
    handed.append(store.next_down_seq("dev1"))
    handed += in_transaction(store, lambda: [store.next_down_seq("dev1") for _ in range(2)])
    assert handed == sorted(set(handed)), handed
    assert store.down_seq("dev1") == handed[-1]


def test_a_reprovisioned_device_counts_from_one_again(gateway_store):
    store = gateway_store
    in_transaction(store, lambda: [store.next_down_seq("dev1") for _ in range(5)])
    other = Store(store.path)  # `microfang flash` in another process
    other.provision_device("dev1", "f")
    other.close()
    assert in_transaction(store, lambda: store.next_down_seq("dev1")) == 1


def test_a_manifest_another_process_registers_applies_from_the_next_transaction(gateway_store):
    store = gateway_store
    assert in_transaction(store, lambda: store.permissions("dev1", "a1")) == ({"request"}, set())
    other = Store(store.path)
    other.register_manifest("dev1", {**MANIFEST, "version": 2, "permissions": {"allowed": [], "denied": ["request"]}})
    other.close()
    assert in_transaction(store, lambda: store.permissions("dev1", "a1")) == (set(), {"request"})


def test_a_manifest_registered_in_a_rolled_back_transaction_is_not_kept(gateway_store):
    store = gateway_store
    denied = {**MANIFEST, "version": 2, "permissions": {"allowed": [], "denied": ["request"]}}

    def register_and_read():
        store.register_manifest("dev1", denied)
        return store.permissions("dev1", "a1")

    assert in_transaction(store, register_and_read, fail=True) == (set(), {"request"})
    assert in_transaction(store, lambda: store.permissions("dev1", "a1")) == ({"request"}, set())


def test_a_message_whose_savepoint_ran_no_statement_still_rolls_back_alone(gateway_store):
    store = gateway_store

    def batch():
        with pytest.raises(RuntimeError), store.transaction(savepoint=True):
            store.audit("dev1", "a1", "request", {"id": 1})  # staged only: no statement inside
            store.next_down_seq("dev1")
            raise RuntimeError("a bad message")
        with store.transaction(savepoint=True):
            store.audit("dev1", "a1", "request", {"id": 2})

    in_transaction(store, batch)
    assert [r["detail"] for r in store.audit_records(10, "dev1")] == ['{"id":2}']
    assert store.verify_audit()[1] is None


def test_a_message_whose_savepoint_wrote_rows_rolls_them_back_alone(gateway_store):
    store = gateway_store

    def batch():
        with pytest.raises(RuntimeError), store.transaction(savepoint=True):
            store.add_request("dev1", "a1", 1, "echo", b"\xf6", "gw")
            raise RuntimeError("a bad message")
        with store.transaction(savepoint=True):
            store.add_request("dev1", "a1", 2, "echo", b"\xf6", "gw")

    in_transaction(store, batch)
    assert [row[2] for row in store.db.execute("SELECT device, agent, id FROM requests").fetchall()] == [2]
