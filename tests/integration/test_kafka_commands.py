"""The Kafka command path against the real broker: commands in, results or dead letters out.

Each test runs `run_command_consumer` as a task on its own topics, produces raw messages with
aiokafka and reads `okr.command-results` / `okr.dlq` back from the beginning until what it waits
for is there (or a deadline passes). The accepted / rejected / duplicate cases run on both event
stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from events import okr, topics
from events.commands import Command, CommandResult
from events.dead_letters import DeadLetter
from services.commands.application import OkrApplication
from services.commands.consumer import GROUP_ID, run_command_consumer
from services.kafka.admin import ensure_topics
from services.settings import Settings
from tests import seed
from tests.auth_support import KAFKA_PRINCIPAL, principal_headers
from tests.kafka_support import (
    Headers,
    Message,
    committed_offsets,
    end_offsets,
    produce,
    read_to_end,
    read_until,
    running,
)

# --- helpers


def new_id() -> str:
    return str(uuid.uuid4())


def good_objective(objective_id: str, title: str = "Delight our customers") -> dict[str, Any]:
    return {
        "type": "create_objective",
        "objective_id": objective_id,
        "title": title,
        "owner": "alice",
        "team": "growth",
        "period_start": seed.QUARTER_START.isoformat(),
        "period_end": seed.QUARTER_END.isoformat(),
        "key_results": [seed.NPS.as_json()],
    }


def command(
    body: dict[str, Any],
    *,
    command_id: str | None = None,
    objective_id: str | None = None,
    expected_version: int | None = None,
    **envelope: Any,
) -> dict[str, Any]:
    """An envelope without `actor`: the sender's principal header names it."""
    return {
        "command_id": command_id or new_id(),
        "objective_id": objective_id,
        "expected_version": expected_version,
        "body": body,
        **envelope,
    }


def encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message)


async def send_commands(
    settings: Settings, *messages: dict[str, Any], headers: Headers | None = None
) -> list[Any]:
    """Commands keyed by their objective (the body's for a creation), sent by the allow-listed
    principal unless `headers` say otherwise, as senders do."""
    sent_headers = principal_headers() if headers is None else headers
    keyed: list[Message] = []
    for message in messages:
        key: str | None = message["objective_id"] or message["body"].get("objective_id")
        keyed.append((key.encode() if key is not None else None, encode(message), sent_headers))
    return await produce(settings, topics.COMMANDS, keyed)


