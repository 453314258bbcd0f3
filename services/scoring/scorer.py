"""The KPI scorer: `kpi.events` in, batch by batch; bound key results moved, exactly once.

Per batch (`score_batch`): read every record (`services.scoring.decoding`; what does not read is
dead-lettered on `okr.dlq` with its reason and origin, and the batch goes on), then score it in two
halves. Preparing it (`services.scoring.preparation`, all the work per record) drops what the stored
positions say was scored already, deduplicates on `event_id` (within the batch and against the
stored series) and sums the new observations up per KPI and binding period; a backlog's batches are
prepared in worker processes (`services.scoring.worker`) while the previous one is saved.
Completing it (`KpiScorer._plan`, work per KPI and key result) adds those sums to the stored
counters and to the aggregate of every binding whose period they fall in, and decides
`record_kpi_progress` for every bound key result that moved: one event per key result per batch,
naming how many KPI events it covers and the last one's id and offset, so the audit trail says why
a score moved. The events of ALL objectives touched, the observations, the counters, the binding
aggregates and the new Kafka positions are stored by ONE `application.save_events` (one
transaction). A crash anywhere leaves all of it or none of it.

Positions live in the event store (`kpi_positions`); they are authoritative: on every partition
assignment the consumer seeks to them, and a batch that starts before them skips what was scored.
Kafka's committed offsets are written after the save for monitoring only. A lost race (a person
wrote one of the objectives, another scorer took over a partition, the bindings follower back-filled
a KPI) makes the save fail with an `IntegrityError`: the batch is recomputed from fresh state.

Scores do not depend on batch boundaries: `domain.kpi_series` aggregates are order-free and exact,
so a run killed and restarted anywhere ends with the values of an undisturbed run.

Each batch's stages are timed once (fetch, decode, prepare, plan, save, commit: the
`okr_stage_*{job="scorer"}` histograms of `projections.stage_timings`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from functools import partial
from itertools import groupby
from operator import attrgetter
from time import perf_counter
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from aiokafka import AIOKafkaConsumer, TopicPartition
from eventsourcing.persistence import IntegrityError

from domain.errors import NotScorableError
from domain.objective import Decision, Objective, ObjectiveStatus, evolve, record_kpi_progress
from domain.objective_events import DomainEvent, KpiBinding
from events.topics import KPI_EVENTS
from projections.backoff import Backoff
from projections.failures import SetAsideStreak, describe, is_transient
from projections.job_health import current_stages
from projections.stage_timings import SCORER, StageTimer
from services.kafka.admin import ensure_topics
from services.kafka.consumer import (
    Consumer,
    Subscription,
    Work,
    acknowledged_producer,
    run_consumer,
)
from services.kafka.dead_letters import DeadLetterPublisher, KafkaRecord, send_with_producer
from services.kafka.groups import SCORER_GROUP as GROUP_ID
from services.scoring.decoding import NotAKpiEventError
from services.scoring.gc_tuning import SCORER_YOUNG_THRESHOLD, freeze_start_up_objects
from services.scoring.preparation import (
    Item,
    Period,
    PreparedBatch,
    RawPart,
    ReadOnDemand,
    items_of,
    periods_of,
    prepare,
    read_parts,
)
from services.scoring.series_ahead import SeriesAhead
from services.scoring.series_store import (
    Binding,
    KpiBatch,
    KpiReader,
    KpiStats,
    PositionMove,
)
from services.scoring.worker import PreparationWorker

if TYPE_CHECKING:
    from services.commands.application import OkrApplication
    from services.settings import Settings

log = logging.getLogger(__name__)

ACTOR = "okr-scorer"
MAX_RECORDS = 50_000
"""Records per batch at most. Much of a batch's cost is per key result moved (~0.15 ms: read its
binding, fold, decide, seal, store the event and the binding) rather than per record, so bigger
batches coalesce more KPI events into each `KpiProgressRecorded` (ADR 13: 66k → 68k to 77k events/s
against 20,000)."""
FETCH_TIMEOUT_MS = 500
SESSION_TIMEOUT_MS = 6000
"""A scorer that died without leaving the group holds its partitions until this passes; 6 s is
the broker's default minimum (`group.min.session.timeout.ms`)."""
CONFLICT_RETRIES = 20
"""A lost race means someone else's write got in; recomputing on fresh state wins the next one
unless writes to the same objectives keep coming, which the cap turns into a logged retry."""


