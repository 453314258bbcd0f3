"""`okr audit export` and `services.audit.export`, on SQLite and PostgreSQL event stores.

Promised: every stored event whose time is in [since, until), all objectives, in store order, one
JSON line or CSV row each; hostile text (markup, formulas, commas, quotes, newlines) comes back
verbatim from JSON Lines and, after undoing the one-quote formula escape, from CSV; the export
stops at the last event stored when it began and reads the store a page at a time.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from uuid import uuid4

import pytest
from typer.testing import CliRunner

from domain.objective_events import DomainEvent
from events import commands as wire
from services.audit import export as audit_export
from services.audit.export import (
    COLUMNS,
    FORMULA_TRIGGERS,
    ExportedEvent,
    exported_pages,
    unescape_cell,
)
from services.cli.main import app as cli
from services.relay.publisher import to_envelope
from services.settings import Settings
from tests.audit_support import (
    DAY,
    FORMULA_ACTOR,
    FORMULA_COMMAND,
    FORMULA_REASON,
    HOSTILE_TITLE,
    MOMENTS,
    Ledger,
)


def okr(settings: Settings, *args: str) -> Any:
    return CliRunner().invoke(
        cli, ["audit", "export", *args], env={"OKR_EVENT_STORE_URL": settings.event_store_url}
    )


def expected_events(ledger: Ledger) -> list[ExportedEvent]:
    """Built independently of the export: the notification log, read whole, through the relay's
    translation."""
    notifications = ledger.application.recorder.select_notifications(start=None, limit=1000)
    expected = []
    for notification in notifications:
        event = cast(DomainEvent, ledger.application.mapper.to_domain_event(notification))
        envelope = to_envelope(event)
        expected.append(
            ExportedEvent(
                notification_id=notification.id,
                chain_hash=event.chain_hash or None,
                **envelope.model_dump(
                    include={
                        "objective_id",
                        "version",
                        "type",
                        "occurred_at",
                        "actor",
                        "command_id",
                        "reason",
                        "payload",
                    }
                ),
            )
        )
    return expected


def jsonl(text: str) -> list[ExportedEvent]:
    assert text.endswith("\n") or text == ""
    return [ExportedEvent.model_validate_json(line) for line in text.splitlines()]


def csv_rows(text: str) -> list[dict[str, str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    assert tuple(header) == COLUMNS
    return [dict(zip(header, row, strict=True)) for row in reader]


def from_csv(row: dict[str, str]) -> ExportedEvent:
    """CSV back to the model: undo the formula escape, empty cells are nulls, payload is JSON."""
    values: dict[str, Any] = {name: unescape_cell(cell) or None for name, cell in row.items()}
    values["payload"] = json.loads(values["payload"])
    return ExportedEvent.model_validate(values)


# --- JSON Lines -----------------------------------------------------------------------------------


def test_jsonl_is_every_event_in_store_order(ledger: Ledger, store_settings: Settings) -> None:
    result = okr(store_settings)
    assert result.exit_code == 0, result.output
    exported = jsonl(result.stdout)
    assert exported == expected_events(ledger)
    assert [(e.objective_id, e.version) for e in exported] == [
        *((ledger.a, v) for v in range(1, 7)),
        (ledger.b, 1),
    ]
    ids = [e.notification_id for e in exported]
    assert ids == sorted(ids)
    created, closed = exported[0], exported[5]
    assert created.payload["title"] == HOSTILE_TITLE
    assert (closed.actor, closed.command_id, closed.reason) == (
        FORMULA_ACTOR,
        FORMULA_COMMAND,
        FORMULA_REASON,
    )
    assert closed.payload["retrospective"] == "<b>bold</b> & 'quoted'"


def test_the_window_includes_since_and_excludes_until(
    ledger: Ledger, store_settings: Settings
) -> None:
    everything = expected_events(ledger)
    windows = [
        ((MOMENTS[2], MOMENTS[5]), [3, 4, 5]),
        ((MOMENTS[2] - DAY / 2, MOMENTS[5] + DAY / 2), [3, 4, 5, 6]),
        ((MOMENTS[5], None), [6, 7]),
        ((None, MOMENTS[1]), [1]),
        ((MOMENTS[6] + DAY, None), []),
    ]
    for (since, until), positions in windows:
        args = []
        if since is not None:
            args += ["--since", since.isoformat()]
        if until is not None:
            args += ["--until", until.isoformat()]
        result = okr(store_settings, *args)
        assert result.exit_code == 0, (args, result.output)
        assert jsonl(result.stdout) == [everything[p - 1] for p in positions], args


def test_refusals(ledger: Ledger, store_settings: Settings) -> None:
    for args in (
        ("--since", "2026-07-03T12:00:00"),
        ("--until", "tomorrow"),
        ("--since", MOMENTS[3].isoformat(), "--until", MOMENTS[2].isoformat()),
        ("--since", MOMENTS[3].isoformat(), "--until", MOMENTS[3].isoformat()),
        ("--format", "xml"),
    ):
        result = okr(store_settings, *args)
        assert result.exit_code == 2, (args, result.output)


# --- CSV ------------------------------------------------------------------------------------------


def test_csv_round_trips_and_is_safe_in_a_spreadsheet(
    ledger: Ledger, store_settings: Settings
) -> None:
    result = okr(store_settings, "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = csv_rows(result.stdout)
    assert [from_csv(row) for row in rows] == expected_events(ledger)
    for row in rows:
        for cell in row.values():
            assert not cell.startswith(FORMULA_TRIGGERS), cell
    closed = rows[5]
    assert closed["actor"] == "'" + FORMULA_ACTOR
    assert closed["command_id"] == "'" + FORMULA_COMMAND
    assert closed["reason"] == "'" + FORMULA_REASON
    assert json.loads(rows[0]["payload"])["title"] == HOSTILE_TITLE


def test_output_file_holds_what_stdout_gets(
    ledger: Ledger, store_settings: Settings, tmp_path: Path
) -> None:
    for export_format in ("jsonl", "csv"):
        target = tmp_path / f"events.{export_format}"
        to_file = okr(store_settings, "--format", export_format, "--output", str(target))
        assert to_file.exit_code == 0, to_file.output
        to_stdout = okr(store_settings, "--format", export_format)
        assert target.read_bytes() == to_stdout.stdout_bytes
        assert f"wrote {target}" in to_file.stderr


def test_a_failed_export_leaves_no_partial_file(
    ledger: Ledger, store_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def first_page_then_outage(application: Any, **window: Any) -> Iterator[Any]:
        yield next(iter(exported_pages(application, page_size=2, **window)))
        raise OSError("the store went away")

    monkeypatch.setattr(audit_export, "exported_pages", first_page_then_outage)
    exports = tmp_path / "exports"
    exports.mkdir()
    target = exports / "events.jsonl"

    failed = okr(store_settings, "--output", str(target))

    assert failed.exit_code != 0
    assert list(exports.iterdir()) == []  # neither the target nor a temporary file


# --- paging and the end of an export --------------------------------------------------------------


def test_small_pages_change_nothing(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    everything = expected_events(ledger)
    pages = list(exported_pages(ledger.application, page_size=2))
    assert [len(page) for page in pages] == [2, 2, 2, 1]
    assert [e for page in pages for e in page] == everything
    monkeypatch.setattr(audit_export, "NOTIFICATIONS_PAGE", 3)
    windowed = list(exported_pages(ledger.application, since=MOMENTS[1], until=MOMENTS[6]))
    assert [len(page) for page in windowed] == [2, 3]  # pages of 3 notifications, filtered
    assert [e for page in windowed for e in page] == everything[1:6]


def test_an_export_ends_where_the_store_was_when_it_began(ledger: Ledger) -> None:
    pages = exported_pages(ledger.application, page_size=2)
    first = next(pages)
    result = ledger.application.handle(
        wire.Command(
            command_id=str(uuid4()),
            objective_id=ledger.b,
            actor="alice",
            body=wire.ActivateObjective(),
        )
    )
    assert result.status == "accepted"
    exported = first + [e for page in pages for e in page]
    assert exported == expected_events(ledger)[:7]
    assert len(expected_events(ledger)) == 8
