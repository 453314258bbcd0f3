"""No record stalls a partition: poison messages against the real broker, every consumer.

A 1 MB random payload once stopped all KPI scoring for good: its dead letter (base64, larger
than the producer's request limit) could not be published, the error was taken for an outage,
and the scorer restarted from its stored positions forever. Here such payloads, and records that
fail deep in processing (not at decoding), are sent among valid ones on every partition. Each
consumer must set each bad record aside exactly once (a dead letter that fits), apply every valid
one, and report the truth on the job board that `/health` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import Callable, Coroutine
from typing import Any
from uuid import UUID

import pytest
from aiokafka.partitioner import murmur2

from domain.objective_events import DomainEvent
from events import topics
from events.dead_letters import EVENT_STORE_ORIGIN, DeadLetter
from events.okr import OkrEventEnvelope, OkrPayload
from projections import folding
from projections.backoff import Backoff
from projections.job_health import JobBoard, context_reporting_to
from projections.views import ProjectedObjective, ReadStore
from services.commands.application import OkrApplication
from services.commands.consumer import run_command_consumer
from services.kafka.admin import ensure_topics
from services.projector_service import open_read_store, run_projector_service
from services.relay.publisher import relay_once
from services.scoring import bindings as kpi_bindings
from services.scoring import scorer as scorer_module
from services.scoring.bindings import BindingsFollower, run_bindings_follower
from services.scoring.scorer import KpiScorer, run_scorer
from services.settings import Settings
from services.tasks import running
from tests.auth_support import principal_headers
from tests.integration.test_kafka_commands import command, encode, good_objective
from tests.kafka_support import eventually, produce, read_to_end
from tests.kpi_support import (
    as_message,
    at,
    create_bound_objective,
    current_values,
    kpi,
    kpi_event,
    last_offsets,
    scored_up_to,
)

pytestmark = [pytest.mark.fault, pytest.mark.slow]

FAST = Backoff(first_s=0.05, max_s=0.5)
ONE_MB = 1_000_000
KEYS_PER_PARTITION = 4


def covering(settings: Settings, make: Callable[[int], str]) -> list[str]:
    """Keys made by `make` until every partition has `KEYS_PER_PARTITION` of them (as Kafka's
    default partitioner places keys): valid records land on every partition."""
    partitions = settings.topic_partitions
    placed: dict[int, int] = {}
    keys: list[str] = []
    n = 0
    while len(keys) < partitions * KEYS_PER_PARTITION:
        key = make(n)
        n += 1
        partition = (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
        if placed.get(partition, 0) < KEYS_PER_PARTITION:
            placed[partition] = placed.get(partition, 0) + 1
            keys.append(key)
    return keys


@pytest.fixture
async def topics_ready(store_settings: Settings) -> None:
    await ensure_topics(store_settings)


def jobs_on(
    board: JobBoard, *jobs: Coroutine[Any, Any, None]
) -> contextlib.AbstractAsyncContextManager[list[asyncio.Task[None]]]:
    """The jobs running as the app runs them: reporting to `board`."""
    return running(*jobs, context=context_reporting_to(board))


def scoring(
    settings: Settings, application: OkrApplication, board: JobBoard
) -> contextlib.AbstractAsyncContextManager[list[asyncio.Task[None]]]:
    return jobs_on(
        board,
        run_scorer(settings, application, backoff=FAST, scorer=KpiScorer(application)),
        run_bindings_follower(settings, application, backoff=FAST),
    )


async def letters(settings: Settings, count: int) -> list[DeadLetter]:
    """Every dead letter, once at least `count` are there (and a moment more for strays)."""

    async def there() -> bool:
        return len(await read_to_end(settings, topics.DEAD_LETTERS)) >= count

    await eventually(there, f"{count} dead letter(s) on okr.dlq")
    await asyncio.sleep(1.0)  # a letter sent twice would show now
    records = await read_to_end(settings, topics.DEAD_LETTERS)
    return [DeadLetter.model_validate_json(record.value) for record in records]


def job(board: JobBoard, name: str) -> dict[str, Any]:
    [entry] = [entry.to_json() for entry in board.jobs() if entry.name == name]
    return entry


def bound_sums(application: OkrApplication, keys: list[str]) -> list[UUID]:
    """Objectives of four key results each, every KPI of `keys` summed by one of them."""
    return [
        create_bound_objective(application, [(key, "sum") for key in keys[i : i + 4]]).objective_id
        for i in range(0, len(keys), 4)
    ]


def valid_events(keys: list[str], per_key: int = 3) -> list[dict[str, Any]]:
    return [
        kpi_event(key, value, observed_at=at(value)) for key in keys for value in range(1, per_key)
    ]


@pytest.mark.usefixtures("topics_ready")
async def test_a_1mb_random_payload_on_kpi_events_is_set_aside_once_and_scoring_goes_on(
    store_settings: Settings, open_application: Callable[..., OkrApplication]
) -> None:
    application = open_application()
    keys = covering(store_settings, lambda n: kpi(f"sales.shop{n}"))
    objectives = bound_sums(application, keys)
    payload = os.urandom(ONE_MB)
    first_valid = valid_events(keys[:1])
    board = JobBoard()
    async with scoring(store_settings, application, board):
        poison = await produce(
            store_settings,
            topics.KPI_EVENTS,
            [(keys[0].encode(), payload, [])],
            max_request_size=4 << 20,
        )
        written = await produce(
            store_settings,
            topics.KPI_EVENTS,
            [
                (key, value, [])
                for key, value in map(as_message, [*first_valid, *valid_events(keys)])
            ],
        )
        partitions = {metadata.partition for metadata in written}
        assert len(partitions) == store_settings.topic_partitions, "valid events everywhere"
        ends = last_offsets([(m.partition, m.offset) for m in [*poison, *written]])
        await scored_up_to(application, store_settings, ends)
        [letter] = await letters(store_settings, 1)
        scorer_job = job(board, "KPI scorer")

    sums = [value for oid in objectives for value in current_values(application, oid)]
    assert sums == [(1 + 2) * 2] + [1 + 2] * (len(keys) - 1)
    assert (letter.reason, letter.origin_offset) == ("not_json", poison[0].offset)
    assert letter.value is not None and letter.value.truncated
    assert letter.value.size == ONE_MB
    assert letter.value.sha256 == hashlib.sha256(payload).hexdigest()
    assert scorer_job["state"] == "running"
    assert scorer_job["dead_letters"] == {"not_json": 1}
    assert scorer_job["failures_total"] == 0


@pytest.mark.usefixtures("topics_ready")
async def test_a_1mb_random_payload_on_okr_commands_is_set_aside_once_and_commands_go_on(
    store_settings: Settings, open_application: Callable[..., OkrApplication]
) -> None:
    application = open_application()
    payload = os.urandom(ONE_MB)
    objective_ids = covering(store_settings, lambda _: str(uuid.uuid4()))
    board = JobBoard()
    async with jobs_on(board, run_command_consumer(store_settings, application)):
        poison = await produce(
            store_settings,
            topics.COMMANDS,
            [(objective_ids[0].encode(), payload, principal_headers())],
            max_request_size=4 << 20,
        )
        commands = [
            (oid.encode(), _create_command(oid), principal_headers()) for oid in objective_ids
        ]
        written = await produce(store_settings, topics.COMMANDS, commands)
        assert {m.partition for m in written} >= {poison[0].partition}
        assert len({m.partition for m in written}) == store_settings.topic_partitions

        async def all_created() -> bool:
            found = await asyncio.to_thread(
                lambda: [application.get_objective(UUID(oid)) for oid in objective_ids]
            )
            return all(objective is not None for objective in found)

        await eventually(all_created, "every valid command applied")
        [letter] = await letters(store_settings, 1)
        consumer_job = job(board, "command consumer")

    assert (letter.reason, letter.origin_offset) == ("not_json", poison[0].offset)
    assert letter.value is not None and letter.value.truncated
    assert letter.value.sha256 == hashlib.sha256(payload).hexdigest()
    assert consumer_job["state"] == "running"
    assert consumer_job["dead_letters"] == {"not_json": 1}


POISON_VALUE = 666.0


@pytest.mark.usefixtures("topics_ready")
async def test_a_kpi_event_that_breaks_scoring_is_set_aside_once_and_the_rest_is_scored(
    store_settings: Settings,
    open_application: Callable[..., OkrApplication],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A value the fold cannot take (a fault injected where the scorer decides a key result's
    progress): the batch fails for good, the scorer finds the record by bisection."""
    decide = scorer_module.record_kpi_progress

    def breaks_on_poison(*args: Any, **kwargs: Any) -> list[DomainEvent]:
        if args[3] == POISON_VALUE:
            raise ArithmeticError("this value breaks the fold")
        return decide(*args, **kwargs)

    monkeypatch.setattr(scorer_module, "record_kpi_progress", breaks_on_poison)
    application = open_application()
    keys = covering(store_settings, lambda n: kpi(f"nps.shop{n}"))
    objectives = [
        create_bound_objective(application, [(key, "latest") for key in keys[i : i + 4]])
        for i in range(0, len(keys), 4)
    ]
    before = [kpi_event(key, 10.0 + n, observed_at=at(1)) for n, key in enumerate(keys)]
    poison = kpi_event(keys[0], POISON_VALUE, observed_at=at(500))
    after = [kpi_event(key, 20.0 + n, observed_at=at(2)) for n, key in enumerate(keys)]
    board = JobBoard()
    async with scoring(store_settings, application, board):
        written = await produce(
            store_settings, topics.KPI_EVENTS, [(*as_message(e), []) for e in [*before, poison]]
        )
        rest = await produce(
            store_settings, topics.KPI_EVENTS, [(*as_message(e), []) for e in after]
        )
        assert len({m.partition for m in rest}) == store_settings.topic_partitions
        ends = last_offsets([(m.partition, m.offset) for m in [*written, *rest]])
        await scored_up_to(application, store_settings, ends)
        [letter] = await letters(store_settings, 1)
        scorer_job = job(board, "KPI scorer")

    values = [v for bound in objectives for v in current_values(application, bound.objective_id)]
    assert values == [20.0 + n for n in range(len(keys))]
    assert (letter.reason, letter.origin_offset) == ("processing_failed", written[-1].offset)
    assert "this value breaks the fold" in letter.error
    assert letter.value is not None and not letter.value.truncated
    assert scorer_job["state"] == "running"
    assert scorer_job["dead_letters"] == {"processing_failed": 1}


