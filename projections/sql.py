"""The read store in SQL that SQLite and PostgreSQL both speak; a `Dialect` supplies the rest.

Statements use `?` placeholders and plain Python values (UUID, date, datetime; a dict or a list is
a JSON column's value); the dialect translates placeholders, adapts values and maps the few column
types that differ. Upserts use `INSERT ... ON CONFLICT ... DO UPDATE`, which both databases
support with the same syntax. The column names are the row models' field names, so a row read
back validates into its model. What the projector appends (timeline and audit entries) comes
already in the text both databases read, and goes in by the fastest bulk path each has.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar
from uuid import UUID

from projections.migrations import Migration, SchemaHistory, statements
from projections.views import (
    PROGRESS_FIELDS,
    AuditEntry,
    AuditRow,
    KeyResultRow,
    ObjectiveDetail,
    ObjectiveFilter,
    ObjectivePage,
    ObjectiveRow,
    PositionRow,
    ProjectedObjective,
    ReadStoreDump,
    Row,
    TimelineEntry,
    TimelineRow,
    decode_cursor,
    encode_cursor,
)

MAX_PAGE = 1000


class Session(Protocol):
    """One open transaction; it commits when its context exits cleanly, else rolls back."""

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    def run(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def insert_many(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[str | float | None]]
    ) -> None:
        """Append rows of plain values (text, numbers, nulls: the stored forms both databases
        read, as `TimelineEntry` holds them) by `insert_statement`, or what the database does
        faster."""


class Dialect(Protocol):
    column_types: Mapping[str, str]
    """Logical type (uuid, date, timestamp, real, bigint, json) -> the database's column type."""

    def session(self, *, write: bool) -> contextlib.AbstractContextManager[Session]: ...

    def decode_json(self, value: Any) -> Any: ...

    def close(self) -> None: ...


# --- schema ---------------------------------------------------------------------------------------

TABLES = ("objectives", "key_results", "score_timeline", "audit", "projection_positions")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS objectives (
        objective_id {uuid} PRIMARY KEY,
        title TEXT NOT NULL,
        description TEXT NOT NULL,
        owner TEXT NOT NULL,
        team TEXT NOT NULL,
        period_start {date} NOT NULL,
        period_end {date} NOT NULL,
        parent_id {uuid},
        status TEXT NOT NULL,
        score {real} NOT NULL,
        final_score {real},
        retrospective TEXT NOT NULL,
        version INTEGER NOT NULL,
        created_at {timestamp} NOT NULL,
        updated_at {timestamp} NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS objectives_by_creation ON objectives (created_at, objective_id)",
    "CREATE INDEX IF NOT EXISTS objectives_by_parent ON objectives (parent_id)",
    "CREATE INDEX IF NOT EXISTS objectives_by_owner ON objectives (owner)",
    "CREATE INDEX IF NOT EXISTS objectives_by_team ON objectives (team)",
    """CREATE TABLE IF NOT EXISTS key_results (
        objective_id {uuid} NOT NULL,
        key_result_id {uuid} NOT NULL,
        position INTEGER NOT NULL,
        title TEXT NOT NULL,
        kind TEXT NOT NULL,
        metric TEXT,
        baseline {real},
        target {real},
        target_low {real},
        target_high {real},
        relative_target TEXT,
        deadline {date},
        weight {real} NOT NULL,
        current {real},
        score {real} NOT NULL,
        attainment {real},
        confidence {real},
        last_update {timestamp},
        kpi_key TEXT,
        aggregation TEXT,
        PRIMARY KEY (objective_id, key_result_id)
    )""",
    "CREATE INDEX IF NOT EXISTS key_results_by_kpi ON key_results (kpi_key)",
    """CREATE TABLE IF NOT EXISTS score_timeline (
        objective_id {uuid} NOT NULL,
        version INTEGER NOT NULL,
        occurred_at {timestamp} NOT NULL,
        key_result_id {uuid},
        value {real},
        kr_score {real},
        kr_attainment {real},
        objective_score {real} NOT NULL,
        cause TEXT NOT NULL,
        actor TEXT NOT NULL,
        detail {json} NOT NULL,
        PRIMARY KEY (objective_id, version)
    )""",
    """CREATE TABLE IF NOT EXISTS audit (
        objective_id {uuid} NOT NULL,
        version INTEGER NOT NULL,
        occurred_at {timestamp} NOT NULL,
        event_type TEXT NOT NULL,
        actor TEXT NOT NULL,
        command_id TEXT NOT NULL,
        reason TEXT,
        changes {json} NOT NULL,
        PRIMARY KEY (objective_id, version)
    )""",
    """CREATE TABLE IF NOT EXISTS projection_positions (
        topic TEXT NOT NULL,
        kafka_partition INTEGER NOT NULL,
        next_offset {bigint} NOT NULL,
        PRIMARY KEY (topic, kafka_partition)
    )""",
)
"""Timeline and audit are keyed by (objective, version): appending an event twice is refused,
so two projectors racing on one objective fail a batch instead of doubling a row."""

