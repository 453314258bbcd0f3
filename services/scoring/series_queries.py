"""Reads of the scorer's tables that the KPI read API needs and `KpiReader` does not offer.

`KpiReader.series` returns a KPI's whole series, reduced to what aggregation needs; a client
browsing a KPI wants it page by page, with what the producer sent (offset, source, unit,
dimensions). Kept beside the store rather than in it: the scorer never pages.

Pages are keyset pages over the series' total order, (observed_at, event_id): a page starts after
the last row of the previous one, so observations arriving meanwhile never shift or repeat rows.
Event ids compare by code point (Python sorts them), the order
`domain.kpi_series.Observation.order_key` uses.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from services.scoring.series_store import KpiReader, chunks_overlapping


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
    """Up to `limit` observations of the KPI in [start, end), after the cursor, oldest first.

    The series is stored in chunks (`services.scoring.series_store`) that may overlap in time (late
    events), so chunks are visited by their first time: once `limit` + 1 observations are held
    and the next chunk starts after the last of them, no later chunk can hold an earlier one.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    after_key = decode_series_cursor(after) if after is not None else None
    lower = start_us
    if after_key is not None:
        lower = after_key[0] if lower is None else max(lower, after_key[0])
    held: list[tuple[int, str, list[Any], str]] = []
    """(time, event id, the stored observation, its chunk's receipt time)."""
    for first_at_us, received_at, rows in _chunks(reader, kpi_key, lower, end_us):
        if len(held) > limit:
            held.sort(key=_order)
            del held[limit + 1 :]
            if first_at_us > held[limit][0]:
                break
        for row in rows:
            at_us, event_id = row[3], row[0]
            if (
                (start_us is None or at_us >= start_us)
                and (end_us is None or at_us < end_us)
                and (after_key is None or (at_us, event_id) > after_key)
            ):
                held.append((at_us, event_id, row, received_at))
    held.sort(key=_order)
    items = [_observation(row, received_at) for _, _, row, received_at in held[:limit]]
    more = len(held) > limit
    return SeriesPage(items, encode_series_cursor(items[-1].order_key) if more else None)


CHUNKS_A_QUERY = 64


def _order(held: tuple[int, str, list[Any], str]) -> tuple[int, str]:
    return held[0], held[1]


def _chunks(
    reader: KpiReader, kpi_key: str, lower_us: int | None, end_us: int | None
) -> Iterator[tuple[int, str, list[list[Any]]]]:
    """(first time, receipt time, rows) of the KPI's chunks that may hold observations in
    [lower, end), by first time; read `CHUNKS_A_QUERY` at a time (keyset), so a page near the
    start of a long series does not read all of it."""
    statement, params = chunks_overlapping(
        "chunk_id, first_at_us, received_at, rows", kpi_key, lower_us, end_us
    )
    last: tuple[int, int] | None = None
    while True:
        keyset = ""
        if last is not None:
            keyset = " AND (first_at_us > ? OR (first_at_us = ? AND chunk_id > ?))"
        query = reader.dialect.sql(statement + keyset + " ORDER BY first_at_us, chunk_id LIMIT ?")
        extra = [] if last is None else [last[0], last[0], last[1]]
        chunks = reader.query(query, [*params, *extra, CHUNKS_A_QUERY])
        for chunk in chunks:
            yield chunk["first_at_us"], chunk["received_at"], orjson.loads(chunk["rows"])
        if len(chunks) < CHUNKS_A_QUERY:
            return
        last = (chunks[-1]["first_at_us"], chunks[-1]["chunk_id"])


def _observation(row: list[Any], received_at: str) -> StoredObservation:
    event_id, value, observed_at, observed_at_us, source, unit, dimensions = row[:7]
    return StoredObservation(
        event_id=event_id,
        value=float(value),
        observed_at=datetime.fromisoformat(observed_at),
        observed_at_us=observed_at_us,
        source=source,
        unit=unit,
        dimensions=orjson.loads(dimensions),
        received_at=datetime.fromisoformat(received_at),
    )