def group_id_for(settings: Settings) -> str:
    return settings.consumer_group(GROUP_ID)


def kpi_reader(application: OkrApplication) -> KpiReader:
    return application.receipts.kpi


# --- the outcome of a batch -----------------------------------------------------------------------


@dataclass
class BatchReport:
    """What a batch did; the scorer logs it, tests and benchmarks read it."""

    records: int = 0
    dead_lettered: int = 0
    already_scored: int = 0
    accepted: int = 0
    duplicates: int = 0
    stale: int = 0
    outside_period: int = 0
    unbound: int = 0
    progress_events: int = 0
    attempts: int = 0
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    """Stored next offset per partition after the batch (where the consumer should be)."""


# --- scoring (blocking: runs in a worker thread) --------------------------------------------------


class KpiScorer:
    """Turns parsed batches into one transaction each; stateless between batches but for the
    application's objective cache, so any number of scorers may share a store."""

    def __init__(self, application: OkrApplication, *, actor: str = ACTOR) -> None:
        self.application = application
        self.reader = kpi_reader(application)
        self.actor = actor
        self.assigned: set[TopicPartition] = set()
        """The partitions the consumer currently holds (when run by `run_scorer`)."""
        self._periods: Mapping[str, tuple[Period, ...]] | None = None

    def score(self, items: Sequence[Item], prepared: PreparedBatch | None = None) -> BatchReport:
        """Store the batch's effects once; retried from fresh state after a lost race.

        `prepared`: the batch prepared elsewhere (a worker process) before the stored state was
        read; used if its assumptions hold, else the batch is prepared again from `items`
        (which are then read: a lazy sequence costs nothing otherwise).

        Its stages (prepare, plan, save) are observed once, however many attempts it took."""
        timer = current_stages().timer(SCORER)
        with self._write_series_ahead(prepared) as ahead:
            for attempt in range(1, CONFLICT_RETRIES + 1):
                with timer.stage("plan"):
                    plan = self._plan(items, prepared, timer, look_up_ids=attempt > 1)
                prepared = None
                plan.report.attempts = attempt
                if plan.batch is None:
                    timer.observe(plan.report.records)
                    return plan.report
                written = ahead.offer(plan.batch) if ahead is not None else {}
                try:
                    with timer.stage("save"):
                        self.application.save_events(plan.events, kpi_batch=plan.batch, **written)
                except IntegrityError as error:
                    log.info("KPI batch not saved (%s); recomputing (attempt %d)", error, attempt)
                    self.application.evict(plan.objective_ids)
                    continue
                with timer.stage("save"):
                    self._remember(plan.objectives)
                    self.application.snapshot_due(plan.events)
                for move in plan.batch.positions:
                    plan.report.next_offsets[(move.topic, move.partition)] = move.next_offset
                timer.observe(plan.report.records)
                return plan.report
        raise IntegrityError(f"KPI batch still conflicting after {CONFLICT_RETRIES} attempts")

    def _write_series_ahead(
        self, prepared: PreparedBatch | None
    ) -> contextlib.AbstractContextManager[SeriesAhead | None]:
        """A batch prepared elsewhere has its series copied while it is planned, where the
        store can (`services.scoring.series_ahead`); its save then finishes that transaction,
        unless the plan prepared the batch again."""
        series = prepared.series if prepared is not None else []
        if prepared is None or not series:
            return contextlib.nullcontext()
        ahead = self.application.receipts.write_series_ahead(series, prepared.sorted_event_ids)
        return ahead if ahead is not None else contextlib.nullcontext()

    def binding_periods(self) -> Mapping[str, tuple[Period, ...]]:
        """The binding periods of every KPI as last read: what a batch prepared ahead assumes."""
        if self._periods is None:
            self._periods = periods_of(
                [(b.kpi_key, b.bounds_us) for b in self.reader.all_bindings()]
            )
        return self._periods

    def _plan(
        self,
        items: Sequence[Item],
        prepared: PreparedBatch | None,
        timer: StageTimer,
        *,
        look_up_ids: bool,
    ) -> _Plan:
        """The batch's effects on the state as stored now.

        Stored event ids are looked up only after a lost race: the first attempt inserts them
        as if new, and the key's uniqueness fails the save if one was not (a resent event). The
        lookup probed the same index once more for every record of every batch (ADR 14)."""
        topics = {topic for topic, _ in prepared.lowest_offsets} if prepared else None
        stored = self._stored_positions(topics or {origin.topic for origin, _ in items})
        received_at = prepared.received_at if prepared else datetime.now(UTC).isoformat()
        periods = self.binding_periods()
        if prepared is None or not prepared.holds_for(stored):
            with timer.stage("prepare"):
                prepared = prepare(items, periods, received_at, skipped_before=stored)
        if not prepared.last_offsets:
            return _Plan(self._report(prepared, stored))
        known = self.reader.stored_event_ids(prepared.event_ids) if look_up_ids else set()
        if known:
            with timer.stage("prepare"):
                prepared = prepare(
                    items,
                    prepared.periods,
                    received_at,
                    skipped_before=stored,
                    known=frozenset(known),
                )
        # The stats row is the KPI's fence: read it before anything else of the KPI.
        new = [kpi_key for kpi_key, share in prepared.kpis.items() if share.accepted]
        stats = self.reader.stats(sorted(prepared.kpis))
        bindings = self.reader.bindings_of_kpis(set(new))
        now_bound = periods_of([(b.kpi_key, b.bounds_us) for b in bindings])
        self._periods = {**periods, **{kpi_key: now_bound.get(kpi_key, ()) for kpi_key in new}}
        if not prepared.holds_for(stored, self._periods):
            with timer.stage("prepare"):
                prepared = prepare(
                    items, self._periods, received_at, skipped_before=stored, known=prepared.known
                )
        report = self._report(prepared, stored)
        moved = _complete(prepared, stats, bindings, report)
        plan = _Plan(report)
        plan.batch = KpiBatch(
            series=prepared.series,
            event_ids=prepared.sorted_event_ids,
            stats=list(stats.values()),
            bindings=[m.binding for m in moved],
            positions=[
                PositionMove(topic, partition, stored.get((topic, partition)), offset + 1)
                for (topic, partition), offset in sorted(prepared.last_offsets.items())
            ],
        )
        self._decide(plan, moved)
        return plan

    @staticmethod
    def _report(prepared: PreparedBatch, stored: dict[tuple[str, int], int]) -> BatchReport:
        shares = prepared.kpis.values()
        return BatchReport(
            records=prepared.records,
            dead_lettered=prepared.dead_lettered,
            already_scored=prepared.already_scored,
            accepted=sum(share.accepted for share in shares),
            duplicates=sum(share.duplicates for share in shares),
            next_offsets=dict(stored),
        )

    def _decide(self, plan: _Plan, moves: list[_Moved]) -> None:
        """One `record_kpi_progress` per moved key result, on the objective as it stands."""
        active = [m for m in moves if m.binding.objective_status == ObjectiveStatus.ACTIVE]
        # A draft scores when activated (bindings follower), a closed or archived one never.
        plan.objective_ids = {m.binding.objective_id for m in active}
        plan.objectives = self._load(plan.objective_ids)
        now = self.application.clock()
        for moved in sorted(active, key=lambda m: m.binding.key):
            binding = moved.binding
            value = binding.value
            objective = plan.objectives.get(binding.objective_id)
            if value is None or objective is None:
                continue
            decision = Decision(
                actor=self.actor,
                command_id=f"kpi:{binding.kpi_key}:{moved.last_event_id}",
                now=now,
            )
            try:
                objective, events = move_key_result(
                    objective,
                    decision,
                    binding,
                    value,
                    observations=moved.observations,
                    last_kpi_event_id=moved.last_event_id,
                    last_offset=moved.last_offset,
                )
            except NotScorableError as error:
                log.warning("key result %s not moved: %s", binding.key_result_id, error)
                continue
            plan.events.extend(events)
            plan.objectives[binding.objective_id] = objective
        plan.report.progress_events = len(plan.events)

    def _load(self, objective_ids: Iterable[UUID]) -> dict[UUID, Objective]:
        """Objectives as stored: from the cache when it holds the stored version (one query for
        all of them), else loaded (and cached) through the repository."""
        ids = sorted(objective_ids)
        if not ids:
            return {}
        versions = self.application.receipts.current_versions(ids)
        cache = self.application.repository.cache
        loaded: dict[UUID, Objective] = {}
        for objective_id in ids:
            if objective_id not in versions:
                continue
            objective: Objective | None = None
            if cache is not None:
                with contextlib.suppress(KeyError):
                    objective = cast(Objective, cache.get(objective_id))
            if objective is None or objective.version != versions[objective_id]:
                objective = self.application.get_objective(objective_id)
            if objective is not None:
                loaded[objective_id] = objective
        return loaded

    def _stored_positions(self, topics: Iterable[str]) -> dict[tuple[str, int], int]:
        return {
            (topic, partition): offset
            for topic in topics
            for partition, offset in self.reader.positions(topic).items()
        }

    def _remember(self, objectives: dict[UUID, Objective]) -> None:
        """The objectives as saved, so the next batch does not replay what we just wrote."""
        cache = self.application.repository.cache
        if cache is None:
            return
        for objective_id, objective in objectives.items():
            cache.put(objective_id, objective)


