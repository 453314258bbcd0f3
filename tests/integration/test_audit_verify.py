"""Tamper evidence: edits, deletions and reorderings made directly in the store, and a forged
message on `okr.events`, are each found by `okr audit verify`, naming objective and version."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import date
from typing import Any
from uuid import UUID, uuid4

import httpx
import orjson
import pytest
from typer.testing import CliRunner, Result

from events import commands as wire
from events import topics
from events.okr import EventHeader, OkrEventEnvelope, okr_event, parse_okr_event
from events.okr import ProgressCheckedIn as ProgressCheckedInPayload
from services.audit.history import read_audit_history
from services.audit.verify import VerifyReport, verify
from services.cli.main import app as cli
from services.commands.application import OkrApplication
from services.http.app import create_app
from services.kafka.admin import ensure_topics
from services.relay.publisher import relay_once
from services.settings import Settings
from services.stores import is_postgres
from tests import seed
from tests.auth_support import auth_headers
from tests.kafka_support import produce, read_to_end
from tests.store_support import execute


@pytest.fixture
def application(store_settings: Settings) -> Iterator[OkrApplication]:
    application = OkrApplication(store_settings)
    yield application
    application.close()


def run(
    application: OkrApplication, objective_id: UUID, body: wire.CommandBody, **extra: Any
) -> None:
    application.handle(
        wire.Command(
            command_id=f"cmd-{uuid4()}",
            objective_id=objective_id,
            actor="alice",
            body=body,
            **extra,
        )
    )


def objective_with_history(application: OkrApplication, check_ins: int = 3) -> UUID:
    """An active objective at version 2 + `check_ins`: created, activated, checked in."""
    objective_id = uuid4()
    run(
        application,
        objective_id,
        wire.CreateObjective(
            title="Delight customers",
            owner="alice",
            team="care",
            period_start=date(2026, 7, 1),
            period_end=date(2026, 9, 30),
            key_results=[seed.NPS.as_definition()],
        ),
    )
    run(application, objective_id, wire.ActivateObjective())
    objective = application.get_objective(objective_id)
    assert objective is not None
    nps_id = objective.key_results[0].key_result_id
    for value in range(check_ins):
        run(application, objective_id, wire.CheckIn(key_result_id=nps_id, value=60.0 + value))
    return objective_id


# --- editing the store behind the application's back ------------------------------------------


def events_table(application: OkrApplication) -> str:
    return application.receipts.events_table_name


def stored_state(
    settings: Settings, table: str, objective_id: UUID, version: int
) -> dict[str, Any]:
    [(state,)] = execute(
        settings,
        f"SELECT state FROM {table} WHERE originator_id = ? AND originator_version = ?",
        *_key(settings, objective_id, version),
    )
    loaded = orjson.loads(bytes(state))
    assert isinstance(loaded, dict)
    return loaded


def _key(settings: Settings, objective_id: UUID, version: int) -> tuple[Any, int]:
    """SQLite keeps ids as hex text, PostgreSQL as uuid."""
    return (objective_id if is_postgres(settings.event_store_url) else objective_id.hex, version)


def rewrite_state(
    settings: Settings, table: str, objective_id: UUID, version: int, state: dict[str, Any]
) -> None:
    execute(
        settings,
        f"UPDATE {table} SET state = ? WHERE originator_id = ? AND originator_version = ?",
        orjson.dumps(state),
        *_key(settings, objective_id, version),
    )


def breaks_of(report: VerifyReport) -> set[tuple[str, UUID, int]]:
    return {(b.source, b.objective_id, b.version) for b in report.breaks}


# --- the store ----------------------------------------------------------------------------------


async def test_an_untouched_store_verifies_clean(
    store_settings: Settings, application: OkrApplication
) -> None:
    for _ in range(3):
        objective_with_history(application)

    report = await verify(store_settings, application, check_topic=False)

    assert report.intact, report.breaks
    assert (report.objectives, report.events) == (3, 15)


async def test_an_edited_event_is_named(
    store_settings: Settings, application: OkrApplication
) -> None:
    edited, untouched = objective_with_history(application), objective_with_history(application)
    table = events_table(application)
    state = stored_state(store_settings, table, edited, 3)
    state["value"] = 99.0  # a better check-in than the one recorded
    rewrite_state(store_settings, table, edited, 3, state)

    report = await verify(store_settings, OkrApplication(store_settings), check_topic=False)

    assert breaks_of(report) == {("event store", edited, 3)}
    assert untouched not in {b.objective_id for b in report.breaks}
    assert f"objective {edited} version 3" in str(report.breaks[0])


async def test_an_edit_with_its_hash_recomputed_breaks_the_next_link(
    store_settings: Settings, application: OkrApplication
) -> None:
    from domain.chain import EventRecord, chain_hash

    objective_id = objective_with_history(application)
    table = events_table(application)
    previous = stored_state(store_settings, table, objective_id, 2)["chain_hash"]
    state = stored_state(store_settings, table, objective_id, 3)
    state["actor"] = "mallory"
    state["chain_hash"] = chain_hash(
        previous, EventRecord.from_stored(objective_id, 3, "ProgressCheckedIn", state)
    )
    rewrite_state(store_settings, table, objective_id, 3, state)

    report = await verify(store_settings, OkrApplication(store_settings), check_topic=False)

    assert breaks_of(report) == {("event store", objective_id, 4)}


async def test_a_deleted_event_is_named(
    store_settings: Settings, application: OkrApplication
) -> None:
    objective_id = objective_with_history(application)
    execute(
        store_settings,
        f"DELETE FROM {events_table(application)}"
        " WHERE originator_id = ? AND originator_version = ?",
        *_key(store_settings, objective_id, 3),
    )

    report = await verify(store_settings, OkrApplication(store_settings), check_topic=False)

    assert breaks_of(report) == {("event store", objective_id, 3)}
    assert "missing" in report.breaks[0].problem


async def test_reordered_events_are_named(
    store_settings: Settings, application: OkrApplication
) -> None:
    objective_id = objective_with_history(application)
    table = events_table(application)
    third = stored_state(store_settings, table, objective_id, 3)
    fourth = stored_state(store_settings, table, objective_id, 4)
    rewrite_state(store_settings, table, objective_id, 3, fourth)
    rewrite_state(store_settings, table, objective_id, 4, third)

    report = await verify(store_settings, OkrApplication(store_settings), check_topic=False)

    assert {("event store", objective_id, 3), ("event store", objective_id, 4)} <= breaks_of(report)


async def test_an_edited_snapshot_is_named(store_settings: Settings) -> None:
    settings = store_settings.model_copy(update={"snapshot_interval": 4})
    application = OkrApplication(settings)
    objective_id = objective_with_history(application)  # version 5: a snapshot at 4
    assert application.snapshots is not None
    snapshots_table = application.snapshots.recorder.events_table_name  # type: ignore[attr-defined]
    [(state,)] = execute(settings, f"SELECT state FROM {snapshots_table}")
    snapshot = orjson.loads(bytes(state))
    snapshot["state"]["title"] = "Something else entirely"
    execute(settings, f"UPDATE {snapshots_table} SET state = ?", orjson.dumps(snapshot))

    report = await verify(settings, OkrApplication(settings), check_topic=False)

    assert breaks_of(report) == {("event store", objective_id, 4)}
    assert "snapshot" in report.breaks[0].problem


async def test_rows_that_no_longer_decode_are_named_not_crashed_on(
    store_settings: Settings,
) -> None:
    """An edit that breaks a row's JSON or its schema must not hide every other finding."""
    await ensure_topics(store_settings)
    settings = store_settings.model_copy(update={"snapshot_interval": 4})
    application = OkrApplication(settings)
    garbled, mistyped = objective_with_history(application), objective_with_history(application)
    await relay_once(settings, application)
    table = events_table(application)
    execute(
        settings,
        f"UPDATE {table} SET state = ? WHERE originator_id = ? AND originator_version = ?",
        b"not json",
        *_key(settings, garbled, 2),
    )
    rewrite_state(settings, table, mistyped, 3, {"actor": 5})
    assert application.snapshots is not None
    snapshots_table = application.snapshots.recorder.events_table_name  # type: ignore[attr-defined]
    execute(
        settings,
        f"UPDATE {snapshots_table} SET state = ? WHERE originator_id = ?",
        b"not json either",
        *_key(settings, mistyped, 0)[:1],
    )

    report = await verify(settings, OkrApplication(settings))

    assert {
        ("event store", garbled, 2),
        ("event store", mistyped, 3),
        ("event store", mistyped, 4),  # its snapshot
        ("okr.events", garbled, 2),
        ("okr.events", mistyped, 3),
    } <= breaks_of(report)
    assert any("snapshot unreadable" in b.problem for b in report.breaks)


