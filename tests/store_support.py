"""Reaching the event store's database behind the application's back, as someone with database
access would (tampering tests, data written by an earlier version)."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg

from services.settings import Settings
from services.stores import is_postgres, sqlite_path


def execute(settings: Settings, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement (`?` placeholders) on the event store's database; its rows, if any."""
    if is_postgres(settings.event_store_url):
        with psycopg.connect(settings.event_store_url, autocommit=True) as conn:
            cursor = conn.execute(sql.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []
    with sqlite3.connect(sqlite_path(settings.event_store_url)) as conn:
        return conn.execute(sql, params).fetchall()
