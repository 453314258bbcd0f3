"""The read store on PostgreSQL: the shared SQL with native types (UUID, DATE, TIMESTAMPTZ, JSONB).

Connections come from a small pool, checked before use so a restarted server costs one failed
check, not a failed batch. Reads run REPEATABLE READ so a multi-table dump is one snapshot.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from enum import Enum
from typing import Any

from psycopg import Connection
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from projections.sql import Session, SqlReadStore

POOL_SIZE = 4

COLUMN_TYPES = {
    "uuid": "UUID",
    "date": "DATE",
    "timestamp": "TIMESTAMPTZ",
    "real": "DOUBLE PRECISION",
    "bigint": "BIGINT",
    "json": "JSONB",
}


def adapt(value: Any) -> Any:
    """psycopg adapts UUID, date and datetime itself; enums are stored by value, JSON as JSONB."""
    if isinstance(value, dict | list):
        return Jsonb(value)
    if isinstance(value, Enum):
        return value.value
    return value


def placeholders(sql: str) -> str:
    """The shared SQL writes `?`; psycopg wants `%s` (the SQL has no literal `?` or `%`)."""
    return sql.replace("?", "%s")


class PostgresSession:
    def __init__(self, connection: Connection[DictRow]) -> None:
        self._connection = connection

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self._connection.execute(placeholders(sql), [adapt(p) for p in params])
        return cursor.fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._connection.execute(placeholders(sql), [adapt(p) for p in params])

    def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._connection.cursor() as cursor:
            cursor.executemany(placeholders(sql), [[adapt(p) for p in row] for row in rows])

    def insert_many(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """By `COPY`: the rows stream to the server in one statement, each value dumped by
        psycopg's C adapters (an `INSERT` per row, even pipelined, costs a round of parsing,
        planning and acknowledging each)."""
        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with self._connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)


class PostgresDialect:
    column_types: Mapping[str, str] = COLUMN_TYPES

    def __init__(self, conninfo: str) -> None:
        self.pool: ConnectionPool[Connection[DictRow]] = ConnectionPool(
            conninfo,
            connection_class=Connection[DictRow],
            kwargs={"row_factory": dict_row},
            min_size=1,
            max_size=POOL_SIZE,
            check=ConnectionPool.check_connection,
            name="okr-read-store",
            open=True,
        )

    @contextlib.contextmanager
    def session(self, *, write: bool) -> Iterator[PostgresSession]:
        """The pool's context commits on a clean exit and rolls back on an exception."""
        with self.pool.connection() as connection:
            if not write:
                connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield PostgresSession(connection)

    def decode_json(self, value: Any) -> Any:
        return value

    def close(self) -> None:
        self.pool.close()


SCHEMA_LOCK = 0x6F6B725F72656164
"""PostgreSQL advisory lock key held while a process creates or migrates the read store
("okr_read"); the event store holds its own while it does the same."""


class PostgresReadStore(SqlReadStore):
    """`url` is a libpq URI or key/value string, e.g. postgresql://user:pw@host:5432/db."""

    def __init__(self, url: str) -> None:
        super().__init__(PostgresDialect(url))

    def _create(self, session: Session) -> None:
        """One process at a time (an advisory lock until commit): `CREATE TABLE IF NOT EXISTS`
        is not safe against a concurrent one, and of two instances of a fleet starting together
        one failed on the catalog ("duplicate key value violates unique constraint
        pg_type_typname_nsp_index")."""
        session.run("SELECT pg_advisory_xact_lock(?)", [SCHEMA_LOCK])
        super()._create(session)
