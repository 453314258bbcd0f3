"""The one Kafka consumer of the service: what the projector, the scorer and the command consumer
each did for themselves, once (docs/decisions/0026-one-kafka-consumer.md).

A job describes what it reads (`Subscription`) and writes only what it does with a batch; this
module owns the rest:

- the client: the job's group (and client id), no auto-commit, `earliest`, the short fetch wait
  of a live consumer that turns long while nothing comes (`IdleFetchWait`), plus the job's own
  options (the scorer's session timeout and fetch sizes);
- where it starts: when the job keeps its positions with its effects (projector, scorer), each
  assigned partition stays paused until sought to them (`SeekToStoredPositions`), and a failure
  to read them stops the attempt; otherwise (the command consumer) Kafka's committed offsets are
  the positions, and a redelivery is made harmless by the job (its receipts);
- fetching (`Consumer.fetch`): a batch, gathered over a window if asked, the listener's failure
  raised, the job's `fetch` stage observed;
- committing (`Consumer.commit`): after the effects, never holding up the next batch: one commit
  in flight, carrying the latest offsets of each partition still assigned; the job's `commit`
  stage observed. A committed-offset job's commits are flushed when its partitions are revoked;
- closing within `CLOSE_TIMEOUT_S`;
- supervision (`run_consumer`): `keep_running`, so the job backs off with one `Backoff`, has its
  entry on the job board (`/health`, `/metrics`), and restarts from its positions; what an
  attempt holds besides (`Opening`) is opened before the consumer joins its group;
- the producer of its outcomes (`acknowledged_producer`): `acks=all`, idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any, NoReturn

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from projections.backoff import Backoff, keep_running
from projections.failures import describe
from projections.job_health import current_stages
from projections.kafka_positions import (
    FETCH_MAX_WAIT_MS,
    IdleFetchWait,
    PartitionsHook,
    SeekToStoredPositions,
    StoredPositions,
)

if TYPE_CHECKING:
    from aiokafka.structs import ConsumerRecord

log = logging.getLogger(__name__)

Fetched = dict[TopicPartition, list["ConsumerRecord[Any, Any]"]]
"""A batch as aiokafka returns it: each partition's records, in offset order."""

CLOSE_TIMEOUT_S = 5.0
"""Longest wait for a client to close. aiokafka's close first waits for a JoinGroup in flight,
which the broker may hold for the whole rebalance (up to `max.poll.interval.ms`, 5 min) while
members killed without leaving time out; the positions make leaving cleanly unnecessary (the
broker drops us after the session timeout), so shutdown is bounded instead."""
COMMIT_STOP_WAIT_S = 2.0
"""How long closing waits for the commit in flight."""


