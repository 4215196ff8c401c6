"""The gateway's database connection: SQLite (the embedded default, one file, one gateway) or
PostgreSQL (shared by several gateways), behind one small interface the store (store.py)
writes its SQL against.

    db = connect("gateway.db", exclusive=True)        # SQLite: refuses a second gateway
    db = connect("postgresql://gw@db/microfang")     # PostgreSQL: any number of gateways
    with db.transaction():
        db.execute("UPDATE devices SET online = ? WHERE id = ?", (1, "b1"))
        db.after_commit(lambda: print("committed"))

The SQL is the subset both engines speak (`?` placeholders become `%s` for PostgreSQL; `ON
CONFLICT`, `RETURNING`); the schema names its types through `{blob}` and `{serial}`.
A failure of the database itself (disk full, locked, damaged, connection lost) is raised as
StoreFailure, naming the problem in one line: the gateway then does not acknowledge the
message it was handling and tries again later. A lost PostgreSQL connection (the server
restarted, the backend terminated) is opened again by the next transaction, never in the
middle of one (what the lost session had done there is gone); `problem` says what failed
last until a transaction commits again, and `add_session_hook` re-takes what lived in the
lost session (a gateway's name lock, peers.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from microfang.config import private_file
from microfang.firmware.errors import MicrofangError

BUSY_TIMEOUT_S = 0.5  # a locked SQLite file: wait this long (blocking the loop), then report it and retry later
RETRY_S = (0.05, 2.0)  # back-off while the store fails: the first and the longest wait
RECONNECT_TIMEOUT_S = 2  # a lost PostgreSQL connection: how long one attempt to open it again may block the loop


class StoreFailure(MicrofangError):
    """The database failed (not the data): the work is rolled back and can be tried again."""


class StoreLocked(MicrofangError):
    """Another gateway holds this SQLite file."""


class Database:
    """One connection and its transaction state; subclasses say how to reach the engine."""

    types: dict[str, str] = {}
    shared = False  # several gateways may use it at once (rows they both change are locked)

    def __init__(self) -> None:
        self._depth = 0
        self.transactions = 0  # transactions begun: state kept for one (store.py) knows when it is over
        self._after: list[Callable[[], None]] = []
        self._staged: list[tuple[Callable[[list[Any]], None], Any]] = []  # (flush, item), in order
        self.problem: str | None = None  # the last failure, until a transaction commits again
        # What a gateway may keep in memory between transactions (store.py) holds while `epoch`
        # stays the same: it moves when another connection may have written (each transaction
        # on a store this process does not own alone) and when anything is rolled back.
        self.epoch = 0
        self._lazy: list[str] = []  # savepoints begun but not issued yet: nothing ran inside them
        self._hooks: list[Callable[[], None]] = []

    def add_session_hook(self, hook: Callable[[], None]) -> None:
        """Call `hook()` each time the connection has been opened again after it was lost
        (session state such as advisory locks died with the old one; a SQLite file is never
        lost). A MicrofangError from it fails the store until it succeeds."""
        self._hooks.append(hook)

    # ---- what subclasses provide ---------------------------------------------------------

    def _run(self, sql: str, args: Sequence[Any]) -> Any:
        raise NotImplementedError

    def _run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    def _failure(self, e: Exception) -> str | None:
        """The one-line reason if `e` is the database failing (None: a bug or bad data)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # ---- the interface -------------------------------------------------------------------

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """Run one statement; returns a cursor (fetchone/fetchall/iteration)."""
        try:
            if self._lazy:
                self._issue_savepoints()
            return self._run(sql, args)
        except Exception as e:
            self._raise_failure(e)
            raise

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            if self._lazy:
                self._issue_savepoints()
            self._run_many(sql, rows)
        except Exception as e:
            self._raise_failure(e)
            raise

    def _raise_failure(self, e: Exception) -> None:
        reason = self._failure(e)
        if reason is not None:
            self.problem = f"{self.name}: {reason}"
            raise StoreFailure(self.problem) from None

    @property
    def name(self) -> str:
        raise NotImplementedError

    def schema(self, text: str) -> None:
        """Run a script of statements, its types named `{blob}` and `{serial}`."""
        try:
            self._script(text.format(**self.types))
        except Exception as e:
            self._raise_failure(e)
            raise

    def _script(self, text: str) -> None:
        self._run(text, ())

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def transaction(self, savepoint: bool = False) -> contextlib.AbstractContextManager[None]:
        """One transaction; a nested one joins the outer, or with `savepoint` is rolled back
        alone (with its after-commit actions) on an exception. On commit the `after_commit`
        actions run; on any exception everything is rolled back and they are dropped."""
        if not self._depth:
            return self._transaction()
        return self._savepoint() if savepoint else self._joined()

    @contextlib.contextmanager
    def _joined(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self.execute(self._begin)
        self.transactions += 1
        self._depth = 1
        try:
            self._begun()
            yield
            self._flush_staged()
            self.execute("COMMIT")
        except BaseException:
            self._depth = 0
            self.epoch += 1
            self._lazy.clear()
            self._after.clear()
            self._staged.clear()
            with contextlib.suppress(Exception):
                self._rollback()
            raise
        self._depth = 0
        self.problem = None
        after, self._after = self._after, []
        for action in after:
            action()

    _begin = "BEGIN"

    def _rollback(self) -> None:
        self._run("ROLLBACK", ())

    def _begun(self) -> None:
        """Just after BEGIN: move `epoch` if another connection may have written since."""
        self.epoch += 1

    @contextlib.contextmanager
    def _savepoint(self) -> Iterator[None]:
        # Issued only when a statement runs inside it (most of a message's writes are staged
        # for the commit): one with none has nothing to release or roll back but its own
        # staged items and after-commit actions.
        name, mark, staged = f"sp{self._depth}", len(self._after), len(self._staged)
        self._lazy.append(name)
        self._depth += 1
        try:
            yield
            if not self._forget_lazy(name):
                self.execute(f"RELEASE SAVEPOINT {name}")
        except BaseException:
            del self._after[mark:]
            del self._staged[staged:]
            if not self._forget_lazy(name):
                self.epoch += 1
                with contextlib.suppress(Exception):
                    self._run(f"ROLLBACK TO SAVEPOINT {name}", ())
            raise
        finally:
            self._depth -= 1

    def _forget_lazy(self, name: str) -> bool:
        """Whether the savepoint `name` was never issued (then it is forgotten)."""
        if self._lazy and self._lazy[-1] == name:
            self._lazy.pop()
            return True
        return False

    def _issue_savepoints(self) -> None:
        lazy, self._lazy = self._lazy, []
        for name in lazy:
            self._run(f"SAVEPOINT {name}", ())

    def stage(self, flush: Callable[[list[Any]], None], item: Any) -> None:
        """Write `item` with the transaction's other items of `flush`: `flush(items)` runs once,
        inside the transaction just before it commits, with the items staged since it began, in
        order (those of a savepoint rolled back are gone with it). Outside a transaction: now.
        So a batch of messages appends its audit records in one statement, not one each."""
        if self._depth:
            self._staged.append((flush, item))
        else:
            with self.transaction():
                flush([item])

    def _flush_staged(self) -> None:
        while self._staged:
            staged, self._staged = self._staged, []
            groups: dict[Callable[[list[Any]], None], list[Any]] = {}
            for flush, item in staged:
                groups.setdefault(flush, []).append(item)
            for flush, items in groups.items():
                flush(items)

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run `action` once the current transaction has committed (now, if there is none):
        what must not happen for work that is rolled back (publishing, starting a request)."""
        if self._depth:
            self._after.append(action)
        else:
            action()


class SqliteDatabase(Database):
    types = {"blob": "BLOB", "serial": "INTEGER PRIMARY KEY"}

    def __init__(self, path: str | Path, exclusive: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self._lock: int | None = None
        if exclusive:
            self._take_lock()
        try:
            if not self.path.is_dir():
                private_file(self.path)  # every device key is in it: 0600 (SQLite gives -wal/-shm the same mode)
            self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                                      timeout=BUSY_TIMEOUT_S)
            self.execute("PRAGMA journal_mode=WAL")
            self.execute("PRAGMA synchronous=NORMAL")
        except StoreFailure as e:
            self.close()
            raise MicrofangError(f"{self.path}: not a gateway database ({str(e).split(': ', 1)[1]})") from None

    _begin = "BEGIN IMMEDIATE"  # take the write lock up front: no deadlock with another writer
    _data_version = None

    def _begun(self) -> None:
        # The running gateway's own file (locked against a second gateway): only other
        # processes' writes (`microfang flash`, `keys`) move the epoch; SQLite counts them.
        if self._lock is None:
            self.epoch += 1
            return
        version = self._run("PRAGMA data_version", ()).fetchone()[0]
        if version != self._data_version:
            self._data_version = version
            self.epoch += 1

    @property
    def name(self) -> str:
        return str(self.path)

    def _take_lock(self) -> None:
        """An flock on `{db}.lock`, held while the gateway runs (the kernel drops it if the
        process dies): two gateways on one SQLite file would each trust their own cache of
        the sequence numbers and the audit chain's head."""
        lock = Path(f"{self.path}.lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreLocked(f"{lock}: cannot create the gateway lock ({os.strerror(e.errno or 0)})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreLocked(f"{self.path}: another gateway (pid {holder}) is using this database; run one "
                              "gateway per SQLite file, or several on a shared PostgreSQL store (--store "
                              "postgresql://...)") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock = fd

    def _run(self, sql: str, args: Sequence[Any]) -> Any:
        return self.db.execute(sql, args)

    def _run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.db.executemany(sql, rows)

    def _script(self, text: str) -> None:
        self.db.executescript(text)

    def _failure(self, e: Exception) -> str | None:
        if isinstance(e, sqlite3.OperationalError | sqlite3.DatabaseError) and \
                not isinstance(e, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError):
            return str(e)
        return None

    def close(self) -> None:
        if getattr(self, "db", None) is not None:
            self.db.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


class PostgresDatabase(Database):
    types = {"blob": "BYTEA", "serial": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"}
    shared = True

    def __init__(self, dsn: str) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError:
            raise MicrofangError("a PostgreSQL store needs psycopg: pip install 'microfang[postgres]'") from None
        self._psycopg = psycopg
        self.dsn = dsn
        self.sessions = 1  # connections opened (a reconnect opens one more)
        self._shut = False
        try:
            self.db = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
        except psycopg.Error as e:
            raise MicrofangError(f"{self.name}: cannot connect ({str(e).strip().splitlines()[0]})") from None

    def _reconnect(self) -> None:
        """Open the connection again: only between transactions (inside one, the work done in
        the lost session is gone, so the transaction fails as a whole)."""
        if self._depth or self._shut:
            raise self._psycopg.OperationalError("the connection is closed" if self._shut else
                                                 "the connection was lost during the transaction")
        with contextlib.suppress(Exception):
            self.db.close()
        self.db = self._psycopg.connect(self.dsn, autocommit=True, connect_timeout=RECONNECT_TIMEOUT_S)
        self.sessions += 1
        for hook in self._hooks:
            try:
                hook()
            except MicrofangError as e:
                self.db.close()  # try again (and the hook with it) on the next transaction
                raise StoreFailure(f"{self.name}: after reconnecting: {e}") from None

    @property
    def name(self) -> str:
        # user@host/db without the password
        rest = self.dsn.split("://", 1)[-1]
        return "postgresql://" + rest.rsplit("@", 1)[-1] if "@" in rest else self.dsn

    def _run(self, sql: str, args: Sequence[Any]) -> Any:
        if self.db.closed or self.db.broken:
            self._reconnect()
        return self.db.execute(sql.replace("?", "%s"), args or None)

    def _rollback(self) -> None:
        if not (self.db.closed or self.db.broken):  # a lost session rolled back with it
            self._run("ROLLBACK", ())

    def _run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self.db.closed or self.db.broken:
            self._reconnect()
        with self.db.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), rows)

    def _failure(self, e: Exception) -> str | None:
        errors = self._psycopg.errors
        if isinstance(e, self._psycopg.OperationalError | errors.DiskFull | errors.LockNotAvailable |
                      errors.SerializationFailure | errors.DeadlockDetected | errors.AdminShutdown):
            return str(e).strip().splitlines()[0]
        return None

    def close(self) -> None:
        self._shut = True
        self.db.close()


def is_url(where: str | Path) -> bool:
    """Whether `where` names a PostgreSQL server (else it is a SQLite file)."""
    return str(where).startswith(("postgresql://", "postgres://"))


def connect(where: str | Path, exclusive: bool = False) -> Database:
    """A PostgreSQL database for a postgresql:// URL, else the SQLite file at `where`
    (`exclusive`: the running gateway's own, locked against a second gateway)."""
    if is_url(where):
        return PostgresDatabase(str(where))
    return SqliteDatabase(where, exclusive)
