"""How domain events are stored: pydantic <-> orjson bytes, upcasting, snapshots, receipts, and
the KPI scorer's state.

A *receipt* is the record that a command id was applied, with the response it got. It is written
by the event store's own recorder in the same transaction as the command's events, so a retried
command (same Idempotency-Key or Kafka command id) can never be applied twice, even by two
processes at once: the second insert violates the receipt's primary key and its events roll back.
The KPI scorer's series, counters, bindings and Kafka positions (`services.scoring.series_store`)
ride the
same hook: `save_events(events, kpi_batch=KpiBatch(...))` commits them with the events, or nothing.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

import orjson
from eventsourcing.persistence import (
    InterfaceError,
    Mapper,
    OperationalError,
    StoredEvent,
    Transcoder,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteFactory,
)
from eventsourcing.utils import get_topic, register_topic, resolve_topic, retry
from psycopg.sql import SQL, Composable, Composed, Identifier

from domain.chain import canonical_of
from domain.objective import Objective, evolve
from domain.objective_events import DomainEvent, Immutable
from projections.migrations import Migration, SchemaHistory, statements
from projections.postgres import placeholders
from projections.sqlite import WalCheckpointer, private_file
from services.relay.wakeup import Doorbell, PostgresDoorbell, SocketDoorbell
from services.scoring.series_ahead import SeriesAhead
from services.scoring.series_store import (
    SQLITE,
    KpiBatch,
    KpiReader,
    KpiWriter,
    SeriesChunk,
    postgres_dialect,
)
from services.stores import postgres_location
from services.transparency import log_store
from services.transparency.log_store import LogReader, LogWriter

if TYPE_CHECKING:
    from eventsourcing.domain import DomainEventProtocol
    from eventsourcing.postgres import PostgresDatastore
    from eventsourcing.sqlite import SQLiteCursor, SQLiteDatastore
    from psycopg import Connection, Cursor
    from psycopg.rows import DictRow

    from services.settings import Settings

RECEIPTS_TABLE = "command_receipts"
log = logging.getLogger(__name__)


class UnsealedEventError(ValueError):
    """An event reached the store without its chain hash: a bug in the code that decided it."""

    def __init__(self, event: DomainEvent) -> None:
        super().__init__(
            f"{type(event).__name__} of {event.originator_id} version "
            f"{event.originator_version} has no chain hash; decisions must `seal` their events"
        )


class OrjsonTranscoder(Transcoder):
    """JSON bytes via orjson: pydantic has already reduced every value to JSON types."""

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def decode(self, data: bytes) -> Any:
        return orjson.loads(data)


@dataclass(frozen=True)
class CanonicalStoredEvent(StoredEvent):
    """A stored event with the canonical bytes its chain hash covers, from sealing: the
    transparency log's leaf hashes them (`services.transparency.log_store.LogWriter`)."""

    canonical: bytes | None = None


