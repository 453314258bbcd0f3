"""`okr migrate --status`: which schema migrations each store has, read without applying any.

The stores apply their pending migrations themselves when a process opens them
(`projections.migrations`); this only looks, so an operator can see before an upgrade what it will
do, and after it that it did. A store that does not exist yet is reported with every migration
pending, and is not created.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from projections.migrations import MigrationState, SchemaHistory
from projections.postgres import placeholders
from projections.sql import read_store_history
from projections.sqlite import COLUMN_TYPES
from services.commands.event_store import event_store_migrations
from services.stores import is_postgres, postgres_location, sqlite_path


@dataclass(frozen=True)
class StoreSchema:
    store: str
    url: str
    migrations: list[MigrationState]

    @property
    def pending(self) -> list[MigrationState]:
        return [m for m in self.migrations if m.applied_at is None]


class _Reader:
    """A read-only `projections.migrations.Executor` on one connection."""

    def __init__(self, connection: Any, *, postgres: bool) -> None:
        self.connection = connection
        self.postgres = postgres

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        statement = placeholders(sql) if self.postgres else sql
        return [dict(row) for row in self.connection.execute(statement, params).fetchall()]

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        raise PermissionError("reading the schema's status writes nothing")

    def has_table(self, name: str) -> bool:
        if self.postgres:
            rows = self.fetch("SELECT to_regclass(?) IS NOT NULL AS found", (name,))
        else:
            rows = self.fetch(
                "SELECT count(*) > 0 AS found FROM sqlite_master WHERE type = 'table' AND name = ?",
                (name,),
            )
        return bool(rows[0]["found"])


@contextlib.contextmanager
def _reading(url: str) -> Iterator[_Reader | None]:
    if is_postgres(url):
        with psycopg.connect(postgres_location(url).conninfo, row_factory=dict_row) as conn:
            yield _Reader(conn, postgres=True)
        return
    path = sqlite_path(url)
    if not path.exists():
        yield None
        return
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    connection.row_factory = sqlite3.Row
    try:
        yield _Reader(connection, postgres=False)
    finally:
        connection.close()


def schema_of(store: str, url: str, history: SchemaHistory) -> StoreSchema:
    with _reading(url) as reader:
        recorded = reader is not None and reader.has_table(history.table)
        if reader is None:
            states = [MigrationState(m.version, m.name, None) for m in history.migrations]
        else:
            states = history.status(reader, recorded=recorded)
    return StoreSchema(store, url, states)


def store_schemas(event_store_url: str, read_store_url: str) -> list[StoreSchema]:
    """Both stores' migrations, applied or pending (the names do not depend on the backend)."""
    return [
        schema_of("event store", event_store_url, event_store_migrations()),
        schema_of("read store", read_store_url, read_store_history(COLUMN_TYPES)),
    ]
