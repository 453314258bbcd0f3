"""The KPI scorer against the real broker, on both event stores (SQLite and PostgreSQL).

What a team binding a key result to a KPI is promised: KPI events move it by the binding's
aggregation over the objective's period; a resent event changes nothing; a message that is not a
KPI event lands in `okr.dlq` with its origin and the stream goes on; observations outside the
period or older than the latest are kept and counted but move nothing; a KPI bound after its
observations arrived scores from them at once; two scorers in one group share the partitions and
end where one would; a person writing the same objective mid-batch costs a recomputation, not a
lost or doubled update.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiokafka import TopicPartition
from eventsourcing.persistence import IntegrityError

from events import commands as wire
from events import topics
from projections.backoff import Backoff
from projections.projector import Message as Record  # a consumed record, as `score_batch` reads it
from services.commands.application import OkrApplication
from services.kafka.admin import ensure_topics
from services.kafka.dead_letters import DeadLetterPublisher
from services.scoring.bindings import follow_bindings, run_bindings_follower
from services.scoring.decoding import decode_kpi_event
from services.scoring.preparation import Item, Origin
from services.scoring.scorer import (
    BatchReport,
    KpiScorer,
    kpi_reader,
    run_scorer,
    score_batch,
)
from services.scoring.series_store import (
    KpiBatch,
    KpiStats,
    ObservationRow,
    PositionMove,
    series_chunks,
)
from services.settings import Settings
from tests.kafka_support import eventually
from tests.kpi_support import (
    AGGREGATIONS,
    PERIOD_END,
    PERIOD_START,
    CollectedLetters,
    as_message,
    at,
    bind_kpi,
    create_bound_objective,
    current_values,
    dead_letters,
    kpi,
    kpi_event,
    last_offsets,
    objective,
    produce,
    progress_events,
    run,
    scored_up_to,
)

FAST = Backoff(first_s=0.05, max_s=0.5)


# --- fixtures: one event store per backend, scorers as tasks --------------------------------------


@pytest.fixture(
    params=[
        "sqlite",
        "sqlite, prepared in two workers",
        pytest.param("postgres, prepared in the worker", marks=pytest.mark.postgres),
    ]
)
def store_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """Each store; and batches prepared in the scorer's thread, or (from one record on) in its
    worker processes, which assume nothing was stored yet: duplicates, restarts and races then
    take the scorer's second look, and two workers hand batches back in order."""
    worker_from = 1 if "worker" in request.param else 0
    workers = 2 if "two workers" in request.param else 1
    settings = settings.model_copy(
        update={"scorer_worker_from": worker_from, "scorer_workers": workers}
    )
    if request.param.startswith("postgres"):
        url: str = request.getfixturevalue("postgres_database")
        return settings.model_copy(update={"event_store_url": url})
    return settings


@pytest.fixture
async def topics_ready(store_settings: Settings) -> None:
    await ensure_topics(store_settings)