def results_of(records: list[Any]) -> dict[str, list[CommandResult]]:
    by_id: dict[str, list[CommandResult]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        result = CommandResult.model_validate_json(record.value)
        assert record.key.decode() == result.command_id, "results are keyed by command id"
        by_id[result.command_id].append(result)
    return by_id


async def wait_for_results(
    settings: Settings,
    task: asyncio.Task[None],
    expected: dict[str, int],
) -> dict[str, list[CommandResult]]:
    """Results by command id, once each id in `expected` has at least that many."""

    def done(records: list[Any]) -> bool:
        found = results_of(records)
        return all(len(found.get(id_, [])) >= n for id_, n in expected.items())

    return results_of(await read_until(settings, topics.COMMAND_RESULTS, done, watch=task))


async def result_of(settings: Settings, task: asyncio.Task[None], command_id: str) -> CommandResult:
    [result] = (await wait_for_results(settings, task, {command_id: 1}))[command_id]
    return result


def consumer_running(
    settings: Settings, application: OkrApplication
) -> contextlib.AbstractAsyncContextManager[asyncio.Task[None]]:
    return running(run_command_consumer(settings, application))


async def event_count(application: OkrApplication) -> int:
    return await asyncio.to_thread(application.last_notification_id)


# --- fixtures


@pytest.fixture
async def topics_ready(settings: Settings) -> None:
    await ensure_topics(settings)


@pytest.fixture
def application(store_settings: Settings, topics_ready: None) -> Iterator[OkrApplication]:
    app = OkrApplication(store_settings)
    yield app
    app.close()


@pytest.fixture
def sqlite_application(settings: Settings, topics_ready: None) -> Iterator[OkrApplication]:
    app = OkrApplication(settings)
    yield app
    app.close()


# --- accepted, rejected, duplicate (both stores)


async def test_accepted_commands_report_the_version_they_produced(
    store_settings: Settings, application: OkrApplication
) -> None:
    objective_id = new_id()
    create = command(good_objective(objective_id))
    activate = command({"type": "activate_objective"}, objective_id=objective_id)
    async with consumer_running(store_settings, application) as task:
        await send_commands(store_settings, create, activate)
        created = await result_of(store_settings, task, create["command_id"])
        activated = await result_of(store_settings, task, activate["command_id"])
        objective = await asyncio.to_thread(application.get_objective, uuid.UUID(objective_id))
        assert objective is not None
        check_in = command(
            {
                "type": "check_in",
                "key_result_id": str(objective.key_results[0].key_result_id),
                "value": 60,
            },
            objective_id=objective_id,
            expected_version=2,
        )
        await send_commands(store_settings, check_in)
        checked_in = await result_of(store_settings, task, check_in["command_id"])

    assert (created.status, created.version, created.events) == (
        "accepted",
        1,
        ["ObjectiveCreated"],
    )
    assert str(created.objective_id) == objective_id
    assert (activated.status, activated.version) == ("accepted", 2)
    assert (checked_in.status, checked_in.version) == ("accepted", 3)
    assert checked_in.events == ["ProgressCheckedIn"]
    assert not any(r.replayed for r in (created, activated, checked_in))
    objective = await asyncio.to_thread(application.get_objective, uuid.UUID(objective_id))
    assert objective is not None and objective.key_results[0].current == 60
    assert await event_count(application) == 3
    stored = await asyncio.to_thread(list, application.events.get(uuid.UUID(objective_id)))
    assert {event.actor for event in stored} == {KAFKA_PRINCIPAL}, "the sender is the actor"


async def test_a_comment_sent_on_kafka_is_recorded_and_a_finished_objective_refuses_one(
    settings: Settings, sqlite_application: OkrApplication
) -> None:
    objective_id = new_id()
    create = command(good_objective(objective_id))
    archive = command({"type": "archive_objective"}, objective_id=objective_id, reason="dropped")
    async with consumer_running(settings, sqlite_application) as task:
        await send_commands(settings, create)
        await result_of(settings, task, create["command_id"])
        found = await asyncio.to_thread(sqlite_application.get_objective, uuid.UUID(objective_id))
        assert found is not None
        comment = {
            "type": "comment_key_result",
            "key_result_id": str(found.key_results[0].key_result_id),
            "text": "Sent by the survey service",
        }
        first = command(comment, objective_id=objective_id)
        late = command(comment, objective_id=objective_id)
        await send_commands(settings, first, archive, late)
        results = await wait_for_results(
            settings, task, {first["command_id"]: 1, late["command_id"]: 1}
        )

    [commented], [refused] = results[first["command_id"]], results[late["command_id"]]
    assert (commented.status, commented.version, commented.events) == (
        "accepted",
        2,
        ["KeyResultCommented"],
    )
    assert (refused.status, refused.error) == ("rejected", "invalid_transition")
    stored = await asyncio.to_thread(list, sqlite_application.events.get(uuid.UUID(objective_id)))
    assert [type(event).__name__ for event in stored] == [
        "ObjectiveCreated",
        "KeyResultCommented",
        "ObjectiveArchived",
    ]
    assert stored[1].actor == KAFKA_PRINCIPAL
    assert stored[1].payload() == okr.KeyResultCommented(
        key_result_id=found.key_results[0].key_result_id, text="Sent by the survey service"
    )


async def test_invalid_fields_in_a_readable_command_are_rejected_with_every_problem(
    store_settings: Settings, application: OkrApplication
) -> None:
    body = good_objective(new_id())
    body |= {"title": "", "period_start": "next quarter", "key_results": []}
    del body["owner"]
    invalid = command(body)
    async with consumer_running(store_settings, application) as task:
        await send_commands(store_settings, invalid)
        result = await result_of(store_settings, task, invalid["command_id"])

    assert (result.status, result.error) == ("rejected", "invalid_command")
    assert {problem.field for problem in result.problems} == {
        "body.create_objective.title",
        "body.create_objective.owner",
        "body.create_objective.period_start",
        "body.create_objective.key_results",
    }
    assert all(problem.message for problem in result.problems)
    assert await event_count(application) == 0, "nothing written for a rejected command"


async def test_the_seeds_unmeasurable_key_result_is_rejected_with_its_reasons(
    store_settings: Settings, application: OkrApplication
) -> None:
    body = good_objective(new_id()) | {"key_results": [seed.LEAD_GENERATION.as_json()]}
    vague = command(body)
    async with consumer_running(store_settings, application) as task:
        await send_commands(store_settings, vague)
        result = await result_of(store_settings, task, vague["command_id"])

    assert (result.status, result.error) == ("rejected", "quality_rejected")
    assert {(p.code, p.field) for p in result.problems} == seed.unmeasurable_problems()
    assert await event_count(application) == 0


async def test_a_stale_expected_version_is_rejected_as_a_version_conflict(
    store_settings: Settings, application: OkrApplication
) -> None:
    objective_id = new_id()
    create = command(good_objective(objective_id))
    stale = command({"type": "activate_objective"}, objective_id=objective_id, expected_version=0)
    async with consumer_running(store_settings, application) as task:
        await send_commands(store_settings, create, stale)
        results = await wait_for_results(
            store_settings, task, {create["command_id"]: 1, stale["command_id"]: 1}
        )

    [conflict] = results[stale["command_id"]]
    assert (conflict.status, conflict.error) == ("rejected", "version_conflict")
    assert str(conflict.objective_id) == objective_id
    assert conflict.problems and "version 1" in conflict.problems[0].message
    assert await event_count(application) == 1, "only the creation was written"


async def test_a_repeated_command_id_is_applied_once_and_answered_each_time(
    store_settings: Settings, application: OkrApplication
) -> None:
    objective_id = new_id()
    create = command(good_objective(objective_id))
    reused = create | {"body": good_objective(objective_id, title="Something else entirely")}
    async with consumer_running(store_settings, application) as task:
        await send_commands(store_settings, create, create, reused)
        results = await wait_for_results(store_settings, task, {create["command_id"]: 3})

    first, repeat, different = results[create["command_id"]]
    assert (first.status, first.version, first.replayed) == ("accepted", 1, False)
    assert repeat == first.model_copy(update={"replayed": True})
    assert (different.status, different.error) == ("rejected", "idempotency_key_reused")
    assert await event_count(application) == 1, "one event for three deliveries of one id"


async def test_a_command_applied_before_a_crash_is_replayed_when_redelivered(
    store_settings: Settings, application: OkrApplication
) -> None:
    objective_id = new_id()
    create = command(good_objective(objective_id))
    await send_commands(store_settings, create)
    # A consumer applied it, then died before publishing the result and committing the offset.
    as_sent = Command.model_validate(create | {"actor": KAFKA_PRINCIPAL})
    applied = await asyncio.to_thread(application.handle, as_sent)
    async with consumer_running(store_settings, application) as task:
        redelivered = await result_of(store_settings, task, create["command_id"])

    assert redelivered == applied.model_copy(update={"replayed": True})
    assert await event_count(application) == 1


# --- dead letters


async def test_messages_that_are_not_commands_are_dead_lettered_and_the_consumer_moves_on(
    settings: Settings, sqlite_application: OkrApplication
) -> None:
    key = new_id()
    valid_body = good_objective(key)
    binary_value = b"\xff\xfe\x00 not text"
    binary_header: Headers = [("trace", b"\xff\x01"), ("source", b"billing")]
    bad: list[tuple[str, bytes | None, Headers]] = [
        ("not_json", b'{"command_id": "c1", "body": ', []),
        ("not_json", binary_value, binary_header),
        ("not_an_object", b"[1, 2, 3]", []),
        ("unsupported_schema_version", encode(command(valid_body, schema_version=2)), []),
        ("unknown_type", encode(command({"type": "launch_rocket"}, command_id="c-unknown")), []),
        ("missing_id", encode({"body": valid_body}), []),
        ("empty", None, []),
    ]
    valid = command(good_objective(key), objective_id=None)
    async with consumer_running(settings, sqlite_application) as task:
        sent = await produce(
            settings,
            topics.COMMANDS,
            [(key.encode(), value, headers) for _, value, headers in bad]
            + [(key.encode(), encode(valid), principal_headers())],
        )
        result = await result_of(settings, task, valid["command_id"])
    # The bad messages precede the valid one in its partition: their outcomes are all out by now.
    records = await read_to_end(settings, topics.DEAD_LETTERS)
    all_results = await read_to_end(settings, topics.COMMAND_RESULTS)

    assert result.status == "accepted", "a valid command after the bad ones is processed"
    assert [r.key.decode() for r in all_results] == [valid["command_id"]], "no result for those"
    letters = {
        (letter.origin_partition, letter.origin_offset): letter
        for letter in (DeadLetter.model_validate_json(record.value) for record in records)
    }
    assert len(letters) == len(bad) == len(records)
    for (reason, value, headers), metadata in zip(bad, sent[: len(bad)], strict=True):
        letter = letters[(metadata.partition, metadata.offset)]
        assert letter.reason == reason
        assert letter.error
        assert letter.origin_topic == settings.topic(topics.COMMANDS)
        assert letter.consumer_group == settings.consumer_group(GROUP_ID)
        assert letter.key is not None and letter.key.to_bytes() == key.encode()
        assert (letter.value.to_bytes() if letter.value else None) == value
        assert [
            (h.name, h.value.to_bytes() if h.value else None) for h in letter.headers
        ] == headers
        assert letter.failed_at.tzinfo is not None and letter.origin_timestamp is not None
    binary = letters[(sent[1].partition, sent[1].offset)]
    assert binary.value is not None and binary.value.encoding == "base64"
    assert [h.value.encoding for h in binary.headers if h.value] == ["base64", "utf-8"]
    assert all(record.key.decode() == key for record in records), "dead letters keep the key"
    assert await event_count(sqlite_application) == 1


async def test_binary_and_null_headers_beside_the_principal_do_not_stop_a_command(
    settings: Settings, sqlite_application: OkrApplication
) -> None:
    """The consumer reads headers as Kafka carries them: a value that is not UTF-8, or none at
    all, is no reason to refuse a command (nor to skip it unanswered)."""
    create = command(good_objective(new_id()))
    odd_headers: Any = [*principal_headers(), ("trace", b"\xff\x01"), ("baggage", None)]
    async with consumer_running(settings, sqlite_application) as task:
        await send_commands(settings, create, headers=odd_headers)
        result = await result_of(settings, task, create["command_id"])

    assert (result.status, result.version) == ("accepted", 1)


# --- restart


@pytest.mark.slow
async def test_a_restarted_consumer_neither_repeats_nor_misses_a_command(
    settings: Settings, sqlite_application: OkrApplication
) -> None:
    objectives = [new_id() for _ in range(8)]
    revisions = 12

    def commands_for(objective_id: str, revision_numbers: range) -> list[dict[str, Any]]:
        return [
            command(
                {"type": "revise_objective", "title": f"Revision {n}"}, objective_id=objective_id
            )
            for n in revision_numbers
        ]

    before = [command(good_objective(o)) for o in objectives]
    before += [c for o in objectives for c in commands_for(o, range(revisions // 2))]
    after = [c for o in objectives for c in commands_for(o, range(revisions // 2, revisions))]

    async with consumer_running(settings, sqlite_application) as task:
        await send_commands(settings, *before)
        await read_until(settings, topics.COMMAND_RESULTS, lambda r: len(r) >= 1, watch=task)
    # Stopped as soon as the first result showed up, most likely in the middle of the stream.
    await send_commands(settings, *after)
    async with consumer_running(settings, sqlite_application) as task:
        results = await wait_for_results(
            settings, task, {c["command_id"]: 1 for c in before + after}
        )

    group = settings.consumer_group(GROUP_ID)
    committed = await committed_offsets(settings, group, topics.COMMANDS)
    # A partition no command went to has nothing to commit (None: lag tools count it as 0).
    assert {p: committed[p] or 0 for p in committed} == await end_offsets(
        settings, topics.COMMANDS
    ), "everything processed is committed"
    for sent in before + after:
        answers = results[sent["command_id"]]
        assert [a.status for a in answers] == ["accepted"] * len(answers), answers
        assert all(a.replayed for a in answers[1:]), "a redelivered command is only replayed"
    assert await event_count(sqlite_application) == len(objectives) * (1 + revisions)
    for objective_id in objectives:
        objective = await asyncio.to_thread(
            sqlite_application.get_objective, uuid.UUID(objective_id)
        )
        assert objective is not None
        assert objective.version == 1 + revisions
        assert objective.title == f"Revision {revisions - 1}", "applied in the order sent"