@dataclass
class _Plan:
    report: BatchReport
    batch: KpiBatch | None = None
    events: list[DomainEvent] = field(default_factory=list)
    objectives: dict[UUID, Objective] = field(default_factory=dict)
    objective_ids: set[UUID] = field(default_factory=set)


def move_key_result(
    objective: Objective,
    decision: Decision,
    binding: Binding,
    value: float,
    *,
    observations: int,
    last_kpi_event_id: str,
    last_offset: int | None = None,
) -> tuple[Objective, list[DomainEvent]]:
    """The bound key result takes its KPI's value: the events, and the objective after them.

    Shared by the scorer (a batch moved the KPI) and the bindings follower (a key result was just
    bound, so it takes what is stored); both name the binding the value was computed for, so a
    key result rebound since takes nothing. Raises `NotScorableError` as `record_kpi_progress`."""
    events = record_kpi_progress(
        objective,
        decision,
        binding.key_result_id,
        value,
        observations=observations,
        last_kpi_event_id=last_kpi_event_id,
        last_offset=last_offset,
        binding=KpiBinding(kpi_key=binding.kpi_key, aggregation=binding.aggregation),
    )
    for event in events:
        objective = evolve(event, objective)
    return objective, events


@dataclass(frozen=True, slots=True)
class _Moved:
    """A binding with the batch's observations added: how many, and the last one (batch order)."""

    binding: Binding
    observations: int
    last_event_id: str
    last_offset: int