@contextlib.asynccontextmanager
async def scoring(
    settings: Settings, application: OkrApplication, *, group_id: str | None = None
) -> AsyncIterator[KpiScorer]:
    """The scorer and its bindings follower running, as `okr scorer` runs them."""
    scorer = KpiScorer(application)
    tasks = [
        asyncio.create_task(
            run_scorer(settings, application, group_id=group_id, backoff=FAST, scorer=scorer)
        ),
        asyncio.create_task(run_bindings_follower(settings, application, backoff=FAST)),
    ]
    try:
        yield scorer
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --- scoring --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("topics_ready")
async def test_bound_key_results_move_by_their_aggregation_over_the_period(
    store_settings: Settings, open_application: Callable[..., OkrApplication]
) -> None:
    application = open_application()
    units, nps = kpi("sales.product_x.units"), kpi("nps")
    sales = create_bound_objective(application, [(units, a) for a in AGGREGATIONS])
    survey = create_bound_objective(application, [(nps, "latest")])
    # Arrival order is not time order: 8 and 1 arrive after the later 3, so they are stale.
    sent = [
        kpi_event(units, 5, observed_at=at(1)),
        kpi_event(units, 3, observed_at=at(4)),
        kpi_event(units, 8, observed_at=at(2)),
        kpi_event(units, 1, observed_at=at(3)),
        kpi_event(nps, 64, observed_at=at(1)),
        kpi_event(nps, 71.5, observed_at=at(2)),
    ]
    async with scoring(store_settings, application):
        written = await produce(store_settings, map(as_message, sent))
        await scored_up_to(application, store_settings, last_offsets(written))

    assert current_values(application, sales.objective_id) == [3, 17, 4, 4.25, 1, 8]
    assert current_values(application, survey.objective_id) == [71.5]
    # The history says why: per key result, the events cover every observation once, and the
    # last one names the last KPI event and where it was read.
    for key_result_id, aggregation in zip(sales.key_results, AGGREGATIONS, strict=True):
        recorded = [
            e
            for e in progress_events(application, sales.objective_id)
            if e.key_result_id == key_result_id
        ]
        if aggregation in ("sum", "count"):  # every observation moves these
            assert sum(e.observations for e in recorded) == 4
        assert recorded[-1].kpi_key == units
        assert recorded[-1].actor == "okr-scorer"
    last = progress_events(application, sales.objective_id)[-1]
    assert last.last_kpi_event_id == sent[3]["event_id"]
    assert last.last_offset == written[3][1]
    stats = kpi_reader(application).stats([units])[units]
    assert (stats.accepted, stats.stale, stats.duplicates, stats.outside_period) == (4, 2, 0, 0)
    assert stats.latest is not None and stats.latest.value == 3


@pytest.mark.usefixtures("topics_ready")
async def test_a_resent_event_changes_nothing(
    store_settings: Settings, open_application: Callable[..., OkrApplication]
) -> None:
    application = open_application()
    units = kpi("sales.units")
    bound = create_bound_objective(application, [(units, "sum"), (units, "count")])
    first = [kpi_event(units, value, observed_at=at(value)) for value in range(1, 11)]
    # Resent: the same ids, once as they were and once with another value (still the same event).
    again = [*first, *({**event, "value": 1000} for event in first[:3])]
    async with scoring(store_settings, application):
        written = await produce(store_settings, map(as_message, first))
        await scored_up_to(application, store_settings, last_offsets(written))
        before = objective(application, bound.objective_id)
        rewritten = await produce(store_settings, map(as_message, again))
        await scored_up_to(application, store_settings, last_offsets(rewritten))

    after = objective(application, bound.objective_id)
    assert current_values(application, bound.objective_id) == [55, 10]
    assert after.version == before.version
    stats = kpi_reader(application).stats([units])[units]
    assert (stats.accepted, stats.duplicates) == (10, 13)
    assert len(kpi_reader(application).series(units)) == 10


@pytest.mark.usefixtures("topics_ready")
async def test_bad_input_goes_to_the_dead_letters_and_the_stream_goes_on(
    store_settings: Settings, open_application: Callable[..., OkrApplication]
) -> None:
    application = open_application()
    units = kpi("sales.units")
    bound = create_bound_objective(application, [(units, "sum")])
    bad: list[tuple[bytes, str]] = [
        (b"{not json", "not_json"),
        (b"[1, 2, 3]", "not_an_object"),
        (orjson.dumps({**kpi_event(units, 1), "schema_version": 9}), "unsupported_schema_version"),
        (
            orjson.dumps({k: v for k, v in kpi_event(units, 1).items() if k != "event_id"}),
            "missing_id",
        ),
        (
            orjson.dumps(kpi_event(units, 1)).replace(b'"value":1', b'"value":NaN'),
            "schema_violation",
        ),
        (
            orjson.dumps({**kpi_event(units, 1), "observed_at": "2026-08-01T10:00:00"}),
            "schema_violation",
        ),
        (b"", "empty"),
    ]
    good = [kpi_event(units, value, observed_at=at(value)) for value in (10, 20, 30, 40)]
    messages = [
        as_message(good[0]),
        *[(units.encode(), raw) for raw, _ in bad],
        *map(as_message, good[1:]),
    ]
    async with scoring(store_settings, application):
        written = await produce(store_settings, messages)
        await scored_up_to(application, store_settings, last_offsets(written))
        letters = await dead_letters(store_settings, len(bad))

    assert current_values(application, bound.objective_id) == [100]
    by_offset = {(letter.origin_partition, letter.origin_offset): letter for letter in letters}
    for (raw, reason), origin in zip(bad, written[1 : 1 + len(bad)], strict=True):
        letter = by_offset[origin]
        assert letter.reason == reason
        assert letter.origin_topic == store_settings.topic(topics.KPI_EVENTS)
        assert letter.consumer_group == f"{store_settings.topic_prefix}okr-scorer"
        assert (letter.value.to_bytes() if letter.value else b"") == raw
    assert kpi_reader(application).stats([units])[units].accepted == 4


