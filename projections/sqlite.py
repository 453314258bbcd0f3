"""The read store on an SQLite file: the embedded default, so the service needs nothing but Kafka.

A connection per transaction (cheap for SQLite) makes the store safe to share between the
projector's worker thread and the read API's. WAL lets readers run while the projector writes, and
writes commit without an fsync each (`synchronous=NORMAL`: the store is rebuilt from Kafka);
`BEGIN IMMEDIATE` takes the write lock up front, so a batch never fails half-way on a lock upgrade.
Timestamps are stored as UTC ISO-8601 text of fixed precision, so text order is time order.
The store's directory, where this makes it, is mode 700 and its files 600 (`private_file`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson

from projections.sql import SqlReadStore, insert_statement
from projections.views import json_text, moment_text

LOCK_TIMEOUT_S = 30.0
CHECKPOINT_EVERY_S = 1.0
"""How often, at most, the background checkpointer copies the WAL into the database, while
commits come (`WalCheckpointer`); without commits it sleeps."""
PRIVATE_DIRECTORY_MODE = 0o700
PRIVATE_FILE_MODE = 0o600

COLUMN_TYPES = {
    "uuid": "TEXT",
    "date": "TEXT",
    "timestamp": "TEXT",
    "real": "REAL",
    "bigint": "INTEGER",
    "json": "TEXT",
}


CONVERSIONS: dict[type, Callable[[Any], Any] | None] = {
    **dict.fromkeys((str, int, float, bool, type(None))),
    UUID: str,
    datetime: moment_text,
    date: date.isoformat,
    dict: json_text,
    list: json_text,
}
"""Exact type -> how sqlite3 stores it: None for as it is (the projector's writes are made of
these; subclasses, such as str enums, go through `adapt`)."""


def adapt(value: Any) -> Any:
    """Python value -> what sqlite3 stores (its own date adapters are deprecated)."""
    if type(value) in CONVERSIONS:
        convert = CONVERSIONS[type(value)]
        return value if convert is None else convert(value)
    if isinstance(value, Enum):
        return value.value
    for kind, convert in CONVERSIONS.items():  # subclasses; `datetime` is tried before `date`
        if convert is not None and isinstance(value, kind):
            return convert(value)
    return value


def stored(row: Sequence[Any]) -> list[Any]:
    """`adapt` for each value, the common types looked up without a call."""
    conversions = CONVERSIONS
    return [
        value if (convert := conversions.get(type(value), adapt)) is None else convert(value)
        for value in row
    ]


class SQLiteSession:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self._connection.execute(sql, [adapt(p) for p in params])
        return [dict(row) for row in cursor.fetchall()]

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._connection.execute(sql, [adapt(p) for p in params])

    def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._connection.executemany(sql, [stored(row) for row in rows])

    def insert_many(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        self._connection.executemany(insert_statement(table, columns), rows)


def private_directory(path: Path) -> None:
    """Make `path` and its missing parents, each mode 700; existing ones are left as they are."""
    missing: list[Path] = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=PRIVATE_DIRECTORY_MODE)


def private_file(path: Path) -> None:
    """Create an SQLite database file mode 600 (empty: SQLite's empty database) in a directory
    made 700, unless it exists. SQLite gives its -wal and -shm files the database file's mode."""
    private_directory(path.parent)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT, PRIVATE_FILE_MODE))