def _complete(
    prepared: PreparedBatch,
    stats: dict[str, KpiStats],
    bindings: Sequence[Binding],
    report: BatchReport,
) -> list[_Moved]:
    """Add a prepared batch to the stored counters and to every binding it moves: work per KPI
    and per binding, none per observation. "Stale" (older than the KPI's latest when it
    arrived) counts in batch order, as one-by-one processing would; the aggregates themselves do
    not depend on the order."""
    bound: dict[str, list[Binding]] = defaultdict(list)
    for binding in bindings:
        bound[binding.kpi_key].append(binding)
    moved: list[_Moved] = []
    for kpi_key, share in prepared.kpis.items():
        kpi = stats[kpi_key]
        kpi.duplicates += share.duplicates
        if not share.accepted:
            continue
        kpi.accepted += share.accepted
        kpi.last_received_at = prepared.received_at
        stale = share.stale_after(kpi.latest)
        kpi.stale += stale
        report.stale += stale
        assert share.newest is not None
        if kpi.latest is None or share.newest.order_key > kpi.latest.order_key:
            kpi.latest = share.newest
        if kpi_key not in bound:
            kpi.unbound += share.accepted
            report.unbound += share.accepted
            continue
        kpi.outside_period += share.outside_periods
        report.outside_period += share.outside_periods
        for binding in bound[kpi_key]:
            added = share.periods.get(binding.bounds_us)
            if added is not None:
                merged = replace(binding, aggregate=binding.aggregate.merge(added.aggregate))
                moved.append(
                    _Moved(merged, added.observations, added.last_event_id, added.last_offset)
                )
    return moved