@pytest.mark.usefixtures("topics_ready")
async def test_outside_the_period_and_stale_observations_are_kept_and_counted_not_scored(
    store_settings: Settings, open_application: Callable[..., OkrApplication]
) -> None:
    application = open_application()
    units, orphan = kpi("sales.units"), kpi("nobody.binds.me")
    bound = create_bound_objective(application, [(units, "latest"), (units, "sum")])
    start = datetime(PERIOD_START.year, PERIOD_START.month, PERIOD_START.day, tzinfo=UTC)
    end = datetime(PERIOD_END.year, PERIOD_END.month, PERIOD_END.day, tzinfo=UTC) + timedelta(1)
    sent = [
        kpi_event(units, 1, observed_at=start),  # first instant of the period: in
        kpi_event(units, 1000, observed_at=start - timedelta(microseconds=1)),  # before: out
        kpi_event(units, 2, observed_at=end - timedelta(microseconds=1)),  # last instant: in
        kpi_event(units, 5000, observed_at=end),  # after: out
        kpi_event(units, 7, observed_at=at(0)),  # older than the latest (end - 1 µs): stale
        kpi_event(orphan, 3),  # no binding at all
    ]
    async with scoring(store_settings, application):
        written = await produce(store_settings, map(as_message, sent))
        await scored_up_to(application, store_settings, last_offsets(written))

    assert current_values(application, bound.objective_id) == [2, 10]
    stats = kpi_reader(application).stats([units, orphan])
    assert (stats[units].accepted, stats[units].outside_period, stats[units].stale) == (5, 2, 2)
    assert (stats[orphan].accepted, stats[orphan].unbound) == (1, 1)
    assert len(kpi_reader(application).series(units)) == 5


# --- bindings: back-fill, activation, period ------------------------------------------------------


@pytest.mark.usefixtures("topics_ready")
async def test_a_kpi_bound_after_its_observations_scores_from_them_at_once(
    store_settings: Settings, open_application: Callable[..., OkrApplication]
) -> None:
    application = open_application()
    nps, units = kpi("nps"), kpi("sales.units")
    later = create_bound_objective(application, [(nps, "avg"), (units, "max")], bind=False)
    draft = create_bound_objective(application, [(units, "sum")], activate=False)
    sent = [kpi_event(nps, v, observed_at=at(v)) for v in (60, 70, 80)]
    sent += [kpi_event(units, v, observed_at=at(v)) for v in (4, 6)]
    async with scoring(store_settings, application):
        written = await produce(store_settings, map(as_message, sent))
        await scored_up_to(application, store_settings, last_offsets(written))
        assert current_values(application, later.objective_id) == [None, None]
        assert current_values(application, draft.objective_id) == [None]

        # Bound now: no new KPI event needed, the stored series scores it.
        await asyncio.to_thread(
            bind_kpi, application, later.objective_id, later.key_results[0], nps, "avg"
        )

        async def backfilled() -> bool:
            return current_values(application, later.objective_id)[0] == 70

        await eventually(backfilled, "the back-fill of the new binding")
        # A draft's bound key result scores when the objective is activated.
        await asyncio.to_thread(run, application, wire.ActivateObjective(), draft.objective_id)

        async def activated() -> bool:
            return current_values(application, draft.objective_id) == [10]

        await eventually(activated, "the back-fill of the activated objective")

    recorded = progress_events(application, later.objective_id)
    assert [(e.value, e.observations, e.last_kpi_event_id) for e in recorded] == [
        (70, 3, sent[2]["event_id"])
    ]
    assert current_values(application, later.objective_id)[1] is None  # still unbound