async def test_a_row_whose_topic_names_another_class_is_named(
    store_settings: Settings, application: OkrApplication
) -> None:
    objective_id = objective_with_history(application, check_ins=0)
    execute(
        store_settings,
        f"UPDATE {events_table(application)} SET topic = ?"
        " WHERE originator_id = ? AND originator_version = ?",
        "events.okr:ObjectiveActivated",  # the wire payload of the same name
        *_key(store_settings, objective_id, 2),
    )

    report = await verify(store_settings, OkrApplication(store_settings), check_topic=False)

    assert breaks_of(report) == {("event store", objective_id, 2)}
    assert "names no domain event" in report.breaks[0].problem


async def test_events_stored_before_hashing_are_named_once_and_the_chain_goes_on(
    store_settings: Settings, application: OkrApplication
) -> None:
    objective_id = objective_with_history(application, check_ins=0)
    table = events_table(application)
    for version in (1, 2):  # as a store written before chain hashes existed holds them
        legacy = stored_state(store_settings, table, objective_id, version)
        del legacy["chain_hash"]
        rewrite_state(store_settings, table, objective_id, version, legacy)
    upgraded = OkrApplication(store_settings)
    objective = upgraded.get_objective(objective_id)
    assert objective is not None
    run(
        upgraded,
        objective_id,
        wire.CheckIn(key_result_id=objective.key_results[0].key_result_id, value=61),
    )

    report = await verify(store_settings, OkrApplication(store_settings), check_topic=False)

    assert [(b.version, b.problem) for b in report.breaks] == [
        (1, "has no chain hash"),
        (2, "has no chain hash"),
    ]


