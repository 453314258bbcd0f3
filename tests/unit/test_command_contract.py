"""The command contract takes JSON types as they are, on okr.commands as over HTTP.

A string where a number belongs, a boolean, a moment or a Unix time where a day belongs: each is
the sender's mistake, named, never guessed into a value.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import uuid4

import pytest
from pydantic import ValidationError

from events.commands import CheckIn, Command, CreateObjective, KeyResultDefinition

KEY_RESULT = {"title": "Raise NPS to 80", "metric": "points", "baseline": 62, "target": 80}


def problems(model: type[Any], data: dict[str, Any]) -> set[tuple[str, str]]:
    with pytest.raises(ValidationError) as raised:
        model.model_validate(data)
    return {
        (str(error["type"]), ".".join(str(part) for part in error["loc"]))
        for error in raised.value.errors()
    }


def test_numbers_are_numbers_and_ints_are_numbers_too() -> None:
    key_result_id = uuid4()
    assert CheckIn.model_validate({"key_result_id": str(key_result_id), "value": 12}).value == 12.0
    for value in ("12", True, None, [12]):
        assert problems(CheckIn, {"key_result_id": str(key_result_id), "value": value}) == {
            ("float_type", "value")
        }
    assert problems(KeyResultDefinition, {**KEY_RESULT, "target": "80", "weight": False}) == {
        ("float_type", "target"),
        ("float_type", "weight"),
    }


@pytest.mark.parametrize(
    ("sent", "code"),
    [
        ("2026-10-01T00:00:00Z", "date_parsing"),
        ("2026-10-01T00:00:00", "date_parsing"),
        ("20261001", "date_parsing"),
        ("2026-W40-4", "date_parsing"),
        (1790812800, "date_type"),
        (True, "date_type"),
        (datetime(2026, 10, 1), "date_type"),
    ],
)
def test_days_are_yyyy_mm_dd(sent: Any, code: str) -> None:
    body = {
        "title": "Delight customers",
        "owner": "alice",
        "team": "care",
        "period_start": sent,
        "period_end": "2026-12-31",
        "key_results": [{**KEY_RESULT, "deadline": sent}],
    }
    with pytest.raises(ValidationError) as raised:
        CreateObjective.model_validate(body)
    errors = raised.value.errors()
    assert {(error["type"], ".".join(map(str, error["loc"]))) for error in errors} == {
        (code, "period_start"),
        (code, "key_results.0.deadline"),
    }
    assert all("YYYY-MM-DD" in error["msg"] for error in errors)


def test_a_day_that_does_not_exist_is_refused() -> None:
    assert problems(KeyResultDefinition, {**KEY_RESULT, "deadline": "2026-02-30"}) == {
        ("date_from_datetime_parsing", "deadline")
    }


def test_a_day_as_yyyy_mm_dd_or_a_date_is_taken() -> None:
    body = {
        "title": "Delight customers",
        "owner": "alice",
        "team": "care",
        "period_start": "2026-10-01",
        "period_end": date(2026, 12, 31),
        "key_results": [KEY_RESULT],
    }
    created = CreateObjective.model_validate(body)
    assert (created.period_start, created.period_end) == (date(2026, 10, 1), date(2026, 12, 31))


def test_the_envelopes_version_is_an_integer() -> None:
    envelope = {
        "command_id": "c-1",
        "objective_id": str(uuid4()),
        "body": {"type": "activate_objective"},
    }
    assert Command.model_validate({**envelope, "expected_version": 3}).expected_version == 3
    for version in ("3", 3.0, True):
        assert problems(Command, {**envelope, "expected_version": version}) == {
            ("int_type", "expected_version")
        }