@pytest.mark.usefixtures("topics_ready")
async def test_a_revised_period_or_an_unbinding_rescores_from_the_series(
    store_settings: Settings, open_application: Callable[..., OkrApplication]
) -> None:
    application = open_application()
    units = kpi("sales.units")
    bound = create_bound_objective(application, [(units, "sum"), (units, "count")])
    sent = [
        kpi_event(units, 1, observed_at=datetime(2026, 7, 15, tzinfo=UTC)),
        kpi_event(units, 10, observed_at=datetime(2026, 8, 15, tzinfo=UTC)),
        kpi_event(units, 100, observed_at=datetime(2026, 9, 15, tzinfo=UTC)),
    ]
    async with scoring(store_settings, application):
        written = await produce(store_settings, map(as_message, sent))
        await scored_up_to(application, store_settings, last_offsets(written))
        assert current_values(application, bound.objective_id) == [111, 3]

        await asyncio.to_thread(
            run,
            application,
            wire.ReviseObjective(period_start=datetime(2026, 8, 1).date()),
            bound.objective_id,
        )

        async def rescored() -> bool:
            return current_values(application, bound.objective_id) == [110, 2]

        await eventually(rescored, "the rescoring over the shortened period")
        await asyncio.to_thread(
            run,
            application,
            wire.UnbindKpi(key_result_id=bound.key_results[1]),
            bound.objective_id,
        )

        async def unbound() -> bool:
            return len(kpi_reader(application).bindings_of_objective(bound.objective_id)) == 1

        await eventually(unbound, "the binding row to go")
        more = await produce(
            store_settings, [as_message(kpi_event(units, 1000, observed_at=at(5)))]
        )
        await scored_up_to(application, store_settings, last_offsets(more))

    # The unbound key result keeps its last value and no longer follows the KPI.
    assert current_values(application, bound.objective_id) == [1110, 2]


# --- two scorers, one group -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("topics_ready")
async def test_two_scorers_in_one_group_share_the_partitions_and_agree_with_one(
    store_settings: Settings, open_application: Callable[..., OkrApplication], tmp_path: Path
) -> None:
    shared = [open_application(), open_application()]  # two processes, one event store
    reference_settings = store_settings.model_copy(
        update={"event_store_url": f"sqlite:///{tmp_path / 'reference.sqlite'}"}
    )
    reference = open_application(reference_settings)
    kpis = [kpi(f"kpi{index}") for index in range(12)]
    bindings = [(key, AGGREGATIONS[index % len(AGGREGATIONS)]) for index, key in enumerate(kpis)]
    objectives = [uuid.uuid4() for _ in range(4)]
    for index, objective_id in enumerate(objectives):
        mine = bindings[index * 3 : index * 3 + 3]
        create_bound_objective(shared[0], mine, objective_id=objective_id)
        create_bound_objective(reference, mine, objective_id=objective_id)
    sent = [
        kpi_event(kpis[i % len(kpis)], (i * 37) % 101 - 20.5, observed_at=at(i % 500))
        for i in range(3000)
    ]
    partitions = {
        TopicPartition(store_settings.topic(topics.KPI_EVENTS), p)
        for p in range(store_settings.topic_partitions)
    }
    async with (
        scoring(store_settings, shared[0]) as first,
        scoring(store_settings, shared[1]) as second,
    ):

        async def sharing() -> bool:
            return (
                bool(first.assigned)
                and bool(second.assigned)
                and not first.assigned & second.assigned
                and first.assigned | second.assigned == partitions
            )

        await eventually(sharing, "both scorers to hold partitions")
        written = await produce(store_settings, map(as_message, sent))
        await scored_up_to(shared[0], store_settings, last_offsets(written))
    async with scoring(reference_settings, reference, group_id=f"reference-{uuid.uuid4().hex}"):
        await scored_up_to(reference, reference_settings, last_offsets(written))

    for objective_id in objectives:
        assert current_values(shared[1], objective_id) == current_values(reference, objective_id)
        assert None not in current_values(reference, objective_id)


