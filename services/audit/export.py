"""Every stored event in a time window, in store order, as JSON Lines or CSV: the auditor's copy.

Read from the event store's notification log a page at a time (never the whole store in memory),
up to the last notification stored when the export began, so a busy store cannot keep an export
running forever and two exports started after the same write agree. Each event is decoded with the
application's own mapper (upcasting old versions, as every reader does) and its payload is the
wire payload of `okr.events` (`services.relay.publisher.to_envelope`), the contract other teams
already read.

CSV is safe to open in a spreadsheet: a cell starting with `=`, `+`, `-`, `@`, a tab or a carriage
return (which Excel, LibreOffice and Google Sheets would run as a formula: CSV injection) is
prefixed with a single quote `'`, and so is a cell that already starts with one, so the escape is
reversible (`unescape_cell`) and a spreadsheet shows the original text. Every other cell is
verbatim: no HTML escaping, no trimming; quotes, commas and newlines are quoted per RFC 4180.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

import orjson
from pydantic import BaseModel, Field

from domain.errors import NaiveDatetimeError, RuleViolationError
from domain.objective_events import DomainEvent
from services.relay.publisher import to_envelope

if TYPE_CHECKING:
    from eventsourcing.persistence import Notification

    from services.commands.application import OkrApplication

NOTIFICATIONS_PAGE = 500
"""Notifications read per query."""


class ExportFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


MEDIA_TYPES = {ExportFormat.JSONL: "application/x-ndjson", ExportFormat.CSV: "text/csv"}


class ExportedEvent(BaseModel):
    """One line of a JSON Lines export, one row of a CSV export (`payload` as a JSON string)."""

    notification_id: int = Field(description="Position in the event store: the export's order.")
    objective_id: UUID
    version: int
    type: str = Field(description="Event type, e.g. 'ObjectiveCreated' (as on okr.events).")
    occurred_at: datetime
    actor: str
    command_id: str
    reason: str | None
    chain_hash: str | None = Field(description="Tamper-evidence hash; null before the chain.")
    payload: dict[str, Any] = Field(description="The event's own fields, as on okr.events.")


COLUMNS = tuple(ExportedEvent.model_fields)

FROM_ENVELOPE = set(COLUMNS) - {"notification_id"}
"""An exported event is its envelope on `okr.events` (`to_envelope`), less the `event_id` and
`schema_version` a reader of the store does not need, plus its place in the store."""


# --- reading --------------------------------------------------------------------------------------


def check_window(since: datetime | None, until: datetime | None) -> None:
    """Raises (422 through `services.commands.rejections`) for a naive bound, or since not before
    until."""
    for name, bound in (("since", since), ("until", until)):
        if bound is not None and (bound.tzinfo is None or bound.utcoffset() is None):
            raise NaiveDatetimeError(f"{name} {bound.isoformat()} has no time zone")
    if since is not None and until is not None and since >= until:
        raise RuleViolationError(
            f"since ({since.isoformat()}) must be before until ({until.isoformat()})"
        )


def export_end(application: OkrApplication) -> int:
    """The last notification id stored now: where an export that starts now stops."""
    return application.recorder.max_notification_id() or 0


def exported_pages(
    application: OkrApplication,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    stop: int | None = None,
    page_size: int | None = None,
) -> Iterator[list[ExportedEvent]]:
    """The events with `since <= occurred_at < until` (open bounds when None), in store order,
    up to notification `stop` (default: the last one stored when reading starts), a page at a time.

    Blocking: from async code, pull each page through `asyncio.to_thread`.
    """
    check_window(since, until)
    end = export_end(application) if stop is None else stop
    if end < 1:
        return
    pages = application.notification_pages(stop=end, page_size=page_size or NOTIFICATIONS_PAGE)
    for notifications in pages:
        page = [
            exported
            for notification in notifications
            if _within(exported := exported_event(application, notification), since, until)
        ]
        if page:
            yield page


def exported_event(application: OkrApplication, notification: Notification) -> ExportedEvent:
    event = cast(DomainEvent, application.mapper.to_domain_event(notification))
    envelope = to_envelope(event)
    return ExportedEvent(
        notification_id=notification.id, **envelope.model_dump(include=FROM_ENVELOPE)
    )


def _within(event: ExportedEvent, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or event.occurred_at >= since) and (
        until is None or event.occurred_at < until
    )


# --- rendering ------------------------------------------------------------------------------------


def header(export_format: ExportFormat) -> str:
    """What comes before the first page: the CSV header row; nothing for JSON Lines."""
    if export_format is ExportFormat.CSV:
        return _csv_rows([list(COLUMNS)])
    return ""


def render_page(page: Iterable[ExportedEvent], export_format: ExportFormat) -> str:
    if export_format is ExportFormat.JSONL:
        return "".join(event.model_dump_json() + "\n" for event in page)
    return _csv_rows([_csv_cells(event) for event in page])


def rendered(pages: Iterable[list[ExportedEvent]], export_format: ExportFormat) -> Iterator[str]:
    """The whole export as text chunks: the header, then one chunk per page."""
    if first := header(export_format):
        yield first
    for page in pages:
        yield render_page(page, export_format)


FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
ESCAPE = "'"


def spreadsheet_safe(cell: str) -> str:
    """A cell a spreadsheet shows as text: see the module docstring (CSV injection)."""
    return ESCAPE + cell if cell.startswith((*FORMULA_TRIGGERS, ESCAPE)) else cell


def unescape_cell(cell: str) -> str:
    """The original text of a cell written by `spreadsheet_safe`."""
    return cell.removeprefix(ESCAPE)


def _csv_cells(event: ExportedEvent) -> list[str]:
    values = event.model_dump(mode="json")
    values["payload"] = orjson.dumps(event.payload).decode()
    return [spreadsheet_safe(_text(values[column])) for column in COLUMNS]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _csv_rows(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()