# --- the topic ------------------------------------------------------------------------------------


async def test_a_forged_event_on_the_topic_is_named(
    store_settings: Settings, application: OkrApplication
) -> None:
    await ensure_topics(store_settings)
    objective_id = objective_with_history(application)
    await relay_once(store_settings, application)
    clean = await verify(store_settings, application)
    assert clean.intact, clean.breaks
    assert clean.messages == 5

    objective = application.get_objective(objective_id)
    assert objective is not None
    first_key_result = objective.key_results[0].key_result_id

    def check_in(version: int, command_id: str, chain_hash: str) -> OkrEventEnvelope:
        """A check-in at 100 in the objective's name, at `version`, as no command made it."""
        return okr_event(
            ProgressCheckedInPayload(key_result_id=first_key_result, value=100),
            EventHeader(
                objective_id=objective_id,
                version=version,
                occurred_at=objective.modified_on,
                actor="alice",
                command_id=command_id,
                chain_hash=chain_hash,
            ),
        )

    forged = check_in(6, "forged", "f" * 64)
    rewritten = check_in(3, "forged-again", objective.chain_hash)
    key = str(objective_id).encode()
    await produce(
        store_settings,
        topics.EVENTS,
        [(key, forged.to_bytes(), []), (key, rewritten.to_bytes(), [])],
    )

    report = await verify(store_settings, application)

    assert breaks_of(report) == {("okr.events", objective_id, 6), ("okr.events", objective_id, 3)}
    assert report.messages == 7
    assert report.redeliveries == 0  # a different message at a version read before is no repeat


async def test_redeliveries_are_counted_and_named_not_broken(
    store_settings: Settings, application: OkrApplication
) -> None:
    """The relay is at-least-once: a message sent again (same objective, version and content)
    is not a break, but the report says why there are more messages than events."""
    await ensure_topics(store_settings)
    objective_id = objective_with_history(application)
    await relay_once(store_settings, application)
    published = await read_to_end(store_settings, topics.EVENTS)
    second, third = sorted(published, key=lambda r: parse_okr_event(r.value)[0].version)[1:3]
    await produce(
        store_settings,
        topics.EVENTS,
        [(r.key, r.value, []) for r in (second, third, third)],
    )

    report = await verify(store_settings, application)
    text = await asyncio.to_thread(okr_audit_verify, store_settings)
    as_json = await asyncio.to_thread(okr_audit_verify, store_settings, "--format", "json")

    assert report.intact, report.breaks
    assert (report.events, report.messages, report.redeliveries) == (5, 8, 3)
    assert text.exit_code == 0, text.output
    assert (
        "5 events, 0 snapshots, 8 messages on okr.events"
        " (3 redeliveries of an identical (objective, version)): intact"
    ) in text.output
    assert VerifyReport.model_validate_json(as_json.output).redeliveries == 3
    assert str(objective_id) not in text.output  # nothing to name: no break


# --- the command line -----------------------------------------------------------------------------


def okr_audit_verify(settings: Settings, *args: str) -> Result:
    """`okr audit verify`, in process (call it from a thread in async tests: it runs a loop)."""
    env = {
        "OKR_EVENT_STORE_URL": settings.event_store_url,
        "OKR_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "OKR_TOPIC_PREFIX": settings.topic_prefix,
    }
    return CliRunner().invoke(cli, ["audit", "verify", *args], env=env)


