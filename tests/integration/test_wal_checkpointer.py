"""The stores' WALs are copied into their databases by a thread of their own, not on commits."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

from projections.sqlite import WalCheckpointer
from services.commands.application import OkrApplication
from services.commands.event_store import CheckpointedSQLiteFactory
from services.settings import Settings

DEADLINE_S = 10.0


def test_the_checkpointer_copies_committed_pages_into_the_database_and_stops(
    tmp_path: Path,
) -> None:
    path, rows = tmp_path / "read.sqlite", 2_000
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA wal_autocheckpoint=0")  # as the store's writer
        connection.execute("CREATE TABLE t (n INTEGER, text TEXT)")
        connection.execute("BEGIN")
        connection.executemany("INSERT INTO t VALUES (?, ?)", [(n, "x" * 200) for n in range(rows)])
        connection.execute("COMMIT")
        # The connection stays open: closing the last one would checkpoint by itself.
        size_before = path.stat().st_size

        checkpointer = WalCheckpointer(path, every_s=0.01)
        try:
            deadline = time.monotonic() + DEADLINE_S
            while checkpointer.done == 0:
                assert time.monotonic() < deadline, "no checkpoint ran"
                time.sleep(0.01)
        finally:
            checkpointer.stop()

        assert path.stat().st_size > size_before + rows * 200  # the rows reached the file
        assert not checkpointer._thread.is_alive()


def test_the_sqlite_event_store_leaves_its_wal_to_a_checkpointer_that_closes_with_it(
    tmp_path: Path,
) -> None:
    settings = Settings(
        event_store_url=f"sqlite:///{tmp_path / 'events.sqlite'}",
        read_store_url=f"sqlite:///{tmp_path / 'read.sqlite'}",
    )
    application = OkrApplication(settings)
    try:
        factory = application.factory
        assert isinstance(factory, CheckpointedSQLiteFactory)
        assert factory.checkpointer is not None
        with factory.datastore.transaction(commit=False) as cursor:
            cursor.execute("PRAGMA wal_autocheckpoint")
            assert cursor.fetchone()[0] == 0  # no commit copies the WAL
        deadline = time.monotonic() + DEADLINE_S
        while factory.checkpointer.done == 0:
            assert time.monotonic() < deadline, "no checkpoint ran"
            time.sleep(0.05)
    finally:
        application.close()
    assert not factory.checkpointer._thread.is_alive()


def test_an_idle_checkpointer_sleeps_until_something_is_written(tmp_path: Path) -> None:
    """Checkpointing every second whatever happens woke an idle process for nothing."""
    path = tmp_path / "read.sqlite"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE t (n INTEGER)")

        checkpointer = WalCheckpointer(path, every_s=0.01)
        try:
            deadline = time.monotonic() + DEADLINE_S
            while checkpointer.done == 0:  # once at start: what an earlier run left
                assert time.monotonic() < deadline, "no checkpoint ran"
                time.sleep(0.01)
            time.sleep(0.3)
            assert checkpointer.done == 1, "it checkpointed with nothing written"

            connection.execute("INSERT INTO t VALUES (1)")
            checkpointer.written()
            while checkpointer.done == 1:
                assert time.monotonic() < deadline, "no checkpoint after a write"
                time.sleep(0.01)
        finally:
            checkpointer.stop()
        assert not checkpointer._thread.is_alive()


def test_the_event_stores_commits_wake_its_checkpointer(tmp_path: Path) -> None:
    settings = Settings(
        event_store_url=f"sqlite:///{tmp_path / 'events.sqlite'}",
        read_store_url=f"sqlite:///{tmp_path / 'read.sqlite'}",
    )
    application = OkrApplication(settings)
    try:
        factory = application.factory
        assert isinstance(factory, CheckpointedSQLiteFactory)
        checkpointer = factory.checkpointer
        assert checkpointer is not None
        deadline = time.monotonic() + DEADLINE_S
        while checkpointer.done == 0 or checkpointer._written.is_set():
            assert time.monotonic() < deadline, "the first checkpoints did not run"
            time.sleep(0.05)
        done = checkpointer.done

        with factory.datastore.transaction(commit=True) as cursor:
            cursor.execute("CREATE TABLE written (n INTEGER)")
        while checkpointer.done == done:
            assert time.monotonic() < deadline, "a commit did not wake the checkpointer"
            time.sleep(0.05)
    finally:
        application.close()