# --- one batch, from Kafka records ----------------------------------------------------------------


async def score_batch(
    application: OkrApplication,
    records: Sequence[KafkaRecord],
    dead_letters: DeadLetterPublisher,
    *,
    scorer: KpiScorer | None = None,
) -> BatchReport:
    """Score one batch of `kpi.events` records (any topics and partitions); no consumer needed."""
    items = await read_batch(records, dead_letters)
    scorer = scorer or KpiScorer(application)
    return await _to_thread_to_completion(scorer.score, items)


async def read_batch(
    records: Sequence[KafkaRecord], dead_letters: DeadLetterPublisher
) -> list[Item]:
    """Every record read; what is not a KPI event is dead-lettered (and kept as None: its
    offset still counts)."""
    started = perf_counter()
    parts, rejected = read_parts(raw_parts(records))
    items = items_of(parts)
    current_stages().observe(SCORER, "decode", perf_counter() - started, len(records))
    await dead_letter(dead_letters, records, rejected)
    return items


def raw_parts(records: Sequence[KafkaRecord]) -> list[RawPart]:
    """The records as parts: each run of consecutive records of one partition (order kept)."""
    runs = groupby(records, key=attrgetter("topic", "partition"))
    return [
        RawPart(topic, partition, [r.offset for r in run], [r.value for r in run])
        for (topic, partition), run in ((key, list(group)) for key, group in runs)
    ]


async def dead_letter(
    dead_letters: DeadLetterPublisher,
    records: Sequence[KafkaRecord],
    rejected: Sequence[tuple[int, NotAKpiEventError]],
) -> None:
    """Publish the records that are not KPI events (by index in `records`) on `okr.dlq`.

    Acknowledged by Kafka before the batch is saved: the saved position passes over them, so a
    crash in between dead-letters them again rather than losing them.
    """
    if not rejected:
        return
    await asyncio.gather(
        *(
            dead_letters.publish(records[index], error.reason, error.detail)
            for index, error in rejected
        )
    )
    first = records[rejected[0][0]]
    log.warning(
        "%d KPI record(s) dead-lettered, e.g. %s[%d]@%d: %s",
        len(rejected),
        first.topic,
        first.partition,
        first.offset,
        rejected[0][1],
    )


async def _to_thread_to_completion(
    function: Callable[[Sequence[Item]], BatchReport], items: Sequence[Item]
) -> BatchReport:
    """Run a batch in a worker thread; if cancelled meanwhile, let it finish before re-raising.

    A cancelled `asyncio.to_thread` leaves its thread running: the caller would go on to leave
    the group and close the application (its connection pool) under a transaction in flight.
    Waiting for the batch (bounded: one transaction) keeps shutdown orderly.
    """
    work = asyncio.ensure_future(asyncio.to_thread(function, items))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.shield(work)
        raise


# --- records that fail for good -----------------------------------------------------------------


class Suspects:
    """Where a batch failed for good: the records up to there are scored in halves next time.

    A failure a retry cannot cure (not an outage, not a lost race) leaves the scorer knowing
    only that some record it was handed breaks scoring. The consumer's positions at that moment
    bound the suspects: on the next attempt, records below them are scored by bisection
    (`score_isolating`), which finds the record that fails alone and sets it aside, and the
    scorer returns to whole batches once it is past them.
    """

    def __init__(self) -> None:
        self.until: dict[TopicPartition, int] = {}
        """Per partition, the first offset that is no longer suspect."""
        self.streak = SetAsideStreak()

    async def arm(self, consumer: AIOKafkaConsumer, error: BaseException) -> None:
        for tp in consumer.assignment():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    position = await consumer.position(tp)
                self.until[tp] = max(self.until.get(tp, 0), position)
        if self.until:
            log.warning(
                "KPI scorer: %s; the records it was handed will be scored in halves to find "
                "the one that fails",
                describe(error),
            )

    def cover(self, fetched: Mapping[TopicPartition, Sequence[KafkaRecord]]) -> bool:
        if not self.until:  # every batch asks: nothing to look at unless a batch failed for good
            return False
        return any(held and held[0].offset < self.until.get(tp, -1) for tp, held in fetched.items())

    def passed(self, fetched: Mapping[TopicPartition, Sequence[KafkaRecord]]) -> None:
        for tp, held in fetched.items():
            if held and held[-1].offset + 1 >= self.until.get(tp, 0):
                self.until.pop(tp, None)