async def test_the_command_exits_non_zero_naming_objective_and_version(
    store_settings: Settings, application: OkrApplication
) -> None:
    await ensure_topics(store_settings)
    objective_id = objective_with_history(application)
    await relay_once(store_settings, application)

    clean = await asyncio.to_thread(okr_audit_verify, store_settings)
    assert clean.exit_code == 0, clean.output
    assert "intact" in clean.output

    table = events_table(application)
    state = stored_state(store_settings, table, objective_id, 4)
    state["reason"] = "nobody said this"
    rewrite_state(store_settings, table, objective_id, 4, state)
    broken = await asyncio.to_thread(okr_audit_verify, store_settings)
    as_json = await asyncio.to_thread(
        okr_audit_verify, store_settings, "--no-topic", "--format", "json"
    )

    assert broken.exit_code == 1
    # The store's copy no longer fits its chain, and the topic's copy no longer fits the store.
    assert f"event store: objective {objective_id} version 4:" in broken.output
    assert f"okr.events: objective {objective_id} version 4:" in broken.output
    assert as_json.exit_code == 1
    report = VerifyReport.model_validate_json(as_json.output)
    assert breaks_of(report) == {("event store", objective_id, 4)}


def test_the_command_says_when_kafka_cannot_be_checked(
    store_settings: Settings, application: OkrApplication
) -> None:
    objective_with_history(application, check_ins=0)
    unreachable = store_settings.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:1"})

    result = okr_audit_verify(unreachable)

    assert result.exit_code == 3, result.output
    assert "could not check okr.events" in result.output


# --- over HTTP ------------------------------------------------------------------------------------


async def test_the_auditor_verifies_over_http(
    store_settings: Settings, application: OkrApplication
) -> None:
    await ensure_topics(store_settings)
    objective_id = objective_with_history(application)
    await relay_once(store_settings, application)
    app = create_app(store_settings, application)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://okr") as http,
    ):
        clean = await http.get("/audit/verify", headers=auth_headers("auditor"))
        assert clean.status_code == 200, clean.text
        assert clean.json()["intact"] is True
        assert clean.json()["messages"] == 5
        assert clean.json()["redeliveries"] == 0

        execute(
            store_settings,
            f"DELETE FROM {events_table(application)}"
            " WHERE originator_id = ? AND originator_version = ?",
            *_key(store_settings, objective_id, 2),
        )
        application.evict([objective_id])
        broken = await http.get(
            "/audit/verify", params={"topic": "false"}, headers=auth_headers("auditor")
        )
        editor = await http.get("/audit/verify", headers=auth_headers("editor"))

    assert broken.status_code == 200
    assert broken.json()["intact"] is False
    assert broken.json()["messages"] is None
    assert broken.json()["redeliveries"] is None
    assert {(b["objective_id"], b["version"]) for b in broken.json()["breaks"]} == {
        (str(objective_id), 2)
    }
    assert editor.status_code == 403


async def test_verify_over_http_is_503_when_the_topic_cannot_be_read(
    store_settings: Settings, application: OkrApplication
) -> None:
    objective_with_history(application, check_ins=0)  # topics never created for this prefix
    app = create_app(store_settings, application)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://okr") as http:
        response = await http.get("/audit/verify", headers=auth_headers("auditor"))

    assert response.status_code == 503, response.text
    assert response.json()["error"] == "unavailable"


# --- the proof that goes with a history -----------------------------------------------------------


async def test_a_history_carries_its_chain_check(
    store_settings: Settings, application: OkrApplication
) -> None:
    objective_id = objective_with_history(application)
    objective = application.get_objective(objective_id)
    assert objective is not None

    clean = read_audit_history(application, objective_id, version=3)
    assert clean.integrity.model_dump() == {
        "intact": True,
        "events_checked": 5,  # the whole chain, not only the three versions listed
        "head_hash": objective.chain_hash,
        "breaks": [],
    }
    assert [d.chain_hash for d in clean.decisions] == [
        stored_state(store_settings, events_table(application), objective_id, v)["chain_hash"]
        for v in (1, 2, 3)
    ]

    table = events_table(application)
    state = stored_state(store_settings, table, objective_id, 5)
    state["value"] = 100.0
    rewrite_state(store_settings, table, objective_id, 5, state)
    reader = OkrApplication(store_settings)
    tampered = read_audit_history(reader, objective_id, version=3)
    shown = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["audit", "history", str(objective_id)],
        env={"OKR_EVENT_STORE_URL": store_settings.event_store_url},
    )

    assert (tampered.integrity.intact, tampered.integrity.breaks[0][:10]) == (False, "version 5:")
    assert "Hash chain: BROKEN (1)" in shown.output
    assert "version 5: content or position does not match its hash" in shown.output
