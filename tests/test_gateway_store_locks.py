"""A SQLite store opened again in a process that has one open (a CLI call inside a test, the sim
beside its gateway) leaves the first connection's locks alone: config.private_file opened and
closed the database file, which drops every POSIX lock the process holds on it, and another
process closing its connection then took itself for the last one and deleted the WAL the first
was still writing to (its writes lost, `disk I/O error` after)."""

import subprocess
import sys

from microfang.gateway.store import Store


def other_process(db, code: str) -> str:
    script = f"import sqlite3; c = sqlite3.connect({str(db)!r}, isolation_level=None); {code}"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()


def test_writes_after_a_second_open_in_the_same_process_reach_other_processes(tmp_path):
    db = tmp_path / "gw.db"
    first = Store(db)
    first.add_device("b1", "f")
    Store(db).close()  # the same file opened (and closed) again in this process
    other_process(db, "c.execute(\"INSERT INTO devices (id, fleet, key, created) VALUES ('b2', 'f', x'00', 0)\"); c.close()")
    first.add_device("b3", "f")  # written to the WAL the other process must not have deleted
    seen = other_process(db, "print(sorted(r[0] for r in c.execute('SELECT id FROM devices')))")
    first.close()
    assert seen == "['b1', 'b2', 'b3']"