async def score_isolating(
    scorer: KpiScorer,
    records: Sequence[KafkaRecord],
    dead_letters: DeadLetterPublisher,
    suspects: Suspects,
) -> BatchReport:
    """Score `records`; a part that fails for good is scored in halves, and a record that fails
    alone is dead-lettered (`processing_failed`) and passed over (its position moves, nothing
    else). Outages are raised: the caller retries."""
    items = await read_batch(records, dead_letters)
    report = BatchReport()

    async def score(start: int, end: int) -> None:
        try:
            done = await _to_thread_to_completion(scorer.score, items[start:end])
        except Exception as error:
            if is_transient(error):
                raise
            if end - start > 1:
                middle = (start + end) // 2
                await score(start, middle)
                await score(middle, end)
                return
            await set_aside(start, error)
            return
        suspects.streak.processed()
        _add(report, done)

    async def set_aside(index: int, error: Exception) -> None:
        suspects.streak.setting_aside(error)
        record = records[index]
        log.error(
            "KPI scorer: %s[%d]@%d cannot be scored; dead-lettering it",
            record.topic,
            record.partition,
            record.offset,
            exc_info=error,
        )
        await dead_letters.publish(record, "processing_failed", error)
        origin, _ = items[index]
        # Scored as a record that is not a KPI event: its position moves, nothing else.
        _add(report, await _to_thread_to_completion(scorer.score, [(origin, None)]))

    await score(0, len(items))
    return report


def _add(total: BatchReport, part: BatchReport) -> None:
    """Sum the counters of `part` into `total`; the positions are the latest."""
    for counter in fields(BatchReport):
        if counter.name != "next_offsets":
            setattr(total, counter.name, getattr(total, counter.name) + getattr(part, counter.name))
    total.next_offsets.update(part.next_offsets)


# --- the consumer loop ----------------------------------------------------------------------------


def stored_positions(
    reader: KpiReader, partitions: Sequence[TopicPartition]
) -> dict[TopicPartition, int]:
    """The event store's next offset to score of each partition it has a position for."""
    found: dict[TopicPartition, int] = {}
    for topic in sorted({tp.topic for tp in partitions}):
        positions = reader.positions(topic)
        found.update(
            (tp, positions[tp.partition])
            for tp in partitions
            if tp.topic == topic and tp.partition in positions
        )
    return found


def subscription(settings: Settings, group: str, scorer: KpiScorer) -> Subscription:
    """`kpi.events` from the event store's positions, with bigger fetches than the other
    consumers (a backlog's batches are tens of thousands of records) and a short session."""
    return Subscription(
        name="KPI scorer",
        topics=(settings.topic(KPI_EVENTS),),
        group_id=group,
        client_options=settings.kafka_client_options(),
        stored_positions=partial(stored_positions, scorer.reader),
        stage_job=SCORER,
        options={
            "session_timeout_ms": SESSION_TIMEOUT_MS,
            "heartbeat_interval_ms": SESSION_TIMEOUT_MS // 3,
            "max_partition_fetch_bytes": 4 * 1024 * 1024,
            "fetch_max_bytes": 32 * 1024 * 1024,
        },
        on_assigned=scorer.assigned.update,
        on_revoked=scorer.assigned.difference_update,
    )