MIGRATIONS_TABLE = "read_store_migrations"


def read_store_history(column_types: Mapping[str, str]) -> SchemaHistory:
    """The read store's migrations (`projections.migrations`); `SCHEMA` is version 1."""
    return SchemaHistory(
        MIGRATIONS_TABLE,
        [
            Migration(
                1,
                "objectives, key results, score timeline, audit, projection positions",
                statements(*(statement.format_map(column_types) for statement in SCHEMA)),
            )
        ],
    )


R = TypeVar("R", bound=Row)


def _columns(model: type[Row]) -> tuple[str, ...]:
    return tuple(model.model_fields)


def insert_statement(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def _update(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """The statement, and (`_params`) its parameters' order: `columns`, then `key`."""
    assignments = ", ".join(f"{c} = ?" for c in columns)
    return f"UPDATE {table} SET {assignments} WHERE {' AND '.join(f'{k} = ?' for k in key)}"


def _upsert(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return (
        f"{insert_statement(table, columns)} ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )


OBJECTIVE_COLUMNS = _columns(ObjectiveRow)
KEY_RESULT_COLUMNS = _columns(KeyResultRow)
TIMELINE_COLUMNS = TimelineEntry._fields
AUDIT_COLUMNS = AuditEntry._fields

OBJECTIVE_KEY = ("objective_id",)
KEY_RESULT_KEY = ("objective_id", "key_result_id")
UPSERT_OBJECTIVE = _upsert("objectives", OBJECTIVE_COLUMNS, OBJECTIVE_KEY)
INSERT_KEY_RESULT = insert_statement("key_results", KEY_RESULT_COLUMNS)
UPSERT_KEY_RESULT = _upsert("key_results", KEY_RESULT_COLUMNS, KEY_RESULT_KEY)
OBJECTIVE_PROGRESS = (*PROGRESS_FIELDS["objectives"], *OBJECTIVE_KEY)
KEY_RESULT_PROGRESS = (*PROGRESS_FIELDS["key_results"], *KEY_RESULT_KEY)
UPDATE_OBJECTIVE_PROGRESS = _update("objectives", PROGRESS_FIELDS["objectives"], OBJECTIVE_KEY)
UPDATE_KEY_RESULT_PROGRESS = _update("key_results", PROGRESS_FIELDS["key_results"], KEY_RESULT_KEY)
ADVANCE_POSITION = (
    "INSERT INTO projection_positions (topic, kafka_partition, next_offset) VALUES (?, ?, ?) "
    "ON CONFLICT (topic, kafka_partition) DO UPDATE SET next_offset = CASE "
    "WHEN excluded.next_offset > projection_positions.next_offset "
    "THEN excluded.next_offset ELSE projection_positions.next_offset END"
)
SELECT_POSITIONS = (
    'SELECT topic, kafka_partition AS "partition", next_offset FROM projection_positions '
    "ORDER BY topic, kafka_partition"
)
SELECT_CHILDREN = "SELECT * FROM objectives WHERE parent_id = ? ORDER BY created_at, objective_id"
JSON_COLUMNS = {"detail", "changes"}


def _params(row: Row, columns: Sequence[str]) -> list[Any]:
    values = []
    for column in columns:
        value = getattr(row, column)
        if column in JSON_COLUMNS:
            value = row.model_dump(mode="json", include={column})[column]
        values.append(value)
    return values


# --- the store ------------------------------------------------------------------------------------


class SqlProjectionWriter:
    """The projector's side of one transaction.

    Objectives come from the store's cache of what it last committed when their stored version
    says the copy is current (one query of versions for the batch), else from their rows. Saving
    writes the key result rows an event changed, not all of them: `rescore` keeps unchanged rows
    as the same objects, so "changed" is an identity test against what was loaded.
    """

    def __init__(self, store: SqlReadStore, session: Session) -> None:
        self._store = store
        self._session = session
        self._loaded: dict[UUID, ProjectedObjective] = {}
        self.saved: dict[UUID, ProjectedObjective] = {}
        """Committed with the transaction, then remembered by the store."""

    def load(self, objective_id: UUID) -> ProjectedObjective | None:
        return self.load_many([objective_id]).get(objective_id)

    def load_many(self, objective_ids: Sequence[UUID]) -> dict[UUID, ProjectedObjective]:
        """At most three queries for the whole batch, not two per objective: each statement is a
        round trip (PostgreSQL) or a GIL release and re-acquire (SQLite) the projector waits on."""
        found: dict[UUID, ProjectedObjective] = {}
        stale: list[UUID] = []
        for chunk in _chunks(sorted(set(objective_ids)), IN_CHUNK):
            marks = ", ".join("?" * len(chunk))
            versions = {
                _uuid(row["objective_id"]): row["version"]
                for row in self._session.fetch(
                    f"SELECT objective_id, version FROM objectives WHERE objective_id IN ({marks})",
                    chunk,
                )
            }
            for objective_id in chunk:
                if objective_id not in versions:
                    continue
                cached = self._store.cached(objective_id)
                if cached is not None and cached.objective.version == versions[objective_id]:
                    found[objective_id] = cached
                else:
                    stale.append(objective_id)
        for chunk in _chunks(stale, IN_CHUNK):
            marks = ", ".join("?" * len(chunk))
            objectives = self._store.rows_in(
                self._session,
                ObjectiveRow,
                f"SELECT * FROM objectives WHERE objective_id IN ({marks})",
                chunk,
            )
            key_results: dict[UUID, list[KeyResultRow]] = {o.objective_id: [] for o in objectives}
            for row in self._store.rows_in(
                self._session,
                KeyResultRow,
                f"SELECT * FROM key_results WHERE objective_id IN ({marks}) "
                "ORDER BY objective_id, position",
                chunk,
            ):
                key_results[row.objective_id].append(row)
            for objective in objectives:
                found[objective.objective_id] = ProjectedObjective(
                    objective=objective, key_results=tuple(key_results[objective.objective_id])
                )
        self._loaded.update(found)
        return found

    def save(self, projected: ProjectedObjective) -> None:
        self.save_many([projected])

    def save_many(
        self, projected: Sequence[ProjectedObjective], *, progressed: Collection[UUID] = ()
    ) -> None:
        if not projected:
            return
        whole = [p for p in projected if p.objective.objective_id not in progressed]
        moved = [p for p in projected if p.objective.objective_id in progressed]
        if whole:
            self._session.run_many(
                UPSERT_OBJECTIVE, [_params(p.objective, OBJECTIVE_COLUMNS) for p in whole]
            )
        if moved:
            self._session.run_many(
                UPDATE_OBJECTIVE_PROGRESS,
                [_params(p.objective, OBJECTIVE_PROGRESS) for p in moved],
            )
        rewritten: list[ProjectedObjective] = []
        changed: list[KeyResultRow] = []
        for p in whole:
            loaded = self._loaded.get(p.objective.objective_id)
            if loaded is None or _ids(loaded) != _ids(p):
                rewritten.append(p)  # key results added, removed or reordered: all rows anew
            else:
                changed += self._changed(p, loaded)
        if rewritten:
            self._session.run_many(
                "DELETE FROM key_results WHERE objective_id = ?",
                [[p.objective.objective_id] for p in rewritten],
            )
            rows = [_params(row, KEY_RESULT_COLUMNS) for p in rewritten for row in p.key_results]
            if rows:
                self._session.run_many(INSERT_KEY_RESULT, rows)
        if changed:
            self._session.run_many(
                UPSERT_KEY_RESULT, [_params(row, KEY_RESULT_COLUMNS) for row in changed]
            )
        progress = [
            row for p in moved for row in self._changed(p, self._loaded[p.objective.objective_id])
        ]
        if progress:
            self._session.run_many(
                UPDATE_KEY_RESULT_PROGRESS, [_params(row, KEY_RESULT_PROGRESS) for row in progress]
            )
        for p in projected:
            self._loaded[p.objective.objective_id] = p
            self.saved[p.objective.objective_id] = p

    @staticmethod
    def _changed(projected: ProjectedObjective, loaded: ProjectedObjective) -> list[KeyResultRow]:
        """The rows that are not the loaded ones (the key results being the same)."""
        return [
            row
            for row, was in zip(projected.key_results, loaded.key_results, strict=True)
            if row is not was
        ]

    def append_timeline(self, entries: Sequence[TimelineEntry]) -> None:
        if entries:
            self._session.insert_many("score_timeline", TIMELINE_COLUMNS, entries)

    def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        if entries:
            self._session.insert_many("audit", AUDIT_COLUMNS, entries)

    def advance(self, topic: str, partition: int, next_offset: int) -> None:
        self._session.run(ADVANCE_POSITION, [topic, partition, next_offset])


class SqlReadStore:
    """`ReadStore` on any `Dialect`; the backends only configure their dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._cache: OrderedDict[UUID, ProjectedObjective] = OrderedDict()
        self._cache_lock = threading.Lock()
        with self.dialect.session(write=True) as session:
            self._create(session)

    # --- writing ---

    @contextlib.contextmanager
    def transaction(self) -> Iterator[SqlProjectionWriter]:
        with self.dialect.session(write=True) as session:
            writer = SqlProjectionWriter(self, session)
            yield writer
        self._remember(writer.saved)

    def reset(self) -> None:
        with self._cache_lock:
            self._cache.clear()
        with self.dialect.session(write=True) as session:
            for table in (*TABLES, MIGRATIONS_TABLE):
                session.run(f"DROP TABLE IF EXISTS {table}")
            self._create(session)

    def cached(self, objective_id: UUID) -> ProjectedObjective | None:
        """The objective as this store last committed it (the caller checks its version)."""
        with self._cache_lock:
            return self._cache.get(objective_id)

    def _remember(self, saved: Mapping[UUID, ProjectedObjective]) -> None:
        with self._cache_lock:
            for objective_id, projected in saved.items():
                self._cache[objective_id] = projected
                self._cache.move_to_end(objective_id)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)

    def _create(self, session: Session) -> None:
        read_store_history(self.dialect.column_types).upgrade(session)

    # --- reading ---

    def list_objectives(
        self,
        filters: ObjectiveFilter = ObjectiveFilter(),
        *,
        limit: int = 50,
        after_cursor: str | None = None,
    ) -> ObjectivePage:
        """Objectives in creation order (ties by id), so a page never skips nor repeats a row."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must lie in 1..{MAX_PAGE}, got {limit}")
        clauses, params = _filter_clauses(filters)
        if after_cursor is not None:
            created_at, objective_id = decode_cursor(after_cursor)
            clauses.append("(created_at > ? OR (created_at = ? AND objective_id > ?))")
            params += [created_at, created_at, objective_id]
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT * FROM objectives {where} ORDER BY created_at, objective_id LIMIT ?"
        with self.dialect.session(write=False) as session:
            rows = self._rows(ObjectiveRow, session.fetch(sql, [*params, limit + 1]))
        items = tuple(rows[:limit])
        next_cursor = encode_cursor(items[-1]) if len(rows) > limit else None
        return ObjectivePage(items=items, next_cursor=next_cursor)

    def get_objective(self, objective_id: UUID) -> ObjectiveRow | None:
        with self.dialect.session(write=False) as session:
            return self.objective_in(session, objective_id)

    def key_results(self, objective_id: UUID) -> list[KeyResultRow]:
        with self.dialect.session(write=False) as session:
            return self.key_results_in(session, objective_id)

    def children(self, parent_id: UUID) -> list[ObjectiveRow]:
        return self._query(ObjectiveRow, SELECT_CHILDREN, [parent_id])

    def objective_detail(self, objective_id: UUID) -> ObjectiveDetail | None:
        """One read session: SQLite's deferred BEGIN and PostgreSQL's REPEATABLE READ both hold
        the snapshot of the first SELECT until the session ends."""
        with self.dialect.session(write=False) as session:
            objective = self.objective_in(session, objective_id)
            if objective is None:
                return None
            return ObjectiveDetail(
                objective=objective,
                key_results=tuple(self.key_results_in(session, objective_id)),
                children=tuple(
                    self.rows_in(session, ObjectiveRow, SELECT_CHILDREN, [objective_id])
                ),
            )

    def timeline(self, objective_id: UUID, key_result_id: UUID | None = None) -> list[TimelineRow]:
        sql = "SELECT * FROM score_timeline WHERE objective_id = ?"
        params: list[Any] = [objective_id]
        if key_result_id is not None:
            sql += " AND key_result_id = ?"
            params.append(key_result_id)
        return self._query(TimelineRow, f"{sql} ORDER BY version", params)

    def history(self, objective_id: UUID) -> list[AuditRow]:
        sql = "SELECT * FROM audit WHERE objective_id = ? ORDER BY version"
        return self._query(AuditRow, sql, [objective_id])

    def objective_version(self, objective_id: UUID) -> int | None:
        with self.dialect.session(write=False) as session:
            rows = session.fetch(
                "SELECT version FROM objectives WHERE objective_id = ?", [objective_id]
            )
        return int(rows[0]["version"]) if rows else None

    def positions(self) -> dict[tuple[str, int], int]:
        rows = self._query(PositionRow, SELECT_POSITIONS, [])
        return {(row.topic, row.partition): row.next_offset for row in rows}

    def counts(self) -> dict[str, int]:
        with self.dialect.session(write=False) as session:
            return {
                table: int(session.fetch(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"])
                for table in TABLES
            }

    def dump(self) -> ReadStoreDump:
        """One read transaction, so the tables are dumped as of one moment."""
        with self.dialect.session(write=False) as session:
            return ReadStoreDump(
                objectives=tuple(
                    self._rows(ObjectiveRow, session.fetch(_all("objectives", "objective_id")))
                ),
                key_results=tuple(
                    self._rows(
                        KeyResultRow,
                        session.fetch(_all("key_results", "objective_id, key_result_id")),
                    )
                ),
                timeline=tuple(
                    self._rows(
                        TimelineRow, session.fetch(_all("score_timeline", "objective_id, version"))
                    )
                ),
                audit=tuple(
                    self._rows(AuditRow, session.fetch(_all("audit", "objective_id, version")))
                ),
                positions=tuple(self._rows(PositionRow, session.fetch(SELECT_POSITIONS))),
            )

    def close(self) -> None:
        self.dialect.close()

    # --- shared by readers and the writer ---

    def objective_in(self, session: Session, objective_id: UUID) -> ObjectiveRow | None:
        rows = session.fetch("SELECT * FROM objectives WHERE objective_id = ?", [objective_id])
        return self._rows(ObjectiveRow, rows)[0] if rows else None

    def key_results_in(self, session: Session, objective_id: UUID) -> list[KeyResultRow]:
        sql = "SELECT * FROM key_results WHERE objective_id = ? ORDER BY position"
        return self._rows(KeyResultRow, session.fetch(sql, [objective_id]))

    def rows_in(self, session: Session, model: type[R], sql: str, params: Sequence[Any]) -> list[R]:
        return self._rows(model, session.fetch(sql, params))

    def _query(self, model: type[R], sql: str, params: Sequence[Any]) -> list[R]:
        with self.dialect.session(write=False) as session:
            return self._rows(model, session.fetch(sql, params))

    def _rows(self, model: type[R], rows: list[dict[str, Any]]) -> list[R]:
        decoded = []
        for row in rows:
            for column in JSON_COLUMNS & row.keys():
                row[column] = self.dialect.decode_json(row[column])
            decoded.append(model.model_validate(row))
        return decoded


T = TypeVar("T")

CACHE_SIZE = 10_000
"""Projected objectives the writer keeps (each a few KB): a live stream moves the same ones."""


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _ids(projected: ProjectedObjective) -> tuple[UUID, ...]:
    return tuple(row.key_result_id for row in projected.key_results)


IN_CHUNK = 500
"""Ids per `IN (...)` list: well under SQLite's bound-parameter limit (999 before 3.32)."""


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _all(table: str, order: str) -> str:
    return f"SELECT * FROM {table} ORDER BY {order}"


def _filter_clauses(filters: ObjectiveFilter) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for clause, value in (
        ("period_end >= ?", filters.period_from),
        ("period_start <= ?", filters.period_to),
        ("owner = ?", filters.owner),
        ("team = ?", filters.team),
        ("status = ?", filters.status),
        ("parent_id = ?", filters.parent_id),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return clauses, params