@dataclass(frozen=True)
class Subscription:
    """What a job reads, as whom, and from where it starts."""

    name: str
    """The job's name: its entry on the board, and in the log."""
    topics: tuple[str, ...]
    group_id: str
    client_options: Mapping[str, Any]
    """aiokafka's connection keywords (bootstrap servers, security)."""
    stored_positions: StoredPositions | None = None
    """Where the job's effects say each partition is; None: Kafka's committed offsets."""
    stage_job: str | None = None
    """The `job` label its `fetch` and `commit` stages are observed under (none if None)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """aiokafka consumer keywords of this job only, over the common ones."""
    on_assigned: PartitionsHook | None = None
    on_revoked: PartitionsHook | None = None


def kafka_consumer(subscription: Subscription) -> AIOKafkaConsumer:
    """The client every job reads with, made the same way."""
    common: dict[str, Any] = {
        "group_id": subscription.group_id,
        "client_id": subscription.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
    }
    return AIOKafkaConsumer(**subscription.client_options, **{**common, **subscription.options})


class Consumer:
    """A started consumer: fetch a batch, commit after its effects."""

    def __init__(self, kafka: AIOKafkaConsumer, subscription: Subscription) -> None:
        self.kafka = kafka
        self.subscription = subscription
        self.commits = KafkaCommits(kafka, subscription.name, subscription.stage_job)
        self.listener: SeekToStoredPositions | CommittedOffsets
        if subscription.stored_positions is not None:
            self.listener = SeekToStoredPositions(
                kafka,
                subscription.stored_positions,
                name=subscription.name,
                on_assigned=subscription.on_assigned,
                on_revoked=subscription.on_revoked,
            )
        else:
            self.listener = CommittedOffsets(kafka, subscription, self.commits)
        self._stages = current_stages()

    async def fetch(self, timeout_ms: int, max_records: int, *, window_s: float = 0.0) -> Fetched:
        """A batch of at most `max_records`, waiting up to `timeout_ms` for the first records,
        then gathering what else arrives within `window_s`. Empty when nothing came."""
        fetching = perf_counter()
        fetched: Fetched = await self.kafka.getmany(timeout_ms=timeout_ms, max_records=max_records)
        self.listener.raise_if_failed()
        if not fetched:
            return fetched
        if window_s > 0:
            await self._gather_more(fetched, window_s, max_records)
            self.listener.raise_if_failed()
        if self.subscription.stage_job is not None:
            size = sum(len(records) for records in fetched.values())
            self._stages.observe(
                self.subscription.stage_job, "fetch", perf_counter() - fetching, size
            )
        return fetched

    async def _gather_more(self, fetched: Fetched, wait_s: float, max_records: int) -> None:
        """Add to `fetched` what arrives within `wait_s`, up to the batch size. Drained as it
        arrives, not once at the end: aiokafka fetches a partition again only once its buffered
        records are taken, so a single late drain would leave everything after the first fetch
        on the broker until the next batch. A partition reassigned in between is sought back to
        its position: records already held are not added twice."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        room = max_records - sum(len(records) for records in fetched.values())
        while room > 0 and (left_ms := int((deadline - loop.time()) * 1000)) > 0:
            more = await self.kafka.getmany(timeout_ms=left_ms, max_records=room)
            for tp, records in more.items():
                held = fetched.setdefault(tp, [])
                after = held[-1].offset if held else -1
                added = [record for record in records if record.offset > after]
                held.extend(added)
                room -= len(added)

    def commit(self, offsets: Mapping[TopicPartition, int], messages: int) -> None:
        """Tell Kafka these next offsets once the effects before them are done; returns at once."""
        self.commits.follow(offsets, messages)

    def assigned(self) -> set[TopicPartition]:
        return self.kafka.assignment()  # type: ignore[no-any-return]


def offsets_after(fetched: Fetched) -> dict[TopicPartition, int]:
    """The next offset of each partition once a whole batch is done."""
    return {tp: records[-1].offset + 1 for tp, records in fetched.items() if records}


class CommittedOffsets(ConsumerRebalanceListener):  # type: ignore[misc]
    """The listener of a job whose positions are Kafka's committed offsets: what it committed
    is flushed before its partitions go to another member, so the new holder starts after the
    last outcome, not before it. Quiet while idle, as `SeekToStoredPositions` is."""

    def __init__(
        self, kafka: AIOKafkaConsumer, subscription: Subscription, commits: KafkaCommits
    ) -> None:
        self.fetch_wait = IdleFetchWait(kafka)
        self._subscription = subscription
        self._commits = commits

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        await self._commits.flush()
        if self._subscription.on_revoked is not None:
            self._subscription.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        if self._subscription.on_assigned is not None:
            self._subscription.on_assigned(set(assigned))
        if assigned:
            log.info(
                "%s: assigned %s",
                self._subscription.name,
                [f"{p.topic}[{p.partition}]" for p in sorted(assigned)],
            )

    def raise_if_failed(self) -> None:
        """Nothing to fail: Kafka seeks to its committed offsets itself."""


class KafkaCommits:
    """Commits the offsets of the batches done without holding up the next: one commit in
    flight at a time, in a task of its own, with the latest offsets of each partition still
    assigned (a commit round trip took ~7 ms a batch, during which what had arrived waited).
    A failed commit is logged: a job with stored positions resumes from them anyway, the
    command consumer's receipts answer a redelivered command as the first time."""

    def __init__(self, kafka: AIOKafkaConsumer, name: str, stage_job: str | None) -> None:
        self._kafka = kafka
        self._name = name
        self._stage_job = stage_job
        self._offsets: dict[TopicPartition, int] = {}
        self._messages = 0
        self._task: asyncio.Task[None] | None = None

    def follow(self, offsets: Mapping[TopicPartition, int], messages: int) -> None:
        self._offsets.update(offsets)
        self._messages += messages
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._commit())

    async def _commit(self) -> None:
        stages = current_stages()
        while self._offsets:
            offsets, messages = self._offsets, self._messages
            self._offsets, self._messages = {}, 0
            held = self._kafka.assignment()
            offsets = {tp: offset for tp, offset in offsets.items() if tp in held}
            if not offsets:
                continue  # revoked meanwhile: the new holder starts from its positions
            committing = perf_counter()
            try:
                await self._kafka.commit(offsets)
            except KafkaError as error:
                log.info("%s: Kafka commit skipped (%s)", self._name, describe(error))
            if self._stage_job is not None:
                stages.observe(self._stage_job, "commit", perf_counter() - committing, messages)

    async def flush(self) -> None:
        """Return once what was handed over so far is committed (or failed to be)."""
        while self._task is not None and not self._task.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._task)

    async def stop(self) -> None:
        """Give the commits a moment to finish (the consumer is stopped next)."""
        with contextlib.suppress(Exception, TimeoutError):
            await asyncio.wait_for(self.flush(), COMMIT_STOP_WAIT_S)


