"""Reads of the scorer's tables that the KPI read API needs and `KpiReader` does not offer.

`KpiReader.series` returns a KPI's whole series, reduced to what aggregation needs; a client
browsing a KPI wants it page by page, with what the producer sent (offset, source, unit,
dimensions). Kept beside the store rather than in it: the scorer never pages.

Pages are keyset pages over the series' total order, (observed_at, event_id): a page starts after
the last row of the previous one, so observations arriving meanwhile never shift or repeat rows.
Event ids compare by code point on both backends (PostgreSQL is told `COLLATE "C"`), the order
`domain.kpi_series.Observation.order_key` uses.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from services.kpi_store import KpiReader


class InvalidSeriesCursorError(ValueError):
    """A cursor this listing did not hand out."""


@dataclass(frozen=True, slots=True)
class StoredObservation:
    """One accepted KPI event, as stored in the series."""

    event_id: str
    value: float
    observed_at: datetime
    """As the producer sent it, with its UTC offset."""
    observed_at_us: int
    source: str
    unit: str | None
    dimensions: dict[str, str]
    received_at: datetime
    """When the scorer stored it."""

    @property
    def order_key(self) -> tuple[int, str]:
        return (self.observed_at_us, self.event_id)


@dataclass(frozen=True, slots=True)
class SeriesPage:
    items: list[StoredObservation]
    next_cursor: str | None
    """Pass back as `after` for the next page; None at the end."""


def encode_series_cursor(order_key: tuple[int, str]) -> str:
    raw = orjson.dumps(list(order_key))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_series_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        observed_at_us, event_id = orjson.loads(raw)
    except (binascii.Error, orjson.JSONDecodeError, TypeError, ValueError) as error:
        raise InvalidSeriesCursorError(f"not a cursor of this series: {cursor!r}") from error
    # A forged cursor must fail here, not in the store: SQLite holds 64-bit integers only and
    # PostgreSQL text no NUL.
    if (
        type(observed_at_us) is not int
        or not -(2**63) <= observed_at_us < 2**63
        or not isinstance(event_id, str)
        or "\x00" in event_id
    ):
        raise InvalidSeriesCursorError(f"not a cursor of this series: {cursor!r}")
    return observed_at_us, event_id


def series_page(
    reader: KpiReader,
    kpi_key: str,
    *,
    start_us: int | None = None,
    end_us: int | None = None,
    after: str | None = None,
    limit: int = 100,
) -> SeriesPage:
    """Up to `limit` observations of the KPI in [start, end), after the cursor, oldest first."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    d = reader.dialect
    event_id = 'event_id COLLATE "C"' if d.name == "postgres" else "event_id"
    statement = (
        "SELECT event_id, value, observed_at, observed_at_us, source, unit, dimensions, "
        "received_at FROM {observations} WHERE kpi_key = ?"
    )
    params: list[Any] = [kpi_key]
    if start_us is not None:
        statement += " AND observed_at_us >= ?"
        params.append(start_us)
    if end_us is not None:
        statement += " AND observed_at_us < ?"
        params.append(end_us)
    if after is not None:
        after_us, after_id = decode_series_cursor(after)
        # Spelled out rather than as a row comparison, so the (kpi_key, observed_at_us) index
        # bounds the scan.
        statement += f" AND observed_at_us >= ? AND (observed_at_us > ? OR {event_id} > ?)"
        params += [after_us, after_us, after_id]
    statement += f" ORDER BY observed_at_us, {event_id} LIMIT ?"
    params.append(limit + 1)
    rows = reader.query(d.sql(statement), params)
    items = [_observation(row) for row in rows[:limit]]
    more = len(rows) > limit
    return SeriesPage(items, encode_series_cursor(items[-1].order_key) if more else None)


def _observation(row: Any) -> StoredObservation:
    return StoredObservation(
        event_id=row["event_id"],
        value=row["value"],
        observed_at=datetime.fromisoformat(row["observed_at"]),
        observed_at_us=row["observed_at_us"],
        source=row["source"],
        unit=row["unit"],
        dimensions=orjson.loads(row["dimensions"]),
        received_at=datetime.fromisoformat(row["received_at"]),
    )