async def run_scorer(
    settings: Settings,
    application: OkrApplication,
    *,
    group_id: str | None = None,
    max_records: int = MAX_RECORDS,
    batch_interval_s: float | None = None,
    backoff: Backoff = Backoff(),
    scorer: KpiScorer | None = None,
) -> None:
    """Score `kpi.events` until cancelled. Any failure: log, back off, reconnect, and resume from
    the stored positions (nothing is lost or doubled: they move only with the effects)."""
    group = group_id or group_id_for(settings)
    scorer = scorer or KpiScorer(application)
    window_s = settings.scorer_window_ms / 1000 if batch_interval_s is None else batch_interval_s
    freeze_start_up_objects(SCORER_YOUNG_THRESHOLD)

    suspects = Suspects()

    @contextlib.asynccontextmanager
    async def opening() -> AsyncIterator[Work]:
        """The producer and the worker processes, started before the consumer joins."""
        await ensure_topics(settings)
        await asyncio.to_thread(scorer.binding_periods)
        async with (
            acknowledged_producer(settings.kafka_client_options(), group) as producer,
            preparation_worker(settings) as worker,
        ):
            dead_letters = DeadLetterPublisher(
                settings, send_with_producer(producer), consumer_group=group
            )

            async def score(consumer: Consumer, succeeded: Callable[[], None]) -> None:
                try:
                    await _consume(
                        settings,
                        scorer,
                        consumer,
                        dead_letters,
                        worker,
                        max_records,
                        window_s,
                        succeeded,
                        suspects,
                    )
                except Exception as error:
                    if not is_transient(error):
                        await suspects.arm(consumer.kafka, error)
                    raise
                finally:
                    scorer.assigned.clear()

            yield score

    await run_consumer(
        subscription(settings, group, scorer),
        opening,
        backoff=backoff,
        resuming="resuming from the stored positions",
        log=log,
    )


@contextlib.asynccontextmanager
async def preparation_worker(settings: Settings) -> AsyncIterator[PreparationWorker | None]:
    """The worker process that prepares big batches, unless `scorer_worker_from` is 0."""
    if settings.scorer_worker_from <= 0:
        yield None
        return
    worker = PreparationWorker(settings.scorer_workers)
    try:
        await worker.start()
        yield worker
    finally:
        await asyncio.to_thread(worker.stop)  # waits for the pool: not on the event loop


async def _consume(
    settings: Settings,
    scorer: KpiScorer,
    consumer: Consumer,
    dead_letters: DeadLetterPublisher,
    worker: PreparationWorker | None,
    max_records: int,
    batch_interval_s: float,
    succeeded: Callable[[], None],
    suspects: Suspects,
) -> None:
    loop = asyncio.get_running_loop()
    last_started = float("-inf")
    in_flight: _InFlight | None = None
    pending: deque[_Read] = deque()
    """Batches being prepared in the worker processes, oldest first."""
    depth = worker.processes if worker is not None else 0

    async def hand_over(batch: _Read) -> None:
        """Dead-letter what the worker could not read, wait for the previous save, and start
        this batch's."""
        nonlocal in_flight, last_started
        prepared = None
        if batch.preparing is not None:
            prepared = await batch.preparing
            await dead_letter(dead_letters, batch.records, prepared.rejected)
        if in_flight is not None:
            await in_flight.finish(consumer, succeeded)
        last_started = loop.time()
        in_flight = _InFlight(batch.last_offsets, _start_scoring(scorer, batch.items, prepared))

    try:
        while True:
            # Batches in the workers are handed over (oldest first) once the workers are all
            # busy with later ones, or when nothing more is buffered. Once records come, what
            # arrives within the rest of the scoring window joins them.
            fetched = await consumer.fetch(
                0 if pending else FETCH_TIMEOUT_MS,
                max_records,
                window_s=last_started + batch_interval_s - loop.time(),
            )
            if not fetched:
                if pending:
                    await hand_over(pending.popleft())
                elif in_flight is not None:
                    await in_flight.finish(consumer, succeeded)
                    in_flight = None
                continue
            if suspects.cover(fetched):
                while pending:
                    await hand_over(pending.popleft())
                if in_flight is not None:
                    await in_flight.finish(consumer, succeeded)
                    in_flight = None
                records = [record for tp in sorted(fetched) for record in fetched[tp]]
                report = await score_isolating(scorer, records, dead_letters, suspects)
                succeeded()
                _follow_stored_positions(
                    consumer, {tp: held[-1].offset for tp, held in fetched.items() if held}, report
                )
                suspects.passed(fetched)
                continue
            batch = await _read(settings, scorer, worker, dead_letters, fetched)
            if batch is None:
                continue
            if batch.preparing is None:
                while pending:
                    await hand_over(pending.popleft())
                await hand_over(batch)
                continue
            pending.append(batch)
            while len(pending) > depth:
                await hand_over(pending.popleft())
    finally:
        for waiting in pending:
            if waiting.preparing is not None:
                waiting.preparing.cancel()
        if in_flight is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(in_flight.scoring)