@contextlib.asynccontextmanager
async def consuming(subscription: Subscription) -> AsyncIterator[Consumer]:
    """A consumer subscribed and started; on exit, its commits finished and it closed (bounded)."""
    kafka = kafka_consumer(subscription)
    consumer = Consumer(kafka, subscription)
    try:
        kafka.subscribe(list(subscription.topics), listener=consumer.listener)
        await kafka.start()
        log.info(
            "%s consuming %s as group %s",
            subscription.name,
            ", ".join(subscription.topics),
            subscription.group_id,
        )
        yield consumer
    finally:
        await consumer.commits.stop()
        await close_within(kafka.stop(), f"{subscription.name}: consumer")


Work = Callable[[Consumer, Callable[[], None]], Awaitable[None]]
"""A job's loop over a started consumer; calls `succeeded()` after each batch done."""
Opening = Callable[[], contextlib.AbstractAsyncContextManager[Work]]
"""What an attempt holds besides the consumer (a producer, worker processes), opened before the
consumer joins its group so that nothing is left to start once partitions are assigned: a
context that yields the job's loop."""


def just(work: Work) -> Opening:
    """The opening of a job that holds nothing but its consumer."""
    return lambda: contextlib.nullcontext(work)


async def run_consumer(
    subscription: Subscription,
    opening: Opening,
    *,
    backoff: Backoff,
    resuming: str,
    log: logging.Logger,
) -> NoReturn:
    """Run the job's loop on a new consumer until cancelled, under the one supervision: any
    failure closes what the attempt opened, backs off and starts again from the positions
    (`keep_running`: the job's entry on the board says `retrying` meanwhile)."""

    async def attempt(succeeded: Callable[[], None]) -> None:
        async with opening() as work, consuming(subscription) as consumer:
            succeeded()
            await work(consumer, succeeded)

    await keep_running(subscription.name, attempt, backoff=backoff, resuming=resuming, log=log)


def new_acknowledged_producer(
    client_options: Mapping[str, Any], client_id: str | None = None, **options: Any
) -> AIOKafkaProducer:
    """A producer whose writes are acknowledged by every in-sync replica, without duplicates
    on retry (docs/decisions/0021): what every consumer and the relay publish with. `options`:
    aiokafka producer keywords of one user (the relay's `linger_ms`)."""
    if client_id:
        options["client_id"] = client_id
    return AIOKafkaProducer(**client_options, **options, enable_idempotence=True, acks="all")


@contextlib.asynccontextmanager
async def acknowledged_producer(
    client_options: Mapping[str, Any], client_id: str | None = None, **options: Any
) -> AsyncIterator[AIOKafkaProducer]:
    """`new_acknowledged_producer`, started, and closed within `CLOSE_TIMEOUT_S`."""
    producer = new_acknowledged_producer(client_options, client_id, **options)
    try:
        await producer.start()
        yield producer
    finally:
        await close_within(producer.stop(), "producer")


async def close_within(closing: Coroutine[Any, Any, None], what: str) -> None:
    """Close a Kafka client, but never for longer than `CLOSE_TIMEOUT_S`, and never let a close
    failure replace the exception (or cancellation) that is being propagated."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await closing
    except TimeoutError:
        log.warning("%s not closed within %.0fs; moving on", what, CLOSE_TIMEOUT_S)
    except Exception as error:
        log.warning("%s closed with %s: %s", what, type(error).__name__, error)
    except asyncio.CancelledError:
        if _being_cancelled():
            raise
        # aiokafka's close can re-raise the cancellation of one of its own inner tasks.
        log.warning("%s: close was interrupted by one of its own tasks", what)


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