# --- races with people, without a broker ----------------------------------------------------------


async def test_a_person_writing_the_objective_mid_batch_costs_a_recomputation(
    store_settings: Settings, open_application: Callable[..., OkrApplication]
) -> None:
    scorer_side, person_side = open_application(), open_application()
    units = kpi("sales.units")
    bound = create_bound_objective(person_side, [(units, "sum")])
    await asyncio.to_thread(follow_bindings, scorer_side)
    interrupted: list[datetime] = []

    def clock_that_lets_a_person_in() -> datetime:
        """The scorer asks the time right before deciding; the first time, a person revises
        the objective through another process, so the decision is made on a stale version."""
        if not interrupted:
            interrupted.append(datetime.now(UTC))
            run(
                person_side,
                wire.ReviseObjective(title="Sell product X in every region"),
                bound.objective_id,
            )
        return datetime.now(UTC)

    scorer_side.clock = clock_that_lets_a_person_in
    letters = CollectedLetters()
    records = [
        Record("kpi.events", 0, offset, orjson.dumps(kpi_event(units, 2.5))) for offset in range(4)
    ]
    report = await score_batch(
        scorer_side, records, DeadLetterPublisher(store_settings, letters.send)
    )

    assert report.attempts == 2
    assert report.progress_events == 1
    stored = objective(person_side, bound.objective_id)
    assert stored.title == "Sell product X in every region"
    assert [kr.current for kr in stored.key_results] == [10]
    # Replaying the same records changes nothing: their offsets are behind the stored position.
    again = await score_batch(
        scorer_side, records, DeadLetterPublisher(store_settings, letters.send)
    )
    assert (again.already_scored, again.accepted, again.progress_events) == (4, 0, 0)
    assert letters.values == []


def items(records: list[Record]) -> list[Item]:
    return [(Origin(r.topic, r.partition, r.offset), decode_kpi_event(r.value)) for r in records]


async def test_a_scorer_that_lost_its_partition_to_another_writes_nothing_twice(
    store_settings: Settings, open_application: Callable[..., OkrApplication]
) -> None:
    """A zombie: it read a batch, the partition moved to another scorer that scored the same
    records, and only then does the zombie save. The stored position refuses it."""
    zombie_side, successor_side = open_application(), open_application()
    units = kpi("sales.units")
    bound = create_bound_objective(successor_side, [(units, "sum"), (units, "count")])
    await asyncio.to_thread(follow_bindings, zombie_side)
    records = [
        Record("kpi.events", 0, offset, orjson.dumps(kpi_event(units, 1.5))) for offset in range(5)
    ]
    successor = KpiScorer(successor_side)
    overtaken: list[BatchReport] = []

    def clock_that_lets_the_successor_in() -> datetime:
        if not overtaken:
            overtaken.append(successor.score(items(records)))
        return datetime.now(UTC)

    zombie_side.clock = clock_that_lets_the_successor_in
    report = await asyncio.to_thread(KpiScorer(zombie_side).score, items(records))

    assert overtaken[0].accepted == 5
    assert (report.attempts, report.already_scored, report.accepted) == (2, 5, 0)
    assert current_values(successor_side, bound.objective_id) == [7.5, 5]
    assert kpi_reader(successor_side).stats([units])[units].accepted == 5


