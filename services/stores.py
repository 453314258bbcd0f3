"""Store URLs to connections: the one place that knows `sqlite:///` from `postgresql://`."""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg


@dataclass(frozen=True)
class PostgresLocation:
    """The parts eventsourcing's PostgreSQL recorder and psycopg both need."""

    host: str
    port: int
    user: str
    password: str
    dbname: str

    @property
    def conninfo(self) -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=self.dbname,
        )


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def sqlite_path(url: str) -> Path:
    """`sqlite:///var/x.sqlite` is relative to the working directory, `sqlite:////abs` absolute."""
    return Path(url.removeprefix("sqlite:///"))


def is_sqlite_memory(url: str) -> bool:
    return ":memory:" in url or "mode=memory" in url


def prepare_store(url: str) -> None:
    """An SQLite store's file, created mode 600 (SQLite gives its -wal and -shm the same) in a
    directory made 700, before anything else makes them; nothing to do for PostgreSQL."""
    if is_postgres(url) or is_sqlite_memory(url):
        return
    from projections.sqlite import private_file

    private_file(sqlite_path(url))


def postgres_location(url: str) -> PostgresLocation:
    parts = urlsplit(url)
    return PostgresLocation(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
        dbname=parts.path.lstrip("/") or "postgres",
    )


def probe_store(url: str, timeout_s: float = 3.0) -> str | None:
    """None when the store answers a trivial query, else why not."""
    try:
        if is_postgres(url):
            location = postgres_location(url)
            with psycopg.connect(location.conninfo, connect_timeout=max(1, int(timeout_s))) as conn:
                conn.execute("SELECT 1")
        else:
            prepare_store(url)
            with contextlib.closing(sqlite3.connect(sqlite_path(url), timeout=timeout_s)) as conn:
                conn.execute("SELECT 1")
    except (psycopg.Error, sqlite3.Error, OSError) as error:
        return f"{type(error).__name__}: {error}".strip()
    return None
