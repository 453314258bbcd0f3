"""Versioned migrations: each store records what was applied, a store of the previous release is
upgraded in place, `okr migrate --status` reads without changing anything, and a store migrated by
a newer release is refused rather than misread."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from projections.migrations import NewerSchemaError
from services.cli.main import app as cli
from services.commands.application import OkrApplication
from services.settings import Settings
from tests.store_support import execute

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def env(settings: Settings) -> dict[str, str]:
    return {
        "OKR_EVENT_STORE_URL": settings.event_store_url,
        "OKR_READ_STORE_URL": settings.read_store_url,
    }


def release_0_1_store(tmp_path: Path) -> Settings:
    path = tmp_path / "events.sqlite"
    with sqlite3.connect(path) as connection:
        connection.executescript((FIXTURES / "event_store_0_1.sql").read_text())
    return Settings(
        event_store_url=f"sqlite:///{path}",
        read_store_url=f"sqlite:///{tmp_path / 'read.sqlite'}",
        audit_signing_key_file=tmp_path / "key",
    )


def test_status_reads_the_previous_release_then_migrate_upgrades_it(tmp_path: Path) -> None:
    settings = release_0_1_store(tmp_path)
    before = (tmp_path / "events.sqlite").read_bytes()

    status = CliRunner().invoke(cli, ["migrate", "--status"], env=env(settings))

    assert status.exit_code == 0, status.output
    assert "event store (5 pending)" in status.output
    assert "read store (1 pending)" in status.output
    assert (tmp_path / "events.sqlite").read_bytes() == before  # looking changed nothing
    assert not (tmp_path / "read.sqlite").exists()

    upgraded = CliRunner().invoke(cli, ["migrate"], env=env(settings))

    assert upgraded.exit_code == 0, upgraded.output
    assert "event store (0 pending)" in upgraded.output
    assert "read store (0 pending)" in upgraded.output
    assert execute(settings, "SELECT count(*) FROM merkle_leaves") == [(10,)]
    assert execute(settings, "SELECT count(*) FROM command_receipts") == [(10,)]


def test_both_stores_record_their_migrations(store_settings: Settings) -> None:
    from services.projector_service import open_read_store

    OkrApplication(store_settings).close()
    open_read_store(store_settings).close()

    status = CliRunner().invoke(cli, ["migrate", "--status"], env=env(store_settings))

    assert status.exit_code == 0, status.output
    assert status.output.count("(0 pending)") == 2
    assert "Merkle transparency log" in status.output


def test_a_store_migrated_by_a_newer_release_is_refused(store_settings: Settings) -> None:
    OkrApplication(store_settings).close()
    execute(
        store_settings,
        "INSERT INTO event_store_migrations (version, name, applied_at) VALUES (?, ?, ?)",
        99,
        "from the future",
        "2027-01-01T00:00:00+00:00",
    )

    with pytest.raises(NewerSchemaError, match="migration 99, newer than this release"):
        OkrApplication(store_settings)


@pytest.mark.postgres
def test_postgresql_compresses_the_kpi_series_with_lz4(postgres_database: str) -> None:
    settings = Settings(event_store_url=postgres_database, read_store_url=postgres_database)
    OkrApplication(settings).close()

    assert execute(
        settings,
        "SELECT attcompression FROM pg_attribute "
        "WHERE attrelid = 'kpi_series'::regclass AND attname = 'rows'",
    ) == [("l",)]


def event_ids_collation(settings: Settings) -> list[tuple[str | None]]:
    return execute(
        settings,
        "SELECT c.collname FROM pg_attribute a LEFT JOIN pg_collation c ON c.oid = a.attcollation "
        "WHERE a.attrelid = 'kpi_event_ids'::regclass AND a.attname = 'event_id'",
    )


@pytest.mark.postgres
def test_postgresql_compares_kpi_event_ids_byte_by_byte_after_migrating(
    postgres_database: str,
) -> None:
    """A store of the previous release keeps its ids, now in the key's code point order."""
    settings = Settings(event_store_url=postgres_database, read_store_url=postgres_database)
    OkrApplication(settings).close()
    assert event_ids_collation(settings) == [("C",)]
    execute(settings, 'ALTER TABLE kpi_event_ids ALTER COLUMN event_id TYPE text COLLATE "default"')
    execute(settings, "DELETE FROM event_store_migrations WHERE version = 5")
    ids = ["b", "B", "é", "e\u0301", "\U0001f600", "a"]
    for event_id in ids:
        execute(settings, "INSERT INTO kpi_event_ids VALUES (?)", event_id)
    assert event_ids_collation(settings) == [("default",)]

    application = OkrApplication(settings)
    try:
        assert application.receipts.kpi.stored_event_ids(ids) == set(ids)
    finally:
        application.close()

    assert event_ids_collation(settings) == [("C",)]
    assert execute(settings, "SELECT event_id FROM kpi_event_ids ORDER BY event_id") == [
        (event_id,) for event_id in sorted(ids)
    ]


@pytest.mark.postgres
def test_instances_starting_together_create_one_postgresql_read_store(
    postgres_database: str,
) -> None:
    """`CREATE TABLE IF NOT EXISTS` is not safe against a concurrent one on PostgreSQL: two
    instances of a fleet starting together made one fail on the catalog."""
    from projections.postgres import PostgresReadStore

    def start() -> None:
        PostgresReadStore(postgres_database).close()

    with ThreadPoolExecutor(max_workers=6) as pool:
        started = [pool.submit(start) for _ in range(6)]
    assert [future.exception() for future in started] == [None] * 6
    assert execute(
        Settings(event_store_url=postgres_database, read_store_url=postgres_database),
        "SELECT count(*) FROM read_store_migrations",
    ) == [(1,)]
