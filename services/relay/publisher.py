"""The transactional-outbox relay: every stored event, in order, onto `okr.events`.

The event store is the outbox. A command's events commit in one transaction, and the relay follows
the store's notification log afterwards, so a write never waits for Kafka and an outage only delays
publication. The relay's position (the last notification id Kafka acknowledged) is kept in the
event store's own database by eventsourcing's tracking recorder, and it moves only after the broker
acknowledged every event up to it: a crash or restart republishes at most the unacknowledged tail.
Delivery is therefore at-least-once; consumers dedupe on (objective id, version).

Reading the log page by page, the position, the wake-up and the retries are the log follower's
(`services.relay.follower`); this module is what the relay does with a page. However many
processes share the store, one relay publishes at a time: the holder of the store's relay lock
(`services.relay.leadership`).

Each batch's stages are timed once (read, publish, record: the `okr_stage_*{job="relay"}`
histograms of `projections.stage_timings`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from eventsourcing.persistence import Notification

from domain.objective_events import DomainEvent
from events import okr, topics
from projections.backoff import Backoff
from projections.stage_timings import RELAY, StageTimer
from services.kafka.consumer import acknowledged_producer
from services.relay.follower import Handle, LogPosition, NotificationFollower
from services.relay.leadership import RETRY_S, RelayLease, RelayLock, relay_lock
from services.relay.wakeup import SAFETY_POLL_S

if TYPE_CHECKING:
    from services.commands.application import OkrApplication
    from services.settings import Settings

log = logging.getLogger(__name__)

RELAY_NAME = "okr.events-relay"
"""Name of the relay's row in the tracking table; other trackers (projections) use their own."""
JOB_NAME = "okr.events relay"
"""Its entry on the job board."""

BATCH_SIZE = 500
"""Events read and sent per page."""

# --- translation: stored domain event -> wire envelope --------------------------------------------


def to_envelope(event: DomainEvent) -> okr.OkrEventEnvelope:
    """The one place a domain event becomes the contract other services read: its declared
    payload (`DomainEvent.payload`), in the envelope its header fills."""
    header = okr.EventHeader(
        objective_id=event.originator_id,
        version=event.originator_version,
        occurred_at=event.timestamp,
        actor=event.actor,
        command_id=event.command_id,
        reason=event.reason,
        chain_hash=event.chain_hash or None,
    )
    return okr.okr_event(event.payload(), header)


def relay_position(application: OkrApplication) -> int:
    """The recorded position (0 before anything was published); blocking, for tests and health."""
    return LogPosition(application, RELAY_NAME).reload()


@dataclass(frozen=True)
class RelayLag:
    """Stored events the relay has not seen acknowledged on `okr.events` yet."""

    position: int
    stored: int

    @property
    def pending(self) -> int:
        return max(0, self.stored - self.position)


def relay_lag(application: OkrApplication) -> RelayLag:
    """Blocking (two event store reads): call it through `asyncio.to_thread`."""
    return RelayLag(
        position=relay_position(application),
        stored=application.recorder.max_notification_id() or 0,
    )


# --- publishing -----------------------------------------------------------------------------------

Pending = tuple[Notification, okr.OkrEventEnvelope]
"""A stored event's notification and its envelope."""


class OutboxRelay:
    """Publishes the notification log after the recorded position, page by page
    (`services.relay.follower`: reading, position, wake-up and retries are the follower's)."""

    def __init__(
        self, settings: Settings, application: OkrApplication, *, batch_size: int = BATCH_SIZE
    ) -> None:
        self.topic = settings.topic(topics.EVENTS)
        self.application = application
        self.follower = NotificationFollower(
            application,
            LogPosition(application, RELAY_NAME),
            self.envelope,
            name=JOB_NAME,
            page_size=batch_size,
            stage_job=RELAY,
            log=log,
        )

    @property
    def position(self) -> LogPosition:
        return self.follower.position

    @classmethod
    async def open(cls, settings: Settings, application: OkrApplication) -> OutboxRelay:
        """A relay at the recorded position."""
        relay = cls(settings, application)
        await asyncio.to_thread(relay.position.reload)
        return relay

    def envelope(self, notification: Notification) -> okr.OkrEventEnvelope:
        """Blocking (in the read's worker thread): the stored event as its wire envelope."""
        return to_envelope(cast(DomainEvent, self.application.mapper.to_domain_event(notification)))

    def read_pending(self, limit: int) -> list[Pending]:
        """Blocking: the next `limit` stored events after the position, as wire envelopes."""
        return self.follower.read(limit)

    async def publish_pending(
        self, producer: AIOKafkaProducer, *, batch_size: int = BATCH_SIZE, limit: int | None = None
    ) -> int:
        """Publish what is stored after the position (at most `limit` events); returns how many."""
        return await self.follower.catch_up(
            partial(self.publish_page, producer), page_size=batch_size, limit=limit
        )

    async def publish_page(
        self, producer: AIOKafkaProducer, page: Sequence[Pending], timer: StageTimer
    ) -> None:
        """The follower's `Handle`: the page published, then its position recorded."""
        with timer.stage("publish"):
            await self.publish_batch(producer, page, timer)

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
                await asyncio.to_thread(self.position.advance, batch[acknowledged - 1][0].id)
        if failure is not None:
            raise failure


def relay_producer(settings: Settings) -> contextlib.AbstractAsyncContextManager[AIOKafkaProducer]:
    """Idempotent, acks from all in-sync replicas: an acknowledged event is durable, not doubled."""
    return acknowledged_producer(settings.kafka_client_options(), RELAY_NAME, linger_ms=5)


async def relay_once(
    settings: Settings,
    application: OkrApplication,
    *,
    batch_size: int = BATCH_SIZE,
    limit: int | None = None,
) -> int:
    """Publish everything pending (at most `limit` events); returns how many, raises on failure.
    For tests and tools: it does not take the relay lock."""
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
    lock: RelayLock | None = None,
    lock_retry_s: float = RETRY_S,
) -> None:
    """Publish until cancelled, while this process holds the store's relay lock
    (`services.relay.leadership`: one relay publishes at a time, the others stand by).

    An attempt takes the lock, opens a producer and follows the log; any failure (Kafka, the
    store, the lock lost) is logged, backed off and retried from the recorded position, the lock
    let go meanwhile so that another instance may publish.
    """
    relay = OutboxRelay(settings, application, batch_size=batch_size)
    lease = RelayLease(lock or relay_lock(settings, application), settings.instance, lock_retry_s)

    @contextlib.asynccontextmanager
    async def publishing(
        succeeded: Callable[[], None],
    ) -> AsyncIterator[Handle[okr.OkrEventEnvelope]]:
        async with lease.held(succeeded), relay_producer(settings) as producer:
            yield partial(relay.publish_page, producer)

    await relay.follower.run(
        publishing,
        backoff=backoff,
        resuming="resuming from the recorded position",
        idle_poll_s=idle_poll_s,
    )