class PydanticMapper(Mapper[UUID]):
    """Stored event <-> pydantic domain event, upcasting old class versions on the way in."""

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        event = cast(Immutable, domain_event)
        unsealed = isinstance(event, DomainEvent) and not event.chain_hash
        if unsealed and not isinstance(event, ObjectiveSnapshot):
            raise UnsealedEventError(cast(DomainEvent, event))
        state = event.model_dump(mode="json", exclude={"originator_id", "originator_version"})
        class_version = getattr(type(event), "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        return CanonicalStoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=get_topic(type(event)),
            state=self._seal(self.transcoder.encode(state)),
            canonical=canonical_of(event) if isinstance(event, DomainEvent) else None,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        cls = resolve_topic(stored_event.topic)
        state: dict[str, Any] = self.transcoder.decode(self._unseal(stored_event.state))
        stored_version = state.pop("class_version", 1)
        for version in range(stored_version, getattr(cls, "class_version", 1)):
            getattr(cls, f"upcast_v{version}_v{version + 1}")(state)
        state["originator_id"] = stored_event.originator_id
        state["originator_version"] = stored_event.originator_version
        return cast("DomainEventProtocol[UUID]", cls.model_validate(state))

    def stored_state(self, stored_event: StoredEvent) -> dict[str, Any]:
        """The JSON object an event was written as, before any upcasting: what its chain hash
        covers (`domain.chain.EventRecord.from_stored`)."""
        state = self.transcoder.decode(self._unseal(stored_event.state))
        if not isinstance(state, dict):
            raise ValueError("a stored event's state must be a JSON object")
        return state

    def _seal(self, data: bytes) -> bytes:
        if self.compressor:
            data = self.compressor.compress(data)
        if self.cipher:
            data = self.cipher.encrypt(data)
        return data

    def _unseal(self, data: bytes) -> bytes:
        if self.cipher:
            data = self.cipher.decrypt(data)
        if self.compressor:
            data = self.compressor.decompress(data)
        return data


class ObjectiveSnapshot(DomainEvent):
    """The whole state at a version, so loading a busy objective skips its older events."""

    state: Objective

    @classmethod
    def take(cls, objective: Objective) -> ObjectiveSnapshot:
        return cls(
            originator_id=objective.id,
            originator_version=objective.version,
            timestamp=objective.modified_on,
            actor="snapshot",
            command_id="snapshot",
            state=objective,
        )


LEGACY_SNAPSHOT_TOPIC = "services.persistence:ObjectiveSnapshot"
"""Where snapshots stored before the command side had a package of its own say their class is:
they still load (stored topics are never rewritten)."""
register_topic(LEGACY_SNAPSHOT_TOPIC, ObjectiveSnapshot)


@evolve.register
def _from_snapshot(event: ObjectiveSnapshot, _: Objective | None) -> Objective:
    return event.state


def project_objective(
    objective: Objective | None, events: Iterable[DomainEventProtocol[UUID]]
) -> Objective | None:
    """eventsourcing's projector hook: fold stored events (and a snapshot) into state."""
    for event in events:
        objective = evolve(cast(DomainEvent, event), objective)
    return objective


# --- receipts in the recorders' transaction -------------------------------------------------------


class Receipt(Immutable):
    """A command applied: its id, a digest of its request, and the response it got."""

    command_id: str
    request_digest: str
    response: dict[str, Any]


# --- the SQLite event store's WAL ----------------------------------------------------------------


class CommitSignallingConnection(SQLiteConnection):
    """eventsourcing's connection, calling `committed` after each commit."""

    def __init__(
        self, sqlite_conn: sqlite3.Connection, max_age: float | None, committed: Callable[[], None]
    ) -> None:
        super().__init__(sqlite_conn, max_age)
        self._committed = committed

    def commit(self) -> None:
        super().commit()
        self._committed()


class NoAutoCheckpointPool(SQLiteConnectionPool):
    """Connections that leave the WAL to the store's `WalCheckpointer`: by default SQLite copies
    the WAL into the database inside the commit that finds it over 1,000 pages, and that commit
    (a scorer batch, a command) pays the copy and its fsync (docs/decisions/0015). Each commit
    tells the checkpointer (`committed`), which sleeps while nothing is written."""

    def __init__(self, *, committed: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.committed = committed

    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()
        connection.cursor().execute("PRAGMA wal_autocheckpoint=0")
        return CommitSignallingConnection(
            connection._sqlite_conn,  # the library's own connection, re-wrapped
            self.max_age,
            self.committed,
        )


class CheckpointedSQLiteFactory(SQLiteFactory):
    """eventsourcing's SQLite persistence, its WAL checkpointed by a thread of its own for as long
    as the application is open. Commits keep SQLite's default durability (fsynced). A database
    file it creates is mode 600, in a directory made 700 (`private_file`)."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        pool = self.datastore.pool
        self.checkpointer: WalCheckpointer | None = None
        if not pool.is_sqlite_memory_mode:
            private_file(Path(pool.db_name))
            self.checkpointer = WalCheckpointer(Path(pool.db_name))
            self.datastore.pool = NoAutoCheckpointPool(
                db_name=pool.db_name,
                lock_timeout=pool.lock_timeout,
                committed=self.checkpointer.written,
            )

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        super().close()


def store_doorbell(settings: Settings, recorder: object) -> Doorbell | None:
    """How this store's writers wake other processes' followers (`services.relay.wakeup`): LISTEN on
    PostgreSQL's channel for the events table, a directory of sockets next to an SQLite file."""
    if isinstance(recorder, PostgresApplicationRecorder):
        return PostgresDoorbell(
            postgres_location(settings.event_store_url).conninfo,
            recorder.channel_name,
            own_backends=getattr(recorder, "own_backends", frozenset()),
        )
    if isinstance(recorder, SQLiteApplicationRecorder):
        pool = recorder.datastore.pool
        if not pool.is_sqlite_memory_mode:
            return SocketDoorbell(Path(f"{pool.db_name}-doorbell"))
    return None


OWN_BACKENDS_KEPT = 256
"""A pool opens at most 15 connections at once; older server process ids are forgotten."""

CREATE_ATTEMPTS = 10
"""Tries of the SQLite tables' transaction while another process holds the write lock."""
CREATE_TABLES_LOCK = 0x6F6B725F7461626C
"""PostgreSQL advisory lock key held while a process creates or migrates the tables ("okr_tabl")."""


MIGRATIONS_TABLE = "event_store_migrations"


class CursorExecutor:
    """A recorder's cursor as a `projections.migrations.Executor` (`?` placeholders)."""

    def __init__(self, cursor: Any, *, postgres: bool) -> None:
        self.cursor = cursor
        self.postgres = postgres

    def _sql(self, sql: str) -> str:
        return placeholders(sql) if self.postgres else sql

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        self.cursor.execute(self._sql(sql), params)
        return list(self.cursor.fetchall())

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.cursor.execute(self._sql(sql), params)


def event_store_history(
    table: str,
    baseline: Sequence[str],
    migrate_kpi_series: Callable[[Any], None],
    log_writer: LogWriter,
    compress_kpi_series: Callable[[Any], None] | None = None,
    collate_kpi_event_ids: Callable[[Any], None] | None = None,
) -> SchemaHistory:
    """The event store's migrations, beside eventsourcing's own `stored_events` table (which the
    library creates and never changes)."""

    def kpi_series(db: Any) -> None:
        migrate_kpi_series(db.cursor)

    def merkle_log(db: Any) -> None:
        for statement in log_writer.dialect.create_statements():
            db.cursor.execute(statement)
        log_writer.backfill(db.cursor)

    def compress(db: Any) -> None:
        if compress_kpi_series is not None:
            compress_kpi_series(db.cursor)

    def collate(db: Any) -> None:
        if collate_kpi_event_ids is not None:
            collate_kpi_event_ids(db.cursor)

    return SchemaHistory(
        table,
        [
            Migration(1, "receipts and KPI series tables", statements(*baseline)),
            Migration(2, "KPI observations into series chunks", kpi_series),
            Migration(3, "Merkle transparency log over every stored event", merkle_log),
            Migration(4, "KPI series chunks compressed with LZ4 (PostgreSQL)", compress),
            Migration(5, "KPI event ids compared byte by byte (PostgreSQL)", collate),
        ],
    )


def event_store_migrations() -> SchemaHistory:
    """The event store's migrations as names and versions, whatever the backend: what
    `okr migrate --status` compares a store's table with."""
    return event_store_history(
        MIGRATIONS_TABLE,
        sqlite_receipts_baseline(),
        KpiWriter(SQLITE).migrate_legacy_sqlite,
        LogWriter(log_store.sqlite_dialect("stored_events")),
    )


def sqlite_receipts_baseline() -> list[str]:
    return [
        f"CREATE TABLE IF NOT EXISTS {RECEIPTS_TABLE} ("
        "command_id TEXT PRIMARY KEY, request_digest TEXT NOT NULL, response BLOB NOT NULL)",
        *SQLITE.create_statements(),
    ]


class SQLiteReceiptRecorder(SQLiteApplicationRecorder):
    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name)
        self.kpi_writer = KpiWriter(SQLITE)
        self.kpi = KpiReader(SQLITE, self._query)
        self.log_writer = LogWriter(log_store.sqlite_dialect(events_table_name))
        self.log = LogReader(self.log_writer.dialect, self._query, self._write)
        self.schema = event_store_history(
            MIGRATIONS_TABLE,
            sqlite_receipts_baseline(),
            self.kpi_writer.migrate_legacy_sqlite,
            self.log_writer,
        )

    def write_series_ahead(self, series: Sequence[SeriesChunk], event_ids: str) -> None:
        """Nothing: SQLite has one writer at a time, and a transaction open while the batch is
        planned would hold every other writer off; the save writes the series itself."""
        return None

    def create_table(self) -> None:
        """Tried again when another process held the write lock: the tables' transaction reads
        before it writes (the legacy series migration), so it cannot wait for the lock, and
        after the other one's commit there is nothing left to migrate."""
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                super().create_table()
                return
            except (OperationalError, sqlite3.OperationalError) as error:
                if "locked" not in str(error) or attempt == CREATE_ATTEMPTS:
                    raise
                time.sleep(0.05 * attempt)

    def _create_table(self, c: SQLiteCursor) -> None:
        super()._create_table(c)
        self.schema.upgrade(CursorExecutor(c, postgres=False))

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        kpi_batch: KpiBatch | None = kwargs.get("kpi_batch")
        if kpi_batch is not None:
            self.kpi_writer.write_sqlite(c, kpi_batch)
        receipt: Receipt | None = kwargs.get("receipt")
        if receipt is not None:
            c.execute(
                f"INSERT INTO {RECEIPTS_TABLE} VALUES (?, ?, ?)",
                (receipt.command_id, receipt.request_digest, orjson.dumps(receipt.response)),
            )
        notification_ids = super()._insert_events(c, stored_events, **kwargs)
        self.log_writer.append_events(c, stored_events, notification_ids or ())
        return notification_ids

    def _query(self, statement: str, params: Sequence[Any]) -> list[Any]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(statement, params)
            rows: list[Any] = c.fetchall()
            return rows

    def _write(self, statement: str, params: Sequence[Any]) -> list[Any]:
        with self.datastore.transaction(commit=True) as c:
            c.execute(statement, params)
            rows: list[Any] = c.fetchall()
            return rows

    def current_versions(self, originator_ids: Sequence[UUID]) -> dict[UUID, int]:
        """The stored version of many aggregates in one query (absent: none stored)."""
        rows = self._query(
            f"SELECT originator_id, MAX(originator_version) AS version "
            f"FROM {self.events_table_name} "
            "WHERE originator_id IN (SELECT value FROM json_each(?)) GROUP BY originator_id",
            [orjson.dumps([i.hex for i in originator_ids]).decode()],
        )
        return {UUID(row["originator_id"]): row["version"] for row in rows}

    def select_receipt(self, command_id: str) -> Receipt | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT request_digest, response FROM {RECEIPTS_TABLE} WHERE command_id = ?",
                (command_id,),
            )
            row = c.fetchone()
        if row is None:
            return None
        return Receipt(
            command_id=command_id,
            request_digest=row["request_digest"],
            response=orjson.loads(row["response"]),
        )

    def has_bare_receipts(self) -> bool:
        """Whether a receipt is kept under a bare command id (written before receipts were per
        actor, whose keys are JSON pairs)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT 1 FROM {RECEIPTS_TABLE} WHERE command_id NOT LIKE '[%' LIMIT 1")
            return c.fetchone() is not None


def binary_events_parameter(statement: Composable) -> Composed:
    """The library's insert with its array of stored events passed in PostgreSQL's binary
    format: as text, psycopg writes each event's composite, and each state's bytes as escaped
    hex, in Python; a scorer batch's thousand progress events spent ~10 % of its save there."""
    placeholder = "unnest(%s::"
    text = statement.as_string()
    if text.count(placeholder) != 1:  # another layout of the library's statement: keep it
        return Composed([statement])
    return Composed([SQL(text.replace(placeholder, "unnest(%b::"))])