class WalCheckpointer:
    """Copies the WAL into the database file from a thread of its own, at most every
    `CHECKPOINT_EVERY_S` while commits come (`written`), instead of on the writer's commits.
    Both SQLite stores use it: this read store, and the event store
    (`services.commands.event_store.CheckpointedSQLiteFactory`, ADR 15).

    SQLite checkpoints when a commit finds the WAL over 1,000 pages, inside that commit, which
    then pays the copy and its fsync (the projector's mean batch in two latency runs: 42 and
    51 ms with them, 24 and 30 ms without). A PASSIVE checkpoint never waits for the writer or
    for readers, and SQLite releases the GIL while it runs.

    With nothing committed it sleeps (an idle process wakes for nothing: ADR 16); it checkpoints
    once at start, for what an earlier run left in the WAL.
    """

    def __init__(self, path: Path, every_s: float = CHECKPOINT_EVERY_S) -> None:
        self.path = path
        self.every_s = every_s
        self.done = 0
        """Checkpoints run (tests wait on it)."""
        self._stopping = threading.Event()
        self._written = threading.Event()
        self._written.set()
        self._thread = threading.Thread(target=self._run, name="wal-checkpointer", daemon=True)
        self._thread.start()

    def written(self) -> None:
        """A commit added to the WAL: checkpoint within `every_s` (cheap: call it every time)."""
        self._written.set()

    def _run(self) -> None:
        with contextlib.closing(
            sqlite3.connect(self.path, timeout=LOCK_TIMEOUT_S, isolation_level=None)
        ) as connection:
            while True:
                self._written.wait()
                # At most one checkpoint per `every_s`: the commits meanwhile go together.
                if self._stopping.wait(self.every_s):
                    return
                self._written.clear()
                with contextlib.suppress(sqlite3.Error):  # the next commit tries again
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.done += 1

    def stop(self) -> None:
        self._stopping.set()
        self._written.set()
        self._thread.join(timeout=LOCK_TIMEOUT_S)


class SQLiteDialect:
    column_types: Mapping[str, str] = COLUMN_TYPES

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: sqlite3.Connection | None = None
        self._checkpointer: WalCheckpointer | None = None
        self._writer_lock = threading.Lock()
        private_file(path)
        with contextlib.closing(sqlite3.connect(path, timeout=LOCK_TIMEOUT_S)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")

    @contextlib.contextmanager
    def session(self, *, write: bool) -> Iterator[SQLiteSession]:
        if not write:
            connection = self._connect()
            try:
                yield from self._transaction(connection, "BEGIN")
            finally:
                connection.close()
            return
        # One connection for every write of this store, kept open: closing the last connection
        # of a WAL database checkpoints it, which cost a projector batch ~4 ms.
        with self._writer_lock:
            if self._writer is None:
                self._writer = self._connect(check_same_thread=False)
                # WAL + NORMAL: a commit is not fsynced, so a power cut (not a crash of the
                # process) may lose the last batches; they go together with their positions, so
                # the projector re-applies them from Kafka. docs/decisions/0012.
                self._writer.execute("PRAGMA synchronous=NORMAL")
                self._writer.execute("PRAGMA wal_autocheckpoint=0")
                if self._checkpointer is None:
                    self._checkpointer = WalCheckpointer(self.path)
            try:
                yield from self._transaction(self._writer, "BEGIN IMMEDIATE")
            except sqlite3.Error:
                self._close_writer()  # whatever state it is in, the next write starts afresh
                raise
            if self._checkpointer is not None:
                self._checkpointer.written()

    def _connect(self, *, check_same_thread: bool = True) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path,
            timeout=LOCK_TIMEOUT_S,
            isolation_level=None,
            check_same_thread=check_same_thread,
        )
        connection.row_factory = sqlite3.Row
        return connection

    @staticmethod
    def _transaction(connection: sqlite3.Connection, begin: str) -> Iterator[SQLiteSession]:
        connection.execute(begin)
        try:
            yield SQLiteSession(connection)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def _close_writer(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(sqlite3.Error):
                self._writer.close()
            self._writer = None

    def decode_json(self, value: Any) -> Any:
        return orjson.loads(value) if isinstance(value, str | bytes) else value

    def close(self) -> None:
        """Only the write connection (and its checkpointer) stays open between transactions;
        closing the last connection checkpoints what is left."""
        with self._writer_lock:
            if self._checkpointer is not None:
                self._checkpointer.stop()
                self._checkpointer = None
            self._close_writer()


class SQLiteReadStore(SqlReadStore):
    def __init__(self, path: Path | str) -> None:
        super().__init__(SQLiteDialect(Path(path)))
