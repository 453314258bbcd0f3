"""Versioned schema migrations, for the read store and the event store alike.

Each store keeps a table of the migrations applied to it (version, name, when). At start the
service applies, in order and in the transaction that opens the store, every migration the table
does not list: a store made by any earlier release is brought to the current schema, and one made
by a newer release (a version this code does not know) is refused rather than misread. Version 1 of
each store is the schema as the first release made it, with `CREATE ... IF NOT EXISTS`, so a store
made before migrations were recorded is adopted as it stands and then upgraded. Migrations are
never edited once released; a change is a new one (`okr migrate --status` lists them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol


class Executor(Protocol):
    """A transaction to run statements in, written with `?` placeholders (`projections.sql`)."""

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    def run(self, sql: str, params: Sequence[Any] = ()) -> None: ...


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Executor], None]


@dataclass(frozen=True)
class MigrationState:
    """One migration as a store sees it: applied when, or pending (`applied_at` None)."""

    version: int
    name: str
    applied_at: str | None


class NewerSchemaError(RuntimeError):
    """The store was migrated by a newer release than this code."""


class SchemaHistory:
    """The ordered migrations of one store and the table that records them."""

    def __init__(self, table: str, migrations: Sequence[Migration]) -> None:
        versions = [m.version for m in migrations]
        if versions != list(range(1, len(migrations) + 1)):
            raise ValueError(f"migrations of {table} must be numbered 1, 2, … without gaps")
        self.table = table
        self.migrations = tuple(migrations)

    @property
    def latest(self) -> int:
        return len(self.migrations)

    def upgrade(self, db: Executor) -> list[Migration]:
        """Apply every pending migration in order; returns those applied."""
        db.run(
            f"CREATE TABLE IF NOT EXISTS {self.table} (version INTEGER PRIMARY KEY, "
            "name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        applied = self._applied(db)
        unknown = sorted(set(applied) - {m.version for m in self.migrations})
        if unknown:
            raise NewerSchemaError(
                f"{self.table} lists migration {unknown[-1]}, newer than this release knows "
                f"(latest {self.latest}): upgrade the service before opening this store"
            )
        done = []
        for migration in self.migrations:
            if migration.version in applied:
                continue
            migration.apply(db)
            db.run(
                f"INSERT INTO {self.table} (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, datetime.now(UTC).isoformat()),
            )
            done.append(migration)
        return done

    def status(self, db: Executor, *, recorded: bool) -> list[MigrationState]:
        """Every migration this release knows, applied or pending; `recorded` says whether the
        store has the table yet (a store never opened, or made before migrations, has not)."""
        applied = self._applied(db) if recorded else {}
        return [MigrationState(m.version, m.name, applied.get(m.version)) for m in self.migrations]

    def _applied(self, db: Executor) -> dict[int, str]:
        rows = db.fetch(f"SELECT version, applied_at FROM {self.table} ORDER BY version")
        return {int(row["version"]): str(row["applied_at"]) for row in rows}


def statements(*sql: str) -> Callable[[Executor], None]:
    """A migration that runs these statements in order."""

    def apply(db: Executor) -> None:
        for statement in sql:
            db.run(statement)

    return apply