class PostgresReceiptRecorder(PostgresApplicationRecorder):
    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        schema = self.datastore.schema
        receipts = SQL(
            "CREATE TABLE IF NOT EXISTS {schema}.{table} (command_id text PRIMARY KEY, "
            "request_digest text NOT NULL, response jsonb NOT NULL)"
        ).format(schema=Identifier(schema), table=Identifier(RECEIPTS_TABLE))
        kpi_dialect = postgres_dialect(schema)
        self.kpi_writer = KpiWriter(kpi_dialect)
        self.kpi = KpiReader(kpi_dialect, self._query)
        self.log_writer = LogWriter(log_store.postgres_dialect(schema, events_table_name))
        self.log = LogReader(self.log_writer.dialect, self._query, self._write)
        self.schema = event_store_history(
            f'"{schema}".{MIGRATIONS_TABLE}',
            [receipts.as_string(), *kpi_dialect.create_statements()],
            self.kpi_writer.migrate_legacy_postgres,
            self.log_writer,
            self.kpi_writer.compress_series_with_lz4,
            self.kpi_writer.collate_event_ids_bytewise,
        )
        self.insert_events_statement = binary_events_parameter(self.insert_events_statement)
        self.own_backends: set[int] = set()
        """Server process ids of the connections this recorder inserted with: their `NOTIFY`
        is this process's own (`services.relay.wakeup.PostgresDoorbell`)."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The library's insert, or, for a KPI batch with a series, the rest of the insert in
        the transaction that copied the series ahead (`series_ahead`), or `_insert_with_series`
        if it came without one or lost its connection."""
        kpi_batch: KpiBatch | None = kwargs.get("kpi_batch")
        if kpi_batch is None or not kpi_batch.series:
            return cast("Sequence[int] | None", super().insert_events(stored_events, **kwargs))
        ahead: SeriesAhead | None = kwargs.get("series_ahead")
        if ahead is not None:
            try:
                return cast(
                    "Sequence[int] | None",
                    ahead.finish(partial(self._insert_rest, stored_events, kwargs)),
                )
            except (InterfaceError, OperationalError) as error:
                log.info("the copy ahead's transaction failed (%s): copying again", error)
        inserted = self._insert_with_series(stored_events, **kwargs)
        return cast("Sequence[int] | None", inserted)  # `retry` hides the type

    def write_series_ahead(self, series: Sequence[SeriesChunk], event_ids: str) -> SeriesAhead:
        """Start copying a prepared batch's series while the batch is planned; its save
        finishes the transaction (`services.scoring.series_ahead`)."""
        return SeriesAhead(
            self.datastore.get_connection,
            partial(self.kpi_writer.copy_series, chunks=series, event_ids=event_ids),
            series,
            event_ids,
        )

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _insert_with_series(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The library's insert with the batch's series copied first, in the same transaction:
        COPY cannot run in its pipeline (`KpiWriter.copy_series`). Retried as the
        library retries its own."""
        batch: KpiBatch = kwargs["kpi_batch"]
        with self.datastore.get_connection() as conn, conn.transaction():
            with conn.cursor() as curs:
                self.kpi_writer.copy_series(curs, batch.series, batch.sorted_event_ids())
            return self._insert_rest(stored_events, kwargs, conn)

    def _insert_rest(
        self,
        stored_events: Sequence[StoredEvent],
        kwargs: dict[str, Any],
        conn: Connection[DictRow],
    ) -> Sequence[int] | None:
        """All but the series, raising a failure in the connection's block, which translates
        psycopg's errors."""
        failure, notification_ids = self._insert_pipelined(conn, stored_events, kwargs)
        if failure is not None:
            raise failure
        return notification_ids

    def _insert_pipelined(
        self,
        conn: Connection[DictRow],
        stored_events: Sequence[StoredEvent],
        kwargs: dict[str, Any],
    ) -> tuple[Exception | None, Sequence[int] | None]:
        """The library's pipelined part: the other statements, then the events' insert on a
        cursor of its own, synced at once (a version conflict is an IntegrityError here). A
        failure is handed back, to be raised once out of the pipeline, as the library does."""
        with conn.pipeline() as pipeline:
            with conn.cursor() as curs:
                self._insert_events(curs, stored_events, **kwargs)
            if not stored_events:
                return None, None
            with conn.cursor() as curs:
                try:
                    self._insert_stored_events(curs, stored_events, **kwargs)
                    pipeline.sync()
                    return None, self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
                except Exception as error:
                    return error, None

    def _create_table(self, curs: Cursor[DictRow]) -> None:
        """One process at a time (an advisory lock until commit): processes starting together
        would otherwise collide on the library's `CREATE OR REPLACE` of its functions ("tuple
        concurrently updated") and on the legacy series migration."""
        curs.execute("SELECT pg_advisory_xact_lock(%s)", [CREATE_TABLES_LOCK])
        super()._create_table(curs)
        self.schema.upgrade(CursorExecutor(curs, postgres=True))

    def _fetch_ids_after_insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The library reads the new notification ids here, still holding the events table's
        EXCLUSIVE lock: the events join the log in the same transaction and order."""
        notification_ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        self.log_writer.append_events(curs, stored_events, notification_ids or ())
        return notification_ids

    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        if stored_events:
            if len(self.own_backends) >= OWN_BACKENDS_KEPT:  # a pool's connections come and go
                self.own_backends.clear()
            self.own_backends.add(curs.connection.info.backend_pid)
        kpi_batch: KpiBatch | None = kwargs.get("kpi_batch")
        if kpi_batch is not None:
            self.kpi_writer.write_postgres(curs, kpi_batch)
        receipt: Receipt | None = kwargs.get("receipt")
        if receipt is not None:
            curs.execute(
                SQL("INSERT INTO {schema}.{table} VALUES (%s, %s, %s)").format(
                    schema=Identifier(self.datastore.schema), table=Identifier(RECEIPTS_TABLE)
                ),
                (
                    receipt.command_id,
                    receipt.request_digest,
                    orjson.dumps(receipt.response).decode(),
                ),
                prepare=True,
            )
        super()._insert_events(curs, stored_events, **kwargs)

    def _query(self, statement: str, params: Sequence[Any]) -> list[Any]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement.encode(), params)
            return curs.fetchall()

    def _write(self, statement: str, params: Sequence[Any]) -> list[Any]:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(statement.encode(), params)
            return curs.fetchall()

    def current_versions(self, originator_ids: Sequence[UUID]) -> dict[UUID, int]:
        """The stored version of many aggregates in one query (absent: none stored)."""
        statement = SQL(
            "SELECT originator_id, MAX(originator_version) AS version FROM {schema}.{table} "
            "WHERE originator_id = ANY(%s) GROUP BY originator_id"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, [list(originator_ids)])
            return {row["originator_id"]: row["version"] for row in curs.fetchall()}

    def select_receipt(self, command_id: str) -> Receipt | None:
        statement = SQL(
            "SELECT request_digest, response FROM {schema}.{table} WHERE command_id = %s"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(RECEIPTS_TABLE))
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (command_id,), prepare=True)
            row = curs.fetchone()
        if row is None:
            return None
        return Receipt(
            command_id=command_id,
            request_digest=row["request_digest"],
            response=row["response"],
        )

    def has_bare_receipts(self) -> bool:
        """Whether a receipt is kept under a bare command id (written before receipts were per
        actor, whose keys are JSON pairs)."""
        statement = SQL(
            "SELECT 1 FROM {schema}.{table} WHERE command_id NOT LIKE '[%%' LIMIT 1"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(RECEIPTS_TABLE))
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement)
            return curs.fetchone() is not None
