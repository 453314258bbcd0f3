"""The transactional-outbox relay: every stored event, in order, onto `okr.events`.

The event store is the outbox. A command's events commit in one transaction, and the relay follows
the store's notification log afterwards, so a write never waits for Kafka and an outage only delays
publication. The relay's position (the last notification id Kafka acknowledged) is kept in the
event store's own database by eventsourcing's tracking recorder, and it moves only after the broker
acknowledged every event up to it: a crash or restart republishes at most the unacknowledged tail.
Delivery is therefore at-least-once; consumers dedupe on (objective id, version).

Each batch's stages are timed once (read, publish, record: the `okr_stage_*{job="relay"}`
histograms of `projections.stage_timings`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, cast
from weakref import WeakKeyDictionary

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from eventsourcing.persistence import IntegrityError, Tracking

from domain.objective_events import DomainEvent
from events import okr, topics
from projections.backoff import Backoff, keep_running
from projections.job_health import current_stages
from projections.stage_timings import RELAY, StageTimer
from services.relay.wakeup import SAFETY_POLL_S, wait_for_wakeup

if TYPE_CHECKING:
    from eventsourcing.persistence import TrackingRecorder

    from services.commands.application import OkrApplication
    from services.settings import Settings

log = logging.getLogger(__name__)

RELAY_NAME = "okr.events-relay"
"""Name of the relay's row in the tracking table; other trackers (projections) use their own."""

BATCH_SIZE = 500
"""An idle relay wakes when any process saves (`OkrApplication.saved`: this process's saves,
and other processes' through the store's doorbell, `services.relay.wakeup`); it looks at the log
this
often anyway, in case a ring was lost. It polled every 10 ms before, ~8 % of a core when idle."""

# --- translation: stored domain event -> wire envelope --------------------------------------------


def to_envelope(event: DomainEvent) -> okr.OkrEventEnvelope:
    """The one place a domain event becomes the contract other services read: its declared
    payload (`DomainEvent.payload`), in the envelope its header fills."""
    return okr.okr_event(
        event.payload(),
        objective_id=event.originator_id,
        version=event.originator_version,
        occurred_at=event.timestamp,
        actor=event.actor,
        command_id=event.command_id,
        reason=event.reason,
        chain_hash=event.chain_hash or None,
    )


# --- position: the last acknowledged notification id, in the event store --------------------------


_TRACKING_RECORDERS: WeakKeyDictionary[OkrApplication, TrackingRecorder] = WeakKeyDictionary()
_TRACKING_RECORDERS_LOCK = threading.Lock()


def tracking_recorder(application: OkrApplication) -> TrackingRecorder:
    """The application's tracking recorder, built once.

    Building one creates (or migrates) the tracking table; two threads doing that at once would
    both insert the table's migration row, and one would fail.
    """
    with _TRACKING_RECORDERS_LOCK:
        recorder = _TRACKING_RECORDERS.get(application)
        if recorder is None:
            recorder = application.factory.tracking_recorder()
            _TRACKING_RECORDERS[application] = recorder
        return recorder


class RelayPosition:
    """Where the relay is, recorded in the event store's database (same file or same PostgreSQL)."""

    def __init__(self, application: OkrApplication) -> None:
        self._recorder = tracking_recorder(application)
        self.last = 0
        self.reload()

    def reload(self) -> int:
        """Forget what we believed and read the recorded position (after a failure)."""
        self.last = self._recorder.max_tracking_id(RELAY_NAME) or 0
        return self.last

    def advance(self, notification_id: int) -> None:
        """Record that Kafka acknowledged every event up to `notification_id`."""
        if notification_id <= self.last:
            return
        try:
            self._recorder.insert_tracking(Tracking(RELAY_NAME, notification_id))
        except IntegrityError:
            # The tracking row only moves forward: a second relay on this store got further.
            if self.reload() < notification_id:
                raise
            return
        self.last = notification_id


def relay_position(application: OkrApplication) -> int:
    """The recorded position (0 before anything was published); blocking, for tests and health."""
    return RelayPosition(application).last


# --- publishing -----------------------------------------------------------------------------------

Pending = tuple[int, okr.OkrEventEnvelope]
"""A notification id and the envelope of the event stored there."""