@pytest.mark.usefixtures("topics_ready")
async def test_an_event_that_breaks_the_projector_is_set_aside_once_and_the_rest_projected(
    store_settings: Settings,
    open_application: Callable[..., OkrApplication],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    application = open_application()
    objectives = [
        create_bound_objective(application, [(kpi("sales"), "sum")], bind=False).objective_id
        for _ in range(12)
    ]
    doomed = objectives[0]
    reduce = folding.reduce_event  # every event but a KPI progress folds through it

    def breaks_on_doomed(
        state: ProjectedObjective | None, envelope: OkrEventEnvelope, payload: OkrPayload
    ) -> Any:
        if envelope.objective_id == doomed and envelope.version == 2:
            raise ArithmeticError("this event breaks the read model")
        return reduce(state, envelope, payload)

    monkeypatch.setattr(folding, "reduce_event", breaks_on_doomed)
    store: ReadStore = open_read_store(store_settings)
    board = JobBoard()
    try:
        async with jobs_on(board, run_projector_service(store_settings, store)):
            await relay_once(store_settings, application)

            async def projected() -> bool:
                rows = await asyncio.to_thread(lambda: [store.get_objective(o) for o in objectives])
                return all(row is not None and row.version == 2 for row in rows[1:])

            await eventually(projected, "every other objective projected")
            [letter] = await letters(store_settings, 1)
            projector_job = job(board, "projector")
        doomed_row = store.get_objective(doomed)
    finally:
        store.close()

    assert letter.reason == "processing_failed"
    assert "this event breaks the read model" in letter.error
    assert doomed_row is not None and doomed_row.version == 1  # its activation set aside
    assert projector_job["state"] == "running"


@pytest.mark.usefixtures("topics_ready")
async def test_a_stored_event_that_breaks_the_bindings_follower_is_set_aside_once(
    store_settings: Settings,
    open_application: Callable[..., OkrApplication],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    application = open_application()
    units = kpi("sales.units")
    doomed = create_bound_objective(application, [(units, "sum")], bind=False)
    reconcile = BindingsFollower._reconcile_objective

    def breaks_on_doomed(self: BindingsFollower, objective_id: UUID, *args: Any) -> None:
        if objective_id == doomed.objective_id:
            raise ArithmeticError("this objective breaks the bindings")
        reconcile(self, objective_id, *args)

    monkeypatch.setattr(kpi_bindings.BindingsFollower, "_reconcile_objective", breaks_on_doomed)
    kept = create_bound_objective(application, [(units, "sum")])
    board = JobBoard()
    async with scoring(store_settings, application, board):
        written = await produce(
            store_settings,
            topics.KPI_EVENTS,
            [(*as_message(kpi_event(units, v, observed_at=at(v))), []) for v in (1, 2, 3)],
        )
        await scored_up_to(
            application, store_settings, last_offsets([(m.partition, m.offset) for m in written])
        )

        async def kept_scored() -> bool:
            values = await asyncio.to_thread(current_values, application, kept.objective_id)
            return values == [6]

        await eventually(kept_scored, "the other objective's binding scored")
        [letter] = await letters(store_settings, 1)
        follower_job = job(board, "bindings follower")

    assert (letter.reason, letter.origin_topic) == ("processing_failed", EVENT_STORE_ORIGIN)
    assert letter.key is not None and letter.key.data == str(doomed.objective_id)
    assert "this objective breaks the bindings" in letter.error
    assert follower_job["state"] == "running"
    assert follower_job["dead_letters"] == {"processing_failed": 1}


def _create_command(objective_id: str) -> bytes:
    return encode(command(good_objective(objective_id)))
