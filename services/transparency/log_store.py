"""The transparency log's tables in the event store, appended in the events' own transaction.

Three tables beside `stored_events`:
- `merkle_hashes (hash_index, hash)`: every complete subtree's hash at the index Go's
  `tlog.StoredHashIndex` gives it (`services.transparency.merkle`), about two per leaf, so a tree
  hash or a proof at any size reads O(log n) rows;
- `merkle_leaves (leaf_index, notification_id)`: which stored event each leaf is;
- `audit_checkpoints (tree_size, note, created_at)`: the signed checkpoints made so far.

A leaf is SHA-256(0x00 || the event's canonical bytes), the very bytes its chain hash covers
(`domain.chain.EventRecord.canonical`), in notification order. The recorders call `append` in the
transaction that inserts the events, after the insert, under the lock that orders notification ids
(SQLite's write lock, the events table's EXCLUSIVE lock on PostgreSQL): the tree can never
disagree with the store, and two writers never interleave their leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

import orjson
from eventsourcing.persistence import StoredEvent

from domain.chain import EventRecord
from services.transparency.merkle import (
    append_leaves,
    frontier_indexes,
    stored_hash_count,
    stored_hash_index,
)
from services.transparency.tlog_check import leaf_hash

HASHES = "merkle_hashes"
LEAVES = "merkle_leaves"
CHECKPOINTS = "audit_checkpoints"
LEAF_PAGE = 5000
"""Leaves read per statement (well under SQLite's 32,766 bound parameters)."""


class Cursor(Protocol):
    """What both recorders' cursors offer (eventsourcing's SQLite wrapper and psycopg's)."""

    def execute(self, statement: Any, params: Any = ..., /) -> Any: ...

    def executemany(self, statement: Any, params_seq: Any, /) -> Any: ...

    def fetchall(self) -> Any: ...


Query = Callable[[str, Sequence[Any]], list[Any]]
"""Runs one read-only statement in a transaction of its own and returns its rows."""


def event_type(topic: str) -> str:
    """`domain.objective_events:KpiBound` -> `KpiBound`: the class name is what is hashed."""
    return topic.rpartition(":")[2].rpartition(".")[2]


def leaf_data(stored: StoredEvent | Any) -> bytes:
    """The canonical bytes of a stored event (a `StoredEvent` or a notification), as written: the
    store keeps each state as plain JSON (no compressor, no cipher: `Settings.event_store_env`)."""
    state = orjson.loads(stored.state)
    if not isinstance(state, dict):
        raise ValueError("a stored event's state must be a JSON object")
    objective_id = stored.originator_id
    record = EventRecord.from_stored(
        objective_id if isinstance(objective_id, UUID) else UUID(str(objective_id)),
        stored.originator_version,
        event_type(stored.topic),
        state,
    )
    return record.canonical()


@dataclass(frozen=True)
class LogDialect:
    """The little that differs between SQLite and PostgreSQL for these tables."""

    name: str
    prefix: str
    """Schema qualification ("" on SQLite, '"public".' on PostgreSQL)."""
    events_table: str

    def sql(self, statement: str) -> str:
        """Statements are written with `?` placeholders and table names in braces."""
        statement = statement.format(
            hashes=f"{self.prefix}{HASHES}",
            leaves=f"{self.prefix}{LEAVES}",
            checkpoints=f"{self.prefix}{CHECKPOINTS}",
            events=f"{self.prefix}{self.events_table}",
            notification_id="rowid" if self.name == "sqlite" else "notification_id",
        )
        return statement.replace("?", "%s") if self.name == "postgres" else statement

    def create_statements(self) -> list[str]:
        blob, big = ("BLOB", "INTEGER") if self.name == "sqlite" else ("bytea", "bigint")
        return [
            self.sql(
                f"CREATE TABLE IF NOT EXISTS {{hashes}} (hash_index {big} PRIMARY KEY, "
                f"hash {blob} NOT NULL)"
            ),
            self.sql(
                f"CREATE TABLE IF NOT EXISTS {{leaves}} (leaf_index {big} PRIMARY KEY, "
                f"notification_id {big} NOT NULL UNIQUE)"
            ),
            self.sql(
                f"CREATE TABLE IF NOT EXISTS {{checkpoints}} (tree_size {big} PRIMARY KEY, "
                "note TEXT NOT NULL, created_at TEXT NOT NULL)"
            ),
        ]


def sqlite_dialect(events_table: str) -> LogDialect:
    return LogDialect(name="sqlite", prefix="", events_table=events_table)


def postgres_dialect(schema: str, events_table: str) -> LogDialect:
    return LogDialect(name="postgres", prefix=f'"{schema}".', events_table=events_table)


class LogWriter:
    """Appends leaves through a cursor of the events' transaction."""

    def __init__(self, dialect: LogDialect) -> None:
        d = dialect
        self.dialect = d
        self.select_size = d.sql("SELECT COALESCE(MAX(leaf_index) + 1, 0) AS size FROM {leaves}")
        self.insert_hash = d.sql("INSERT INTO {hashes} (hash_index, hash) VALUES (?, ?)")
        self.insert_leaf = d.sql("INSERT INTO {leaves} (leaf_index, notification_id) VALUES (?, ?)")
        self.insert_hashes_postgres = d.sql(
            "INSERT INTO {hashes} (hash_index, hash) "
            "SELECT ? + i - 1, h FROM unnest(%b::bytea[]) WITH ORDINALITY AS u(h, i)"
        )
        self.insert_leaves_postgres = d.sql(
            "INSERT INTO {leaves} (leaf_index, notification_id) "
            "SELECT ? + i - 1, n FROM unnest(%b::bigint[]) WITH ORDINALITY AS u(n, i)"
        )
        """A batch's new hashes and leaves have consecutive indexes: on PostgreSQL, one statement
        each over a binary array instead of a statement per row (a scorer batch appends a
        thousand leaves and twice as many hashes)."""

    def append(
        self, cursor: Cursor, notification_ids: Sequence[int], leaves: Sequence[bytes]
    ) -> int:
        """Append leaf hashes (in notification order) after what the tree holds; returns the new
        tree size. Reads the tree's size and right edge once, computes in memory, writes once."""
        cursor.execute(self.select_size)
        size = int(_first(cursor.fetchall(), "size"))
        frontier = read_hashes(cursor, self.dialect, frontier_indexes(size))
        new_hashes, _ = append_leaves(size, frontier, leaves)
        first_index = stored_hash_count(size)
        if self.dialect.name == "postgres":
            if new_hashes:
                cursor.execute(self.insert_hashes_postgres, [first_index, list(new_hashes)])
            if notification_ids:
                cursor.execute(self.insert_leaves_postgres, [size, list(notification_ids)])
            return size + len(leaves)
        cursor.executemany(
            self.insert_hash, [(first_index + i, h) for i, h in enumerate(new_hashes)]
        )
        cursor.executemany(
            self.insert_leaf, [(size + i, nid) for i, nid in enumerate(notification_ids)]
        )
        return size + len(leaves)

    def append_events(
        self, cursor: Cursor, stored_events: Sequence[StoredEvent], notification_ids: Sequence[int]
    ) -> None:
        """The events just inserted, with the notification ids the store gave them."""
        if not stored_events:
            return
        if len(notification_ids) != len(stored_events):
            raise ValueError("every stored event needs its notification id to join the log")
        order = sorted(range(len(stored_events)), key=lambda i: notification_ids[i])
        self.append(
            cursor,
            [notification_ids[i] for i in order],
            [leaf_hash(_canonical(stored_events[i])) for i in order],
        )

    def backfill(self, cursor: Cursor, page: int = 5000) -> int:
        """Build the tree once from events stored before the log existed (a migration): every
        event not yet a leaf, in notification order. Returns how many leaves were added."""
        d = self.dialect
        added = 0
        while True:
            cursor.execute(
                d.sql(
                    "SELECT {notification_id} AS notification_id, originator_id, "
                    "originator_version, topic, state FROM {events} WHERE {notification_id} > "
                    "(SELECT COALESCE(MAX(notification_id), 0) FROM {leaves}) "
                    "ORDER BY {notification_id} LIMIT ?"
                ),
                (page,),
            )
            rows = cursor.fetchall()
            if not rows:
                return added
            self.append(
                cursor,
                [row["notification_id"] for row in rows],
                [leaf_hash(leaf_data(_Row(row))) for row in rows],
            )
            added += len(rows)


def _canonical(stored: StoredEvent) -> bytes:
    """The bytes sealing hashed when the mapper kept them, else decoded from the stored state."""
    return getattr(stored, "canonical", None) or leaf_data(stored)


class _Row:
    """A row of the events table read as a stored event (`leaf_data` needs four attributes)."""

    def __init__(self, row: Any) -> None:
        self.originator_id = row["originator_id"]
        self.originator_version = row["originator_version"]
        self.topic = row["topic"]
        self.state = bytes(row["state"])


def read_hashes(cursor: Cursor, dialect: LogDialect, indexes: Sequence[int]) -> list[bytes]:
    """The stored hashes at `indexes`, in that order, in one statement."""
    if not indexes:
        return []
    wanted = sorted(set(indexes))
    placeholders = ", ".join("?" * len(wanted))
    cursor.execute(
        dialect.sql(
            f"SELECT hash_index, hash FROM {{hashes}} WHERE hash_index IN ({placeholders})"
        ),
        wanted,
    )
    return _in_order(cursor.fetchall(), indexes)


def _first(rows: Sequence[Any], column: str) -> Any:
    return rows[0][column]


@dataclass(frozen=True)
class StoredCheckpoint:
    tree_size: int
    note: str
    created_at: str


class LogReader:
    """Reads the log for proofs and checkpoints, each call in a transaction of its own."""

    def __init__(self, dialect: LogDialect, query: Query, write: Query) -> None:
        self.dialect = dialect
        self._query = query
        self._write = write

    def size(self) -> int:
        rows = self._query(
            self.dialect.sql("SELECT COALESCE(MAX(leaf_index) + 1, 0) AS size FROM {leaves}"), ()
        )
        return int(_first(rows, "size"))

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        """A `merkle.HashReader`: one statement per call."""
        if not indexes:
            return []
        wanted = sorted(set(indexes))
        placeholders = ", ".join("?" * len(wanted))
        rows = self._query(
            self.dialect.sql(
                f"SELECT hash_index, hash FROM {{hashes}} WHERE hash_index IN ({placeholders})"
            ),
            wanted,
        )
        return _in_order(rows, indexes)

    def leaf_index(self, objective_id: UUID, version: int) -> int | None:
        """The leaf of an objective's event at a version; None when the store has no such event
        or it is not in the log."""
        key: Any = objective_id.hex if self.dialect.name == "sqlite" else objective_id
        rows = self._query(
            self.dialect.sql(
                "SELECT l.leaf_index AS leaf_index FROM {leaves} l JOIN {events} e "
                "ON e.{notification_id} = l.notification_id "
                "WHERE e.originator_id = ? AND e.originator_version = ?"
            ),
            (key, version),
        )
        return int(rows[0]["leaf_index"]) if rows else None

    def leaves(self, start: int, stop: int) -> Iterator[tuple[int, int, bytes]]:
        """(leaf index, notification id, stored leaf hash) of the leaves in [start, stop), read
        a page at a time."""
        for page_start in range(start, stop, LEAF_PAGE):
            rows = self._query(
                self.dialect.sql(
                    "SELECT leaf_index, notification_id FROM {leaves} "
                    "WHERE leaf_index >= ? AND leaf_index < ? ORDER BY leaf_index"
                ),
                (page_start, min(stop, page_start + LEAF_PAGE)),
            )
            hashes = self.read_hashes([stored_hash_index(0, int(r["leaf_index"])) for r in rows])
            for row, digest in zip(rows, hashes, strict=True):
                yield int(row["leaf_index"]), int(row["notification_id"]), digest

    def keep_checkpoint(self, tree_size: int, note: str) -> bool:
        """Keep a signed checkpoint; False when one of that size is kept already."""
        rows = self._write(
            self.dialect.sql(
                "INSERT INTO {checkpoints} (tree_size, note, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (tree_size) DO NOTHING RETURNING tree_size"
            ),
            (tree_size, note, datetime.now(UTC).isoformat()),
        )
        return bool(rows)

    def checkpoints(self) -> list[StoredCheckpoint]:
        """Every kept checkpoint, oldest first."""
        rows = self._query(
            self.dialect.sql(
                "SELECT tree_size, note, created_at FROM {checkpoints} ORDER BY tree_size"
            ),
            (),
        )
        return _checkpoints(rows)

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        rows = self._query(
            self.dialect.sql(
                "SELECT tree_size, note, created_at FROM {checkpoints} "
                "ORDER BY tree_size DESC LIMIT 1"
            ),
            (),
        )
        return next(iter(_checkpoints(rows)), None)

    def checkpoint_at(self, tree_size: int) -> StoredCheckpoint | None:
        rows = self._query(
            self.dialect.sql(
                "SELECT tree_size, note, created_at FROM {checkpoints} WHERE tree_size = ?"
            ),
            (tree_size,),
        )
        return next(iter(_checkpoints(rows)), None)


def _checkpoints(rows: Iterable[Any]) -> list[StoredCheckpoint]:
    return [StoredCheckpoint(int(r["tree_size"]), r["note"], r["created_at"]) for r in rows]


def _in_order(rows: Iterable[Any], indexes: Sequence[int]) -> list[bytes]:
    found = {int(row["hash_index"]): bytes(row["hash"]) for row in rows}
    missing = [i for i in indexes if i not in found]
    if missing:
        raise LookupError(f"the log has no stored hash at index {missing[0]}")
    return [found[i] for i in indexes]