async def test_two_scorers_racing_on_one_kpi_both_count(
    store_settings: Settings, open_application: Callable[..., OkrApplication]
) -> None:
    """A producer that did not key by KPI: one KPI on two partitions, scored by two scorers at
    once. The KPI's stats row is its fence: the later save recomputes on top of the earlier."""
    one_side, other_side = open_application(), open_application()
    units = kpi("sales.units")
    bound = create_bound_objective(other_side, [(units, "sum"), (units, "max")])
    await asyncio.to_thread(follow_bindings, one_side)
    mine = [Record("kpi.events", 0, o, orjson.dumps(kpi_event(units, 1))) for o in range(3)]
    theirs = [Record("kpi.events", 1, o, orjson.dumps(kpi_event(units, 10))) for o in range(2)]
    other = KpiScorer(other_side)
    raced: list[BatchReport] = []

    def clock_that_lets_the_other_in() -> datetime:
        if not raced:
            raced.append(other.score(items(theirs)))
        return datetime.now(UTC)

    one_side.clock = clock_that_lets_the_other_in
    report = await asyncio.to_thread(KpiScorer(one_side).score, items(mine))

    assert (report.attempts, report.accepted, raced[0].accepted) == (2, 3, 2)
    assert current_values(other_side, bound.objective_id) == [23, 10]
    assert kpi_reader(other_side).stats([units])[units].accepted == 5
    assert kpi_reader(other_side).positions("kpi.events") == {0: 3, 1: 2}


async def test_a_back_fill_racing_a_scorer_batch_on_its_kpi_misses_nothing(
    store_settings: Settings, open_application: Callable[..., OkrApplication]
) -> None:
    """The follower aggregates the stored series for a new binding; a scorer batch for the same
    KPI commits before the follower saves. The KPI fence makes the follower start again."""
    person, follower_side, scorer_side = open_application(), open_application(), open_application()
    units = kpi("sales.units")
    bound = create_bound_objective(person, [(units, "sum")], bind=False)
    scorer = KpiScorer(scorer_side)
    early = [Record("kpi.events", 0, o, orjson.dumps(kpi_event(units, 1))) for o in range(2)]
    late = [Record("kpi.events", 0, 2, orjson.dumps(kpi_event(units, 100)))]
    await asyncio.to_thread(scorer.score, items(early))
    bind_kpi(person, bound.objective_id, bound.key_results[0], units, "sum")
    asked: list[datetime] = []

    def clock_that_lets_a_scorer_batch_in() -> datetime:
        if not asked:
            scorer.score(items(late))  # committed between the follower's reads and its save
        asked.append(datetime.now(UTC))
        return asked[-1]

    follower_side.clock = clock_that_lets_a_scorer_batch_in
    await asyncio.to_thread(follow_bindings, follower_side)

    assert len(asked) == 2  # decided twice: the first save lost the race
    assert current_values(person, bound.objective_id) == [102]
    assert [e.observations for e in progress_events(person, bound.objective_id)] == [3]


def test_the_store_refuses_any_write_that_would_double_or_lose_state(
    store_settings: Settings, open_application: Callable[..., OkrApplication]
) -> None:
    """What every race above relies on, per backend: a second copy of an observation, a second
    first row of a KPI or a partition, and a write from a stale read are all IntegrityErrors,
    and the refused transaction leaves nothing behind."""
    application = open_application()
    row = ObservationRow(
        "e1", "k", 1.0, "2026-08-01T00:00:00+00:00", 0, "s", None, "{}", "t", 0, 0, "x"
    )
    application.save_events(
        [],
        kpi_batch=KpiBatch(
            series=series_chunks([row]),
            stats=[KpiStats("k", accepted=1)],
            positions=[PositionMove("t", 0, None, 1)],
        ),
    )
    refused = [
        KpiBatch(series=series_chunks([row._replace(kpi_key="other")]), stats=[KpiStats("other")]),
        KpiBatch(stats=[KpiStats("k")]),
        KpiBatch(stats=[KpiStats("k", version=7)]),
        KpiBatch(positions=[PositionMove("t", 0, None, 5)]),
        KpiBatch(positions=[PositionMove("t", 0, 0, 5)]),
    ]
    for batch in refused:
        with pytest.raises(IntegrityError):
            application.save_events([], kpi_batch=batch)
    reader = kpi_reader(application)
    assert reader.observation_count() == 1
    assert reader.positions("t") == {0: 1}
    assert reader.stats(["k", "other"])["k"].version == 1
    assert reader.stats(["k", "other"])["other"].version == 0  # never stored
