"""`okr audit history` and `services.audit.history`, on SQLite and PostgreSQL event stores.

The ledger (`tests.audit_support`) has hand-worked scores per version. Promised: every decision up
to the asked version or moment, each with actor, reason, command and the fields it changed; the
state and scores at that point, equal to the as-of rebuild of `services.audit.past_states`; the
same field
changes the read API's history shows (one diff, the projector's); refusals through the error table.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, cast
from uuid import uuid4

import pytest
from typer.testing import CliRunner

import services.audit.history
from domain.errors import NaiveDatetimeError, ObjectiveNotFoundError
from domain.objective_events import DomainEvent
from events import commands as wire
from projections.projector import Message, apply_batch
from projections.views import AuditRow
from services.audit.history import AuditHistory, read_audit_history
from services.audit.past_state_view import as_of_body
from services.audit.past_states import ObjectiveNotFoundAsOfError, objective_as_of
from services.cli.main import app as cli
from services.projector_service import open_read_store
from services.relay.publisher import to_envelope
from services.settings import Settings
from tests.audit_support import (
    DAY,
    FORMULA_ACTOR,
    FORMULA_COMMAND,
    FORMULA_REASON,
    HOSTILE_TITLE,
    MOMENTS,
    SCORES,
    TARGET_REASON,
    Ledger,
)


def stored_events(ledger: Ledger) -> list[DomainEvent]:
    return [cast(DomainEvent, e) for e in ledger.application.events.get(ledger.a)]


# --- services.audit.history -----------------------------------------------------------------------


def test_every_decision_with_who_when_why_and_what_changed(ledger: Ledger) -> None:
    found = read_audit_history(ledger.application, ledger.a)
    decisions = found.decisions
    assert [d.version for d in decisions] == [1, 2, 3, 4, 5, 6]
    assert [d.event_type for d in decisions] == [
        "ObjectiveCreated",
        "ObjectiveActivated",
        "ProgressCheckedIn",
        "ProgressCheckedIn",
        "KeyResultRevised",
        "ObjectiveClosed",
    ]
    assert [d.occurred_at for d in decisions] == MOMENTS[:6]
    assert [d.objective_score for d in decisions] == SCORES
    assert [d.reason for d in decisions] == [None] * 4 + [TARGET_REASON, FORMULA_REASON]
    assert (decisions[5].actor, decisions[5].command_id) == (FORMULA_ACTOR, FORMULA_COMMAND)
    stored = stored_events(ledger)
    assert [d.command_id for d in decisions] == [e.command_id for e in stored]
    assert [d.chain_hash for d in decisions] == [e.chain_hash or None for e in stored]

    def changes(version: int) -> dict[str, tuple[Any, Any]]:
        return {c.field: (c.before, c.after) for c in decisions[version - 1].changes}

    sales = f"key_results[{ledger.sales_id}]"
    nps = f"key_results[{ledger.nps_id}]"
    assert changes(1)["title"] == (None, HOSTILE_TITLE)
    assert changes(1)[f"{sales}.target"] == (None, 1300.0)
    assert changes(2) == {"status": ("draft", "active")}
    assert changes(3) == {f"{nps}.current": (None, 71.0)}
    assert changes(5) == {
        f"{sales}.target": (1300.0, 1200.0),
        f"{sales}.relative_target": ("+30%", None),
    }
    assert changes(6)["status"] == ("active", "closed")
    assert changes(6)["final_score"] == (None, 200 / 3)


def test_the_state_is_the_as_of_rebuild_of_the_last_decision(ledger: Ledger) -> None:
    found = read_audit_history(ledger.application, ledger.a)
    latest = objective_as_of(ledger.application, ledger.a, version=6)
    assert latest is not None
    assert found.state == as_of_body(latest)
    assert (found.state.version, found.state.status, found.state.score) == (6, "closed", 200 / 3)
    assert found.state.title == HOSTILE_TITLE
    assert (found.requested_as_of, found.requested_version) == (None, None)


def test_up_to_a_version_or_a_moment(ledger: Ledger) -> None:
    at_four = read_audit_history(ledger.application, ledger.a, version=4)
    assert [d.version for d in at_four.decisions] == [1, 2, 3, 4]
    assert (at_four.state.version, at_four.state.score, at_four.requested_version) == (4, 50, 4)
    sales = next(kr for kr in at_four.state.key_results if kr.key_result_id == ledger.sales_id)
    assert (sales.target, sales.current, sales.score) == (1300, 1150, 50)

    moment = MOMENTS[2] + DAY / 2
    at_moment = read_audit_history(ledger.application, ledger.a, as_of=moment)
    assert [d.version for d in at_moment.decisions] == [1, 2, 3]
    assert (at_moment.state.version, at_moment.state.score) == (3, 50 / 3)
    assert at_moment.requested_as_of == moment
    assert at_moment.decisions == read_audit_history(ledger.application, ledger.a).decisions[:3]


def test_reading_in_small_pages_changes_nothing(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = read_audit_history(ledger.application, ledger.a)
    monkeypatch.setattr(services.audit.history, "EVENTS_PAGE", 2)
    assert read_audit_history(ledger.application, ledger.a) == whole
    assert (
        read_audit_history(ledger.application, ledger.a, version=5).decisions == whole.decisions[:5]
    )


def test_refusals(ledger: Ledger) -> None:
    with pytest.raises(ObjectiveNotFoundError):
        read_audit_history(ledger.application, uuid4())
    with pytest.raises(ObjectiveNotFoundError):
        read_audit_history(ledger.application, uuid4(), version=1)
    with pytest.raises(ObjectiveNotFoundAsOfError):
        read_audit_history(ledger.application, ledger.a, version=7)
    with pytest.raises(ObjectiveNotFoundAsOfError):
        read_audit_history(ledger.application, ledger.a, as_of=MOMENTS[0] - timedelta(seconds=1))
    with pytest.raises(NaiveDatetimeError):
        read_audit_history(ledger.application, ledger.a, as_of=datetime(2026, 7, 3, 12))
    with pytest.raises(TypeError):
        read_audit_history(ledger.application, ledger.a, as_of=MOMENTS[1], version=2)


def test_changes_are_those_the_read_api_history_shows(
    ledger: Ledger, store_settings: Settings
) -> None:
    """One diff: the projector folding the same events records the same changes per version."""
    envelopes = [to_envelope(e) for e in stored_events(ledger)]
    messages = [Message("okr.events", 0, n, e.to_bytes()) for n, e in enumerate(envelopes)]
    store = open_read_store(store_settings)
    try:
        report = apply_batch(store, messages)
        assert report.applied == len(messages)
        projected = store.history(ledger.a)
    finally:
        store.close()
    found = read_audit_history(ledger.application, ledger.a)
    audited = [
        AuditRow.model_validate(d.model_dump(include=set(AuditRow.model_fields)))
        for d in found.decisions
    ]
    assert audited == projected


# --- okr audit history ----------------------------------------------------------------------------


def okr(settings: Settings, *args: str) -> Any:
    return CliRunner().invoke(
        cli, ["audit", *args], env={"OKR_EVENT_STORE_URL": settings.event_store_url}
    )


def test_cli_table_shows_state_decisions_and_changes(
    ledger: Ledger, store_settings: Settings
) -> None:
    result = okr(store_settings, "history", str(ledger.a))
    assert result.exit_code == 0, result.output
    out = result.output
    # JSON-quoted, control characters escaped: markup verbatim, no raw newline or escape.
    assert json.dumps(HOSTILE_TITLE) in out
    assert "\x1b" not in out
    assert "status closed" in out and "score 66.67" in out
    assert f"key_results[{ledger.sales_id}].target: 1300.0 -> 1200.0" in out
    assert f"reason: {json.dumps(TARGET_REASON)}" in out
    assert f'by "{FORMULA_ACTOR}"' in out
    for version in range(1, 7):
        assert f"  v{version}  {MOMENTS[version - 1].isoformat()}" in out
    assert "  v7  " not in out


def test_cli_table_order_is_the_one_documented(ledger: Ledger, store_settings: Settings) -> None:
    """The README describes the table in this order: the state, its key results, the hash chain,
    then each decision oldest first (its line with the score, reason, changes, chain hash)."""
    result = okr(store_settings, "history", str(ledger.a))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()

    def first(start: str) -> int:
        return next(i for i, line in enumerate(lines) if line.strip().startswith(start))

    sections = ["Objective ", "Key results at version 6", "Hash chain: intact", "Decisions (6)"]
    assert sorted(map(first, sections)) == list(map(first, sections))
    revised = first("v5 ")
    assert "KeyResultRevised" in lines[revised] and "  score " in lines[revised]
    assert lines[revised + 1] == f"      reason: {json.dumps(TARGET_REASON)}"
    assert f"key_results[{ledger.sales_id}].target: 1300.0 -> 1200.0" in lines[revised + 2]
    assert lines[first("v6 ") - 1].startswith("      chain ")
    assert [first(f"v{version} ") for version in range(1, 7)] == sorted(
        first(f"v{version} ") for version in range(1, 7)
    )


def test_cli_json_is_the_documented_model(ledger: Ledger, store_settings: Settings) -> None:
    for args, expected in (
        ((), read_audit_history(ledger.application, ledger.a)),
        (("--version", "4"), read_audit_history(ledger.application, ledger.a, version=4)),
        (
            ("--as-of", (MOMENTS[2] + DAY / 2).isoformat()),
            read_audit_history(ledger.application, ledger.a, as_of=MOMENTS[2] + DAY / 2),
        ),
    ):
        result = okr(store_settings, "history", str(ledger.a), "--format", "json", *args)
        assert result.exit_code == 0, result.output
        assert AuditHistory.model_validate_json(result.stdout) == expected


def test_cli_table_at_a_version_and_a_moment(ledger: Ledger, store_settings: Settings) -> None:
    result = okr(store_settings, "history", str(ledger.a), "--version", "4")
    assert result.exit_code == 0, result.output
    assert "  v4  " in result.output and "  v5  " not in result.output
    assert "at version 4 (asked)" in result.output
    moment = (MOMENTS[2] + DAY / 2).isoformat()
    result = okr(store_settings, "history", str(ledger.a), "--as-of", moment)
    assert result.exit_code == 0, result.output
    assert "  v3  " in result.output and "  v4  " not in result.output
    assert f"as of {moment} (asked)" in result.output


def test_a_comment_is_listed_with_what_it_says(ledger: Ledger, store_settings: Settings) -> None:
    """Objective b is a draft at version 1: a comment is its version 2 and changes no score."""
    b = ledger.application.get_objective(ledger.b)
    assert b is not None
    key_result_id = b.key_results[0].key_result_id
    result = ledger.application.handle(
        wire.Command(
            command_id="comment-1",
            objective_id=ledger.b,
            actor="carol",
            body=wire.CommentKeyResult(key_result_id=key_result_id, text="Survey slips a week"),
        )
    )
    assert (result.status, result.version) == ("accepted", 2)

    found = read_audit_history(ledger.application, ledger.b)
    commented = found.decisions[-1]
    assert (commented.version, commented.event_type, commented.actor) == (
        2,
        "KeyResultCommented",
        "carol",
    )
    assert [(c.field, c.before, c.after) for c in commented.changes] == [
        (f"key_results[{key_result_id}].comment", None, "Survey slips a week")
    ]
    assert commented.objective_score == found.decisions[0].objective_score
    out = okr(store_settings, "history", str(ledger.b)).output
    assert "  v2  " in out and "KeyResultCommented" in out and 'by "carol"' in out
    assert f'key_results[{key_result_id}].comment: null -> "Survey slips a week"' in out


def test_cli_refusals(ledger: Ledger, store_settings: Settings) -> None:
    objective = str(ledger.a)
    usage_errors = (
        ("history", objective, "--as-of", MOMENTS[1].isoformat(), "--version", "2"),
        ("history", objective, "--as-of", "2026-07-03T12:00:00"),
        ("history", objective, "--as-of", "yesterday"),
        ("history", objective, "--version", "0"),
        ("history", objective, "--version", str(2**63)),  # above MAX_VERSION
        ("history", "not-a-uuid"),
    )
    for args in usage_errors:
        result = okr(store_settings, *args)
        assert result.exit_code == 2, (args, result.output)
    for args in (("history", str(uuid4())), ("history", objective, "--version", "7")):
        result = okr(store_settings, *args)
        assert result.exit_code == 1, (args, result.output)
        assert "objective_not_found" in result.stderr