class OutboxRelay:
    """Reads the notification log after the recorded position and publishes it, batch by batch."""

    def __init__(self, settings: Settings, application: OkrApplication, position: RelayPosition):
        self.topic = settings.topic(topics.EVENTS)
        self.application = application
        self.position = position

    @classmethod
    async def open(cls, settings: Settings, application: OkrApplication) -> OutboxRelay:
        position = await asyncio.to_thread(RelayPosition, application)
        return cls(settings, application, position)

    async def publish_pending(
        self, producer: AIOKafkaProducer, *, batch_size: int = BATCH_SIZE, limit: int | None = None
    ) -> int:
        """Publish what is stored after the position (at most `limit` events); returns how many."""
        published = 0
        while limit is None or published < limit:
            size = batch_size if limit is None else min(batch_size, limit - published)
            timer = current_stages().timer(RELAY)
            with timer.stage("read"):
                batch = await asyncio.to_thread(self.read_pending, size)
            if not batch:
                break
            with timer.stage("publish"):
                await self.publish_batch(producer, batch, timer)
            timer.observe(len(batch))
            published += len(batch)
        return published

    def read_pending(self, limit: int) -> list[Pending]:
        """Blocking: the next `limit` stored events after the position, as wire envelopes."""
        notifications = self.application.recorder.select_notifications(
            start=self.position.last, limit=limit, inclusive_of_start=False
        )
        mapper = self.application.mapper
        return [
            (n.id, to_envelope(cast(DomainEvent, mapper.to_domain_event(n)))) for n in notifications
        ]

    async def publish_batch(
        self,
        producer: AIOKafkaProducer,
        batch: Sequence[Pending],
        timer: StageTimer | None = None,
    ) -> None:
        """Send the batch, wait for every ack, then record the acknowledged prefix (`timer`: the
        batch's, which times the recording).

        The producer keeps send order within a partition, and the key (objective id) picks the
        partition, so each objective's events arrive in version order. Only a contiguous prefix
        is recorded: whatever was not acknowledged, and everything after it, is sent again.
        """
        deliveries: list[asyncio.Future[Any]] = []
        failure: BaseException | None = None
        for _, envelope in batch:
            try:
                deliveries.append(
                    await producer.send(
                        self.topic,
                        key=str(envelope.objective_id).encode(),
                        value=envelope.to_bytes(),
                        headers=[("type", envelope.type.encode())],
                    )
                )
            except KafkaError as error:
                failure = error
                break
        outcomes = await asyncio.gather(*deliveries, return_exceptions=True)
        acknowledged = 0
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                failure = failure or outcome
                break
            acknowledged += 1
        if acknowledged:
            with timer.stage("record") if timer else contextlib.nullcontext():
                await asyncio.to_thread(self.position.advance, batch[acknowledged - 1][0])
        if failure is not None:
            raise failure


@contextlib.asynccontextmanager
async def relay_producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    """Idempotent, acks from all in-sync replicas: an acknowledged event is durable, not doubled."""
    producer = AIOKafkaProducer(
        **settings.kafka_client_options(),
        enable_idempotence=True,
        acks="all",
        client_id=RELAY_NAME,
        linger_ms=5,
    )
    try:
        await producer.start()
        yield producer
    finally:
        await producer.stop()


async def relay_once(
    settings: Settings,
    application: OkrApplication,
    *,
    batch_size: int = BATCH_SIZE,
    limit: int | None = None,
) -> int:
    """Publish everything pending (at most `limit` events); returns how many, raises on failure."""
    relay = await OutboxRelay.open(settings, application)
    async with relay_producer(settings) as producer:
        return await relay.publish_pending(producer, batch_size=batch_size, limit=limit)


async def run_relay(
    settings: Settings,
    application: OkrApplication,
    *,
    batch_size: int = BATCH_SIZE,
    idle_poll_s: float = SAFETY_POLL_S,
    backoff: Backoff = Backoff(),
) -> None:
    """Publish until cancelled. Any failure: log, back off, new producer, resume from the record
    (`keep_running`: a relay that died quietly would leave writes that nobody ever sees)."""
    relay: OutboxRelay | None = None

    async def attempt(succeeded: Callable[[], None]) -> None:
        nonlocal relay
        if relay is None:
            relay = await OutboxRelay.open(settings, application)
        else:
            await asyncio.to_thread(relay.position.reload)
        async with relay_producer(settings) as producer:
            with application.saved.listen() as saved:
                while True:
                    saved.clear()
                    published = await relay.publish_pending(producer, batch_size=batch_size)
                    succeeded()
                    if not published:
                        await wait_for_wakeup(saved, idle_poll_s)

    await keep_running(
        "okr.events relay",
        attempt,
        backoff=backoff,
        resuming="resuming from the recorded position",
        log=log,
    )