@dataclass
class _Read:
    """A fetched batch, read in this thread or being prepared in the worker process."""

    records: list[KafkaRecord]
    last_offsets: dict[TopicPartition, int]
    """Per partition, the last offset fetched for it."""
    items: Sequence[Item]
    preparing: asyncio.Future[PreparedBatch] | None = None


async def _read(
    settings: Settings,
    scorer: KpiScorer,
    worker: PreparationWorker | None,
    dead_letters: DeadLetterPublisher,
    fetched: dict[TopicPartition, list[Any]],
) -> _Read | None:
    """Start a big batch's preparation in the worker process; read a small one here (and
    dead-letter what is not a KPI event)."""
    records = [record for tp in sorted(fetched) for record in fetched[tp]]
    if not records:
        return None
    ends = {tp: held[-1].offset for tp, held in fetched.items() if held}
    if worker is None or len(records) < settings.scorer_worker_from:
        return _Read(records, ends, await read_batch(records, dead_letters))
    parts = raw_parts(records)
    received_at = datetime.now(UTC).isoformat()
    preparing = worker.prepare(parts, scorer.binding_periods(), received_at)
    return _Read(records, ends, ReadOnDemand(parts), preparing)


@dataclass
class _InFlight:
    """A batch being scored in the worker thread, and where its fetch ended."""

    last_offsets: dict[TopicPartition, int]
    """Per partition, the last offset fetched for it (the records themselves are not kept)."""
    scoring: asyncio.Future[BatchReport]

    async def finish(self, consumer: Consumer, succeeded: Callable[[], None]) -> None:
        """Wait for the save (re-raising its failure), then follow the stored positions."""
        report = await asyncio.shield(self.scoring)
        _log_report(report)
        succeeded()
        _follow_stored_positions(consumer, self.last_offsets, report)


def _start_scoring(
    scorer: KpiScorer, items: Sequence[Item], prepared: PreparedBatch | None
) -> asyncio.Future[BatchReport]:
    """Hand the batch to a worker thread now. (A task around `asyncio.to_thread` would reach the
    executor only at the loop's next turn, and the loop may not turn until it waits for this
    very batch: buffered records are fetched and read without suspending.) It runs in a copy of
    this task's context, as `asyncio.to_thread` would: its stages go to the job's board."""
    context = contextvars.copy_context()
    return asyncio.get_running_loop().run_in_executor(
        None, context.run, scorer.score, items, prepared
    )


def _follow_stored_positions(
    consumer: Consumer, last_offsets: dict[TopicPartition, int], report: BatchReport
) -> None:
    """Skip ahead where another scorer got further than this batch (after a rebalance), and hand
    the stored positions to Kafka's commits (for lag monitoring only; in the background)."""
    offsets: dict[TopicPartition, int] = {}
    held = consumer.assigned()
    for tp, last in last_offsets.items():
        stored = report.next_offsets.get((tp.topic, tp.partition))
        if stored is None or tp not in held:
            continue  # revoked during the batch: its new holder seeks to the stored position
        offsets[tp] = stored
        if stored > last + 1:
            consumer.kafka.seek(tp, stored)
    if offsets:
        consumer.commit(offsets, report.records)


def _log_report(report: BatchReport) -> None:
    log.debug("KPI batch: %s", report)
