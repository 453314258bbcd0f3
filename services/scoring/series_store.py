"""The scorer's tables, in the event store's own database, written in the events' transaction.

The scorer's effects are `KpiProgressRecorded` events on many objectives; its state is the KPI
series, per-KPI counters, per-binding aggregates and its Kafka positions. All of it commits in ONE
transaction with the events (`OkrApplication.save_events(events, kpi_batch=KpiBatch(...))`, through
the recorders' `_insert_events` hook in `services.commands.event_store`), so a crash leaves either
everything
of a batch or nothing, and a restarted scorer resumes exactly where the stored positions say.

Tables (same columns on SQLite and PostgreSQL; only placeholders and bulk forms differ):

- `kpi_event_ids`: the id of every accepted observation, primary key: the dedupe key, so a
  resent event can never be stored twice.
- `kpi_series`: the series itself, one row per KPI per batch (a "chunk": the batch's
  observations of that KPI as a JSON array, with the first and last time among them). A row per
  observation with a `(kpi_key, time)` index cost ~11 µs an observation on SQLite, the inserts
  scattered over the index; a chunk costs its share of one row (ADR 13). Reads filter and sort
  the chunks that overlap the wanted time range.
- `kpi_stats`: per KPI, how many observations were accepted, duplicates, stale (older than the
  KPI's latest when they arrived), outside every bound period, unbound; the KPI's latest
  observation; and `version`, the KPI's fence (below).
- `kpi_bindings`: per bound key result, the KPI, aggregation, objective period and status (kept
  by the bindings follower from the event store's notification log) and the exact aggregate of
  the KPI's observations in the period (kept by the scorer), with the value it gives.
- `kpi_positions`: per Kafka partition of `kpi.events`, the next offset to score.

Optimistic concurrency, as for objectives: every batch that touches a KPI (its series, counters
or bindings) writes that KPI's stats row at `version + 1` where `version` is what it read, and
every position moves from the offset it read. A writer that lost a race (a second scorer after a
rebalance, the bindings follower back-filling the same KPI) gets a `KpiStateConflictError` (an
`IntegrityError`, like a second copy of an observation or of a first row), its whole transaction
rolls back, and it recomputes from fresh state.

Read models of these tables (the KPI read API) should use `KpiReader`: `stats`/`all_stats` for
the counters, `series` for a KPI's observations, `bindings_of_objective`/`all_bindings` for what
each key result follows and the value its aggregate gives.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, NamedTuple
from uuid import UUID

import orjson
from eventsourcing.persistence import IntegrityError, Tracking

from domain.kpi_series import ORDER_KEY, ExactSum, Observation, SeriesAggregate, period_bounds_us
from domain.objective_events import Aggregation

if TYPE_CHECKING:
    from eventsourcing.postgres import PostgresTrackingRecorder
    from eventsourcing.sqlite import SQLiteCursor, SQLiteTrackingRecorder
    from psycopg import Cursor
    from psycopg.rows import DictRow

EVENT_IDS = "kpi_event_ids"
SERIES = "kpi_series"
LEGACY_OBSERVATIONS = "kpi_observations"
"""One row per observation, before the series was kept in chunks; moved into them at start-up."""
MIGRATION_SLICE = 50_000
"""Legacy rows moved per statement (one JSON text or array set each, far below SQLite's and
PostgreSQL's 1 GB a value)."""

STATS = "kpi_stats"
BINDINGS = "kpi_bindings"
POSITIONS = "kpi_positions"

SCORED_STATUSES = ("draft", "active")
"""Bindings whose aggregate the scorer keeps up to date; closed and archived objectives are final.
Drafts are kept too, so activation finds their aggregate ready."""


class KpiStateConflictError(IntegrityError):
    """Someone else wrote a KPI's state or a partition's position since we read it."""


# --- what is stored -------------------------------------------------------------------------------


class ObservationRow(NamedTuple):
    """An accepted KPI event, as stored in the series (field order = column order), with where
    it was read from. A plain tuple: the scorer builds thousands a batch."""

    event_id: str
    kpi_key: str
    value: float
    observed_at: str
    observed_at_us: int
    source: str
    unit: str | None
    dimensions: str
    """JSON object text."""
    topic: str
    partition: int
    offset: int
    received_at: str


class SeriesChunk(NamedTuple):
    """A batch's observations of one KPI (from one topic), as one row of `kpi_series` (the
    first seven fields are its columns, in order) and the event ids it adds to `kpi_event_ids`.
    Made by `chunk_of`."""

    kpi_key: str
    kafka_topic: str
    received_at: str
    first_at_us: int
    last_at_us: int
    observations: int
    rows: str
    """A JSON array with one array per observation, in batch order: `CHUNK_ROW`'s fields."""

    @property
    def event_id_list(self) -> list[str]:
        """The observations' event ids, read from `rows` (the batch carries them sorted, as
        `KpiBatch.event_ids`, from where it was prepared)."""
        return [row[0] for row in orjson.loads(self.rows)]


CHUNK_ROW = (
    "event_id",
    "value",
    "observed_at",
    "observed_at_us",
    "source",
    "unit",
    "dimensions",
    "kafka_partition",
    "kafka_offset",
)
"""The fields of an observation inside a chunk's JSON array (what the chunk does not hold)."""


def chunk_of(
    kpi_key: str, topic: str, received_at: str, rows: list[tuple[Any, ...]]
) -> SeriesChunk:
    """The chunk of `rows` (`CHUNK_ROW`'s fields each, in batch order). The JSON is made here,
    where the batch is prepared, not by SQLite: parsing and re-rendering one big array there
    cost five times as much (ADR 13). JSON numbers come back as the same doubles, and text as
    sent (`tests/integration/test_kpi_store.py`)."""
    times = [row[3] for row in rows]
    return SeriesChunk(
        kpi_key,
        topic,
        received_at,
        min(times),
        max(times),
        len(rows),
        orjson.dumps(rows).decode(),
    )


def event_ids_in_key_order(event_ids: Iterable[str]) -> str:
    """The ids as one JSON array, sorted. Inserted in the key's order, the dedupe index
    (`kpi_event_ids`) fills its pages one after another instead of all over the batch's range:
    50,000 ids in 66 rather than 104 ms on PostgreSQL (ADR 27). Made where the batch is
    prepared (the scorer's worker process), not in the thread that saves it."""
    ids = list(event_ids)
    ids.sort()
    return orjson.dumps(ids).decode()


COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(values: Sequence[str], *, escaped: bool) -> bytes:
    """One-column rows in COPY's text format. `escaped`: some value may hold a backslash, tab,
    carriage return or newline (a JSON text without a backslash has none)."""
    if escaped:
        values = [value.translate(COPY_ESCAPES) for value in values]
    return ("\n".join(values) + "\n").encode()


def series_chunks(observations: Iterable[ObservationRow]) -> list[SeriesChunk]:
    """The observations grouped into chunks: by KPI, topic and receipt (one batch has one)."""
    grouped: dict[tuple[str, str, str], list[tuple[Any, ...]]] = {}
    for row in observations:
        key = (row[1], row[8], row[11])
        rows = grouped.get(key)
        if rows is None:
            rows = grouped[key] = []
        rows.append((row[0], row[2], row[3], row[4], row[5], row[6], row[7], row[9], row[10]))
    return [
        chunk_of(kpi_key, topic, received_at, rows)
        for (kpi_key, topic, received_at), rows in grouped.items()
    ]


@dataclass(slots=True)
class KpiStats:
    """Counters of one KPI; `version` is the version read (0: no row yet), the write is + 1."""

    kpi_key: str
    version: int = 0
    accepted: int = 0
    duplicates: int = 0
    stale: int = 0
    outside_period: int = 0
    unbound: int = 0
    latest: Observation | None = None
    last_received_at: str | None = None


@dataclass(frozen=True, slots=True)
class Binding:
    """A key result bound to a KPI, and the aggregate of the KPI over the objective's period."""

    objective_id: UUID
    key_result_id: UUID
    kpi_key: str
    aggregation: Aggregation
    period_start: date
    period_end: date
    objective_status: str
    aggregate: SeriesAggregate = field(default_factory=SeriesAggregate)

    @property
    def bounds_us(self) -> tuple[int, int]:
        return period_bounds_us(self.period_start, self.period_end)

    @property
    def value(self) -> float | None:
        return self.aggregate.value(self.aggregation)

    @property
    def key(self) -> tuple[UUID, UUID]:
        return (self.objective_id, self.key_result_id)


@dataclass(frozen=True, slots=True)
class PositionMove:
    """A partition's next offset moves from `expected` (None: never stored) to `next_offset`."""

    topic: str
    partition: int
    expected: int | None
    next_offset: int


@dataclass(frozen=True, slots=True)
class TrackingWrite:
    """A notification-log position to record in the same transaction (the bindings follower)."""

    recorder: SQLiteTrackingRecorder | PostgresTrackingRecorder
    tracking: Tracking


@dataclass(frozen=True)
class KpiBatch:
    """Everything of the scorer's state that commits with a batch's events.

    Every KPI whose observations or bindings change must have its `stats` in the batch: the
    stats row is the KPI's fence (module docstring).
    """

    series: Sequence[SeriesChunk] = ()
    """The batch's new observations (`series_chunks` makes them of `ObservationRow`s)."""
    event_ids: str | None = None
    """The series' event ids as `event_ids_in_key_order` made them where the batch was
    prepared; None: made from `series` when the batch is written."""
    stats: Sequence[KpiStats] = ()
    bindings: Sequence[Binding] = ()
    removed_bindings: Sequence[tuple[UUID, UUID]] = ()
    positions: Sequence[PositionMove] = ()
    tracking: TrackingWrite | None = None

    def sorted_event_ids(self) -> str:
        """`event_ids`, made now if the batch came without them."""
        if self.event_ids is not None:
            return self.event_ids
        return event_ids_in_key_order(i for chunk in self.series for i in chunk.event_id_list)


# --- schema ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KpiDialect:
    """The little that differs between SQLite and PostgreSQL for these tables."""

    name: str
    prefix: str
    """Schema qualification of table names ("" on SQLite, '"public".' on PostgreSQL)."""
    float_type: str
    int_type: str

    def table(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def sql(self, statement: str) -> str:
        """Statements are written with `?` placeholders and table names in braces."""
        statement = statement.format(
            event_ids=self.table(EVENT_IDS),
            series=self.table(SERIES),
            legacy_observations=self.table(LEGACY_OBSERVATIONS),
            stats=self.table(STATS),
            bindings=self.table(BINDINGS),
            positions=self.table(POSITIONS),
        )
        return statement.replace("?", "%s") if self.name == "postgres" else statement

    def any_of(self, column: str) -> str:
        """A condition `column` is one of a list passed as ONE parameter (see `list_param`)."""
        if self.name == "postgres":
            return f"{column} = ANY(?)"
        return f"{column} IN (SELECT value FROM json_each(?))"

    def list_param(self, values: Iterable[str]) -> Any:
        if self.name == "postgres":
            return list(values)
        return orjson.dumps(list(values)).decode()

    def create_statements(self) -> list[str]:
        f, i = self.float_type, self.int_type
        return [
            self.sql(
                "CREATE TABLE IF NOT EXISTS {event_ids} (event_id TEXT PRIMARY KEY)"
                + (" WITHOUT ROWID" if self.name == "sqlite" else "")
            ),
            self.sql(
                "CREATE TABLE IF NOT EXISTS {series} ("
                + (
                    "chunk_id INTEGER PRIMARY KEY, "
                    if self.name == "sqlite"
                    else "chunk_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                )
                + "kpi_key TEXT NOT NULL, kafka_topic TEXT NOT NULL, received_at TEXT NOT NULL, "
                f"first_at_us {i} NOT NULL, last_at_us {i} NOT NULL, observations {i} NOT NULL, "
                "rows TEXT NOT NULL)"
            ),
            self.sql(
                f"CREATE INDEX IF NOT EXISTS {SERIES}_by_time "
                "ON {series} (kpi_key, first_at_us, last_at_us)"
            ),
            self.sql(
                "CREATE TABLE IF NOT EXISTS {stats} ("
                f"kpi_key TEXT PRIMARY KEY, version {i} NOT NULL, accepted {i} NOT NULL, "
                f"duplicates {i} NOT NULL, stale {i} NOT NULL, outside_period {i} NOT NULL, "
                f"unbound {i} NOT NULL, latest_event_id TEXT, latest_value {f}, "
                f"latest_at_us {i}, last_received_at TEXT)"
            ),
            self.sql(
                "CREATE TABLE IF NOT EXISTS {bindings} ("
                "objective_id TEXT NOT NULL, key_result_id TEXT NOT NULL, "
                "kpi_key TEXT NOT NULL, aggregation TEXT NOT NULL, "
                "period_start TEXT NOT NULL, period_end TEXT NOT NULL, "
                f"starts_at_us {i} NOT NULL, ends_at_us {i} NOT NULL, "
                "objective_status TEXT NOT NULL, "
                f"observations {i} NOT NULL, exact_sum TEXT NOT NULL, "
                f"min_value {f}, max_value {f}, latest_event_id TEXT, latest_value {f}, "
                f"latest_at_us {i}, value {f}, "
                "PRIMARY KEY (objective_id, key_result_id))"
            ),
            self.sql(f"CREATE INDEX IF NOT EXISTS {BINDINGS}_by_kpi ON {{bindings}} (kpi_key)"),
            self.sql(
                "CREATE TABLE IF NOT EXISTS {positions} ("
                f"kafka_topic TEXT NOT NULL, kafka_partition {i} NOT NULL, "
                f"next_offset {i} NOT NULL, updated_at TEXT NOT NULL, "
                "PRIMARY KEY (kafka_topic, kafka_partition))"
            ),
        ]


SQLITE = KpiDialect(name="sqlite", prefix="", float_type="REAL", int_type="INTEGER")


def postgres_dialect(schema: str) -> KpiDialect:
    return KpiDialect(
        name="postgres",
        prefix=f'"{schema}".',
        float_type="double precision",
        int_type="bigint",
    )


# --- rows <-> values ------------------------------------------------------------------------------


def _latest(event_id: str | None, value: float | None, at_us: int | None) -> Observation | None:
    if event_id is None or value is None or at_us is None:
        return None
    return Observation(event_id, value, at_us)


def stats_from_row(row: Mapping[str, Any]) -> KpiStats:
    return KpiStats(
        kpi_key=row["kpi_key"],
        version=row["version"],
        accepted=row["accepted"],
        duplicates=row["duplicates"],
        stale=row["stale"],
        outside_period=row["outside_period"],
        unbound=row["unbound"],
        latest=_latest(row["latest_event_id"], row["latest_value"], row["latest_at_us"]),
        last_received_at=row["last_received_at"],
    )


def binding_from_row(row: Mapping[str, Any]) -> Binding:
    return Binding(
        objective_id=UUID(row["objective_id"]),
        key_result_id=UUID(row["key_result_id"]),
        kpi_key=row["kpi_key"],
        aggregation=Aggregation(row["aggregation"]),
        period_start=date.fromisoformat(row["period_start"]),
        period_end=date.fromisoformat(row["period_end"]),
        objective_status=row["objective_status"],
        aggregate=SeriesAggregate(
            count=row["observations"],
            total=ExactSum.decode(row["exact_sum"]),
            minimum=row["min_value"],
            maximum=row["max_value"],
            latest=_latest(row["latest_event_id"], row["latest_value"], row["latest_at_us"]),
        ),
    )


def _stats_params(stats: KpiStats) -> tuple[Any, ...]:
    latest = stats.latest
    return (
        stats.accepted,
        stats.duplicates,
        stats.stale,
        stats.outside_period,
        stats.unbound,
        latest.event_id if latest else None,
        latest.value if latest else None,
        latest.observed_at_us if latest else None,
        stats.last_received_at,
    )


def _binding_params(binding: Binding) -> tuple[Any, ...]:
    aggregate = binding.aggregate
    latest = aggregate.latest
    start, end = binding.bounds_us
    return (
        str(binding.objective_id),
        str(binding.key_result_id),
        binding.kpi_key,
        binding.aggregation.value,
        binding.period_start.isoformat(),
        binding.period_end.isoformat(),
        start,
        end,
        binding.objective_status,
        aggregate.count,
        aggregate.total.encode(),
        aggregate.minimum,
        aggregate.maximum,
        latest.event_id if latest else None,
        latest.value if latest else None,
        latest.observed_at_us if latest else None,
        binding.value,
    )


STATS_COLUMNS = (
    "accepted, duplicates, stale, outside_period, unbound, "
    "latest_event_id, latest_value, latest_at_us, last_received_at"
)
BINDING_COLUMNS = (
    "objective_id, key_result_id, kpi_key, aggregation, period_start, period_end, starts_at_us, "
    "ends_at_us, objective_status, observations, exact_sum, min_value, max_value, "
    "latest_event_id, latest_value, latest_at_us, value"
)
CHUNK_COLUMNS = "kpi_key, kafka_topic, received_at, first_at_us, last_at_us, observations, rows"
CHUNK_TYPES_POSTGRES = ["text", "text", "text", "int8", "int8", "int8", "text"]
OBSERVATION_COLUMNS = (
    "event_id, kpi_key, value, observed_at, observed_at_us, source, unit, dimensions, "
    "kafka_topic, kafka_partition, kafka_offset, received_at"
)


def _placeholders(columns: str) -> str:
    return ", ".join("?" for _ in columns.split(","))


def _set_all(columns: str, skip: int = 0) -> str:
    names = [name.strip() for name in columns.split(",")][skip:]
    return ", ".join(f"{name} = excluded.{name}" for name in names)


# --- writes, inside the recorder's transaction ----------------------------------------------------


def _utc_now() -> str:
    return datetime.now(UTC).isoformat()


class KpiWriter:
    """Writes a `KpiBatch` through a cursor of the events' transaction; raises on a lost race."""

    def __init__(self, dialect: KpiDialect) -> None:
        d = dialect
        self.dialect = d
        self.insert_event_ids_sqlite = d.sql(
            "INSERT INTO {event_ids} (event_id) SELECT value FROM json_each(?)"
        )
        self.insert_chunks_sqlite = d.sql(
            f"INSERT INTO {{series}} ({CHUNK_COLUMNS}) VALUES ({_placeholders(CHUNK_COLUMNS)})"
        )
        self.copy_event_ids_postgres = d.sql("COPY {event_ids} (event_id) FROM STDIN")
        self.copy_chunks_postgres = d.sql(
            f"COPY {{series}} ({CHUNK_COLUMNS}) FROM STDIN (FORMAT BINARY)"
        )
        self.insert_stats = d.sql(
            f"INSERT INTO {{stats}} (kpi_key, version, {STATS_COLUMNS}) "
            f"VALUES (?, 1, {_placeholders(STATS_COLUMNS)})"
        )
        self.update_stats = d.sql(
            "UPDATE {stats} SET version = version + 1, "
            + ", ".join(f"{name.strip()} = ?" for name in STATS_COLUMNS.split(","))
            + " WHERE kpi_key = ? AND version = ?"
        )
        self.upsert_binding = d.sql(
            f"INSERT INTO {{bindings}} ({BINDING_COLUMNS}) "
            f"VALUES ({_placeholders(BINDING_COLUMNS)}) "
            f"ON CONFLICT (objective_id, key_result_id) DO UPDATE SET "
            f"{_set_all(BINDING_COLUMNS, skip=2)}"
        )
        self.delete_binding = d.sql(
            "DELETE FROM {bindings} WHERE objective_id = ? AND key_result_id = ?"
        )
        self.insert_position = d.sql(
            "INSERT INTO {positions} (kafka_topic, kafka_partition, next_offset, updated_at) "
            "VALUES (?, ?, ?, ?)"
        )
        self.update_position = d.sql(
            "UPDATE {positions} SET next_offset = ?, updated_at = ? "
            "WHERE kafka_topic = ? AND kafka_partition = ? AND next_offset = ?"
        )

    def write_sqlite(self, c: SQLiteCursor, batch: KpiBatch) -> None:
        """Fences first: SQLite takes the write lock at the first write, and a transaction that
        read before writing could not wait for it (a busy snapshot fails at once)."""
        raw = c.sqlite_cursor
        now = _utc_now()
        updates = [s for s in batch.stats if s.version]
        if updates:
            raw.executemany(
                self.update_stats,
                [(*_stats_params(s), s.kpi_key, s.version) for s in updates],
            )
            if raw.rowcount != len(updates):
                raise KpiStateConflictError("a KPI's state changed since it was read")
        inserts = [s for s in batch.stats if not s.version]
        if inserts:
            raw.executemany(self.insert_stats, [(s.kpi_key, *_stats_params(s)) for s in inserts])
        self._positions_sqlite(c, batch.positions, now)
        if batch.series:
            self._series_sqlite(raw, batch.series, batch.sorted_event_ids())
        if batch.removed_bindings:
            raw.executemany(
                self.delete_binding, [(str(o), str(k)) for o, k in batch.removed_bindings]
            )
        if batch.bindings:
            raw.executemany(self.upsert_binding, [_binding_params(b) for b in batch.bindings])
        if batch.tracking is not None:
            from eventsourcing.sqlite import SQLiteTrackingRecorder

            recorder = batch.tracking.recorder
            assert isinstance(recorder, SQLiteTrackingRecorder)
            recorder._insert_tracking(c, batch.tracking.tracking)

    def _positions_sqlite(self, c: SQLiteCursor, moves: Sequence[PositionMove], now: str) -> None:
        raw = c.sqlite_cursor
        updates = [m for m in moves if m.expected is not None]
        if updates:
            raw.executemany(
                self.update_position,
                [(m.next_offset, now, m.topic, m.partition, m.expected) for m in updates],
            )
            if raw.rowcount != len(updates):
                raise KpiStateConflictError("a partition's position moved since it was read")
        inserts = [m for m in moves if m.expected is None]
        if inserts:
            raw.executemany(
                self.insert_position, [(m.topic, m.partition, m.next_offset, now) for m in inserts]
            )

    def _series_sqlite(
        self, raw: sqlite3.Cursor, chunks: Sequence[SeriesChunk], event_ids: str
    ) -> None:
        """The event ids (`event_ids_in_key_order`) in one statement over a JSON array rather
        than `executemany`: SQLite inserts them without taking the GIL back per row, so the
        scorer's other work runs meanwhile (a handover per observation starved both). The
        chunks (one per KPI, not per observation) by `executemany`, their rows' JSON made by
        `chunk_of`."""
        raw.execute(self.insert_event_ids_sqlite, (event_ids,))
        raw.executemany(self.insert_chunks_sqlite, [chunk[:7] for chunk in chunks])

    def migrate_legacy_sqlite(self, c: SQLiteCursor) -> None:
        """Move a `kpi_observations` table of an earlier version into the chunks, in the
        transaction that creates the tables, a slice at a time (values read as Python floats:
        exact). Another process migrating at once makes this transaction fail to take the write
        lock; the recorder's `create_table` tries again, and then finds the table gone."""
        raw = c.sqlite_cursor
        found = raw.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (LEGACY_OBSERVATIONS,)
        ).fetchall()
        if not found:
            return
        table = self.dialect.table(LEGACY_OBSERVATIONS)
        after = -1
        while rows := raw.execute(
            f"SELECT rowid, {OBSERVATION_COLUMNS} FROM {table} WHERE rowid > ? "
            "ORDER BY rowid LIMIT ?",
            (after, MIGRATION_SLICE),
        ).fetchall():
            after = rows[-1][0]
            observations = [ObservationRow(*row[1:]) for row in rows]
            ids = event_ids_in_key_order(o.event_id for o in observations)
            self._series_sqlite(raw, series_chunks(observations), ids)
        raw.execute(f"DROP TABLE {table}")

    def write_postgres(self, curs: Cursor[DictRow], batch: KpiBatch) -> None:
        """All but the series (`copy_series`, before): bulk statements over
        arrays (the recorder runs in pipeline mode, so they are sent together); the fences
        come last and their RETURNING rows are fetched (`returned_rows`), which syncs the
        pipeline and surfaces any constraint violation here, as an IntegrityError."""
        now = _utc_now()
        if batch.removed_bindings:
            curs.executemany(
                self.delete_binding, [(str(o), str(k)) for o, k in batch.removed_bindings]
            )
        if batch.bindings:
            curs.executemany(self.upsert_binding, [_binding_params(b) for b in batch.bindings])
        inserts = [s for s in batch.stats if not s.version]
        if inserts:
            curs.executemany(self.insert_stats, [(s.kpi_key, *_stats_params(s)) for s in inserts])
        new_positions = [m for m in batch.positions if m.expected is None]
        if new_positions:
            curs.executemany(
                self.insert_position,
                [(m.topic, m.partition, m.next_offset, now) for m in new_positions],
            )
        if batch.tracking is not None:
            from eventsourcing.postgres import PostgresTrackingRecorder

            recorder = batch.tracking.recorder
            assert isinstance(recorder, PostgresTrackingRecorder)
            recorder._insert_tracking(curs, batch.tracking.tracking)
        self._fence_positions_postgres(
            curs, [m for m in batch.positions if m.expected is not None], now
        )
        self._fence_stats_postgres(curs, [s for s in batch.stats if s.version])
        returned_rows(curs, "SELECT 1", [])

    def copy_series(
        self, curs: Cursor[DictRow], chunks: Sequence[SeriesChunk], event_ids: str
    ) -> None:
        """The chunks and their ids (`event_ids_in_key_order`), by COPY: PostgreSQL inserts a
        page of rows at a time that way, not a row at a time as for INSERT, and reads the rows
        as they come instead of building arrays first (50,000 ids: 40 rather than 56 to 63 ms;
        1,000 chunks: 14 rather than 25 to 43 ms). COPY cannot run in pipeline mode: the
        recorder runs it in the batch's transaction before its pipeline (`write_postgres`
        writes the rest)."""
        ids: list[str] = orjson.loads(event_ids)
        if ids:
            with curs.copy(self.copy_event_ids_postgres) as copy:
                copy.write(copy_text(ids, escaped="\\" in event_ids))
        with curs.copy(self.copy_chunks_postgres) as copy:
            copy.set_types(CHUNK_TYPES_POSTGRES)
            for chunk in chunks:
                copy.write_row(chunk[:7])

    def migrate_legacy_postgres(self, curs: Cursor[DictRow]) -> None:
        """`migrate_legacy_sqlite` on PostgreSQL. The recorder runs it under its tables' advisory
        lock: concurrent starts queue, and the ones after the first find the table gone."""
        table = self.dialect.table(LEGACY_OBSERVATIONS)
        curs.execute("SELECT to_regclass(%s) AS found", [table])
        found = curs.fetchall()
        if not found or found[0]["found"] is None:
            return
        names = [name.strip() for name in OBSERVATION_COLUMNS.split(",")]
        after = ""
        while True:
            curs.execute(
                f"SELECT {OBSERVATION_COLUMNS} FROM {table} WHERE event_id > %s "
                "ORDER BY event_id LIMIT %s",  # the key's own collation: the index's order
                [after, MIGRATION_SLICE],
            )
            rows = [ObservationRow(*(row[name] for name in names)) for row in curs.fetchall()]
            if not rows:
                break
            after = rows[-1].event_id
            chunks = series_chunks(rows)
            ids = event_ids_in_key_order(row.event_id for row in rows)
            self.copy_series(curs, chunks, ids)
        curs.execute(f"DROP TABLE {table}")

    def compress_series_with_lz4(self, curs: Cursor[DictRow]) -> None:
        """PostgreSQL compresses a chunk's JSON (over 2 kB: TOAST) with pglz unless told
        otherwise: ~60 µs for a chunk of 50 observations, the largest part of the server's work
        for a scorer batch. LZ4 takes a sixth of that for the same size (8,000 such chunks: 501
        against 89 ms). Chunks stored before keep their pglz form; both read alike. A server
        built without LZ4 keeps pglz."""
        curs.execute(
            "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' "
            "AND 'lz4' = ANY(enumvals)"
        )
        if curs.fetchall():
            curs.execute(
                f"ALTER TABLE {self.dialect.table(SERIES)} ALTER COLUMN rows SET COMPRESSION lz4"
            )

    def collate_event_ids_bytewise(self, curs: Cursor[DictRow]) -> None:
        """The dedupe key compared byte by byte ("C"), as SQLite's is: UTF-8's byte order is
        the code points' order, in which the scorer sorts a batch's ids before inserting them
        (`event_ids_in_key_order`), so they fill the index in its own order whatever the
        database's default collation. And no locale's rules run for each comparison: 50,000
        ids in ~10 % less time than under C.UTF-8, far less than under a language's collation.
        Rebuilds the key's index once (1,000,000 ids: 0.4 s)."""
        curs.execute(
            f"ALTER TABLE {self.dialect.table(EVENT_IDS)} "
            'ALTER COLUMN event_id TYPE text COLLATE "C"'
        )

    def _fence_positions_postgres(
        self, curs: Cursor[DictRow], moves: Sequence[PositionMove], now: str
    ) -> None:
        if not moves:
            return
        moved = returned_rows(
            curs,
            self.dialect.sql(
                "UPDATE {positions} AS p SET next_offset = m.next_offset, updated_at = ? "
                "FROM unnest(?::text[], ?::bigint[], ?::bigint[], ?::bigint[]) "
                "AS m(kafka_topic, kafka_partition, expected, next_offset) "
                "WHERE p.kafka_topic = m.kafka_topic AND p.kafka_partition = m.kafka_partition "
                "AND p.next_offset = m.expected RETURNING p.kafka_partition"
            ),
            [
                now,
                [m.topic for m in moves],
                [m.partition for m in moves],
                [m.expected for m in moves],
                [m.next_offset for m in moves],
            ],
        )
        if len(moved) != len(moves):
            raise KpiStateConflictError("a partition's position moved since it was read")

    def _fence_stats_postgres(self, curs: Cursor[DictRow], updates: Sequence[KpiStats]) -> None:
        if not updates:
            return
        columns = [name.strip() for name in STATS_COLUMNS.split(",")]
        types = ["bigint"] * 5 + ["text", "float8", "bigint", "text"]
        arrays = list(zip(*(_stats_params(s) for s in updates), strict=True))
        updated = returned_rows(
            curs,
            self.dialect.sql(
                "UPDATE {stats} AS s SET version = s.version + 1, "
                + ", ".join(f"{name} = u.{name}" for name in columns)
                + " FROM unnest(?::text[], ?::bigint[], "
                + ", ".join(f"?::{t}[]" for t in types)
                + f") AS u(kpi_key, expected, {', '.join(columns)}) "
                "WHERE s.kpi_key = u.kpi_key AND s.version = u.expected RETURNING s.kpi_key"
            ),
            [[s.kpi_key for s in updates], [s.version for s in updates]]
            + [list(array) for array in arrays],
        )
        if len(updated) != len(updates):
            raise KpiStateConflictError("a KPI's state changed since it was read")


def returned_rows(curs: Cursor[DictRow], statement: Any, params: Sequence[Any]) -> list[DictRow]:
    """The rows of a statement sent in the recorder's pipeline, read on a cursor of its own.

    A pipelined cursor takes each of its statements' results when they arrive. Results of an
    earlier statement (sent, never read) that arrive once the next `execute` has reset the
    cursor are taken as the new statement's, and its `fetchall` fails: "the last operation
    didn't produce records (command status: INSERT 0 1)" (psycopg 3.3; it depends on how fast
    the server answers). eventsourcing gives its own insert a second cursor for the same
    reason."""
    with curs.connection.cursor(row_factory=curs.row_factory) as own:
        own.execute(statement, params)
        return own.fetchall()


# --- reads ----------------------------------------------------------------------------------------

Query = Callable[[str, Sequence[Any]], Sequence[Mapping[str, Any]]]
"""Runs one read-only statement on the event store's database and returns its rows."""


def chunks_overlapping(
    columns: str, kpi_key: str, start_us: int | None, end_us: int | None
) -> tuple[str, list[Any]]:
    """A query of `columns` of the KPI's chunks that may hold observations in [start, end)
    (either end open when None), and its parameters; more conditions may be appended."""
    statement = f"SELECT {columns} FROM {{series}} WHERE kpi_key = ?"
    params: list[Any] = [kpi_key]
    if start_us is not None:
        statement += " AND last_at_us >= ?"
        params.append(start_us)
    if end_us is not None:
        statement += " AND first_at_us < ?"
        params.append(end_us)
    return statement, params


class KpiReader:
    """Reads of the scorer's tables (each its own short read, outside any write transaction)."""

    def __init__(self, dialect: KpiDialect, query: Query) -> None:
        self.dialect = dialect
        self.query = query

    def stored_event_ids(self, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        d = self.dialect
        rows = self.query(
            d.sql(f"SELECT event_id FROM {{event_ids}} WHERE {d.any_of('event_id')}"),
            [d.list_param(event_ids)],
        )
        return {row["event_id"] for row in rows}

    def stats(self, kpi_keys: Iterable[str]) -> dict[str, KpiStats]:
        keys = list(kpi_keys)
        found: dict[str, KpiStats] = {}
        if keys:
            d = self.dialect
            rows = self.query(
                d.sql(f"SELECT * FROM {{stats}} WHERE {d.any_of('kpi_key')}"),
                [d.list_param(keys)],
            )
            found = {row["kpi_key"]: stats_from_row(row) for row in rows}
        return {key: found.get(key) or KpiStats(key) for key in keys}

    def all_stats(self) -> list[KpiStats]:
        rows = self.query(self.dialect.sql("SELECT * FROM {stats} ORDER BY kpi_key"), [])
        return [stats_from_row(row) for row in rows]

    def bindings_of_kpis(
        self, kpi_keys: Iterable[str], statuses: Sequence[str] = SCORED_STATUSES
    ) -> list[Binding]:
        keys = list(kpi_keys)
        if not keys:
            return []
        d = self.dialect
        rows = self.query(
            d.sql(
                f"SELECT * FROM {{bindings}} WHERE {d.any_of('kpi_key')} "
                f"AND {d.any_of('objective_status')}"
            ),
            [d.list_param(keys), d.list_param(statuses)],
        )
        return [binding_from_row(row) for row in rows]

    def bindings_of_objective(self, objective_id: UUID) -> list[Binding]:
        rows = self.query(
            self.dialect.sql("SELECT * FROM {bindings} WHERE objective_id = ?"),
            [str(objective_id)],
        )
        return [binding_from_row(row) for row in rows]

    def all_bindings(self) -> list[Binding]:
        rows = self.query(
            self.dialect.sql("SELECT * FROM {bindings} ORDER BY objective_id, key_result_id"), []
        )
        return [binding_from_row(row) for row in rows]

    def series(
        self, kpi_key: str, start_us: int | None = None, end_us: int | None = None
    ) -> list[Observation]:
        """The KPI's observations in [start, end), oldest first (by time, then event id)."""
        observations = [
            Observation(row[0], row[1], row[3])
            for row in self.chunk_rows(kpi_key, start_us, end_us)
            if (start_us is None or row[3] >= start_us) and (end_us is None or row[3] < end_us)
        ]
        observations.sort(key=ORDER_KEY)
        return observations

    def chunk_rows(
        self, kpi_key: str, start_us: int | None = None, end_us: int | None = None
    ) -> list[list[Any]]:
        """Every stored observation (`CHUNK_ROW`'s fields) of the chunks that overlap
        [start, end), unordered: some may lie outside it."""
        statement, params = chunks_overlapping("rows", kpi_key, start_us, end_us)
        return [
            observation
            for chunk in self.query(self.dialect.sql(statement), params)
            for observation in orjson.loads(chunk["rows"])
        ]

    def positions(self, topic: str) -> dict[int, int]:
        """Next offset to score, per partition of `topic` (absent: never scored)."""
        rows = self.query(
            self.dialect.sql(
                "SELECT kafka_partition, next_offset FROM {positions} WHERE kafka_topic = ?"
            ),
            [topic],
        )
        return {row["kafka_partition"]: row["next_offset"] for row in rows}

    def observation_count(self) -> int:
        rows = self.query(self.dialect.sql("SELECT COUNT(*) AS n FROM {event_ids}"), [])
        return int(rows[0]["n"])
