"""What the audit tools write, without a store: CSV and JSON Lines round-trip any text, CSV never
starts a cell the way a spreadsheet formula does, the terminal never gets a control character, and
a bad export window is refused through the one error table."""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import NaiveDatetimeError, RuleViolationError
from services.audit.export import (
    COLUMNS,
    FORMULA_TRIGGERS,
    ExportedEvent,
    ExportFormat,
    check_window,
    rendered,
    spreadsheet_safe,
    unescape_cell,
)
from services.cli.audit import shown
from services.commands.rejections import reject

TEXT = st.text(min_size=1, max_size=40)
"""Any Unicode text: markup, quotes, commas, CR/LF, NUL, tabs and formula characters included."""


@given(st.text())
def test_spreadsheet_escape_is_reversible_and_never_starts_a_formula(cell: str) -> None:
    safe = spreadsheet_safe(cell)
    assert unescape_cell(safe) == cell
    assert not safe.startswith(FORMULA_TRIGGERS)
    if not cell.startswith((*FORMULA_TRIGGERS, "'")):
        assert safe == cell  # everything else verbatim


def event(actor: str, command_id: str, reason: str | None, title: str) -> ExportedEvent:
    return ExportedEvent(
        notification_id=7,
        objective_id=uuid4(),
        version=3,
        type="ObjectiveRevised",
        occurred_at=datetime(2026, 7, 1, 9, tzinfo=UTC),
        actor=actor,
        command_id=command_id,
        reason=reason,
        chain_hash="ab" * 32,
        payload={"title": title},
    )


@given(TEXT, TEXT, st.none() | TEXT, st.text())
def test_csv_round_trips_any_text(
    actor: str, command_id: str, reason: str | None, title: str
) -> None:
    written = event(actor, command_id, reason, title)
    text = "".join(rendered([[written, written]], ExportFormat.CSV))
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == COLUMNS
    assert len(rows) == 3
    for row in rows[1:]:
        values: dict[str, Any] = {
            name: unescape_cell(cell) or None for name, cell in zip(COLUMNS, row, strict=True)
        }
        values["payload"] = json.loads(values["payload"])
        assert ExportedEvent.model_validate(values) == written
        assert not any(cell.startswith(FORMULA_TRIGGERS) for cell in row)


@given(TEXT, TEXT, st.none() | TEXT, st.text())
def test_jsonl_round_trips_any_text(
    actor: str, command_id: str, reason: str | None, title: str
) -> None:
    written = event(actor, command_id, reason, title)
    text = "".join(rendered([[written], [written]], ExportFormat.JSONL))
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) == 3
    assert [ExportedEvent.model_validate_json(line) for line in lines[:-1]] == [written, written]


@given(st.text())
def test_terminal_text_has_no_control_characters_and_reads_back(value: str) -> None:
    text = shown(value)
    assert not any(unicodedata.category(char) in ("Cc", "Cf") for char in text)
    assert json.loads(text) == value


def test_a_bad_window_is_refused_with_422() -> None:
    aware = datetime(2026, 7, 1, tzinfo=UTC)
    naive = datetime(2026, 7, 1)
    with pytest.raises(NaiveDatetimeError) as naive_error:
        check_window(naive, None)
    with pytest.raises(NaiveDatetimeError):
        check_window(None, naive)
    with pytest.raises(RuleViolationError) as order_error:
        check_window(aware, aware)
    for error in (naive_error.value, order_error.value):
        assert reject(error).status == 422
    check_window(None, None)
    check_window(aware, None)
