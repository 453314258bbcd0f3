"""Publish a message no consumer can process to `okr.dlq`, with why and where it came from.

Any consumer (command handler, projector, scorer) hands over the raw Kafka record and a reason;
the record's bytes are kept exactly, so the message can be replayed once its sender is fixed.
`publish` returns only after Kafka acknowledged the dead letter: the caller commits the original
offset after that, so a message is never lost between the two topics (at worst dead-lettered
twice after a crash).

A dead letter always fits. A letter larger than `MAX_LETTER_BYTES` keeps a bounded prefix of each
part with its size and SHA-256 (`events.dead_letters.RawBytes`); one that Kafka still refuses for
good (a topic with a smaller message limit) is sent with no payload at all; one refused even then
(no write permission on `okr.dlq`) is logged whole and counted, and the consumer moves on. Only an
outage (broker away, timeout) reaches the caller, which retries: a record can never stall its
partition because its dead letter does not fit.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from events.dead_letters import (
    EVENT_STORE_ORIGIN,
    DeadLetter,
    DeadLetterHeader,
    DeadLetterReason,
    RawBytes,
)
from events.topics import DEAD_LETTERS
from projections.failures import describe, is_transient
from projections.job_health import current_job
from services.settings import Settings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

log = logging.getLogger(__name__)

REASON_HEADER = "okr-dead-letter-reason"
MAX_LETTER_BYTES = 256 * 1024
"""A letter above this keeps prefixes only: far below Kafka's default message limit (1 MiB),
which the original plus its base64 and JSON overhead can exceed."""
MAX_KEY_BYTES = 1024
"""The longest original key reused as the letter's key (longer ones: their SHA-256, hex)."""


@dataclass(frozen=True)
class Bounds:
    """How much of each part a letter keeps (None: all of it)."""

    key: int | None = None
    value: int | None = None
    header_value: int | None = None
    header_name: int | None = None
    headers: int | None = None
    error: int = 4096


WHOLE = Bounds()
PREFIXES = Bounds(key=1024, value=16 * 1024, header_value=1024, header_name=256, headers=32)
"""At most ~70 KB of JSON whatever the record: the form used when the whole one is too large."""
DIGESTS_ONLY = Bounds(key=0, value=0, header_value=0, header_name=256, headers=32, error=1024)
"""No payload at all: sizes, digests and the origin (for a topic with a tiny message limit)."""

Send = Callable[[str, bytes | None, bytes, dict[str, str]], Awaitable[object]]
"""Publish (topic, key, value, headers) and return once Kafka acknowledged the write."""

Clock = Callable[[], datetime]


class KafkaRecord(Protocol):
    """What a dead letter needs of a consumed message; aiokafka's `ConsumerRecord` has it."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int | None: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]: ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


def describe_error(error: str | BaseException) -> str:
    return describe(error) if isinstance(error, BaseException) else error


def dead_letter_for(
    record: KafkaRecord,
    reason: DeadLetterReason,
    error: str | BaseException,
    *,
    failed_at: datetime,
    consumer_group: str | None = None,
    bounds: Bounds = WHOLE,
) -> DeadLetter:
    """The dead letter of one record, keeping what `bounds` allows: pure, tested without Kafka."""
    timestamp = (
        datetime.fromtimestamp(record.timestamp / 1000, UTC)
        if record.timestamp is not None and record.timestamp >= 0
        else None
    )
    headers = list(record.headers)
    kept = headers if bounds.headers is None else headers[: bounds.headers]
    return DeadLetter(
        reason=reason,
        error=_shortened(describe_error(error), bounds.error),
        consumer_group=consumer_group,
        origin_topic=record.topic,
        origin_partition=record.partition,
        origin_offset=record.offset,
        origin_timestamp=timestamp,
        key=None if record.key is None else RawBytes.of(record.key, keep=bounds.key),
        value=None if record.value is None else RawBytes.of(record.value, keep=bounds.value),
        headers=[
            DeadLetterHeader(
                name=_shortened(name, bounds.header_name),
                value=None if value is None else RawBytes.of(value, keep=bounds.header_value),
            )
            for name, value in kept
        ],
        headers_dropped=len(headers) - len(kept),
        failed_at=failed_at,
    )


def encoded_dead_letter(
    record: KafkaRecord,
    reason: DeadLetterReason,
    error: str | BaseException,
    *,
    failed_at: datetime,
    consumer_group: str | None = None,
    max_bytes: int = MAX_LETTER_BYTES,
    forms: Sequence[Bounds] = (WHOLE, PREFIXES),
) -> tuple[DeadLetter, bytes]:
    """The first of `forms` whose letter encodes within `max_bytes` (else the last one)."""
    for bounds in forms:
        letter = dead_letter_for(
            record,
            reason,
            error,
            failed_at=failed_at,
            consumer_group=consumer_group,
            bounds=bounds,
        )
        encoded = letter.model_dump_json().encode()
        if len(encoded) <= max_bytes:
            break
    return letter, encoded


def letter_key(key: bytes | None) -> bytes | None:
    """The original key, so an objective's letters stay together; a huge one by its digest."""
    if key is None or len(key) <= MAX_KEY_BYTES:
        return key
    return hashlib.sha256(key).hexdigest().encode()


def _shortened(text: str, limit: int | None) -> str:
    if limit is None or len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


class DeadLetterPublisher:
    """Sends dead letters through whatever Kafka client the consumer already holds."""

    def __init__(
        self,
        settings: Settings,
        send: Send,
        *,
        consumer_group: str | None = None,
        clock: Clock = _utc_now,
    ) -> None:
        self.topic = settings.topic(DEAD_LETTERS)
        self.send = send
        self.consumer_group = consumer_group
        self.clock = clock

    async def publish(
        self, record: KafkaRecord, reason: DeadLetterReason, error: str | BaseException
    ) -> DeadLetter:
        """Dead-letter `record`, keyed like the original so an objective's letters stay together.

        Raises only what a retry can cure (an outage); a letter Kafka refuses for good is sent
        again without payload, and if refused even then, logged whole instead."""
        headers = {"content-type": "application/json", REASON_HEADER: reason}
        key = letter_key(record.key)
        failed_at = self.clock()
        job = current_job()
        for forms in ((WHOLE, PREFIXES), (DIGESTS_ONLY,)):
            letter, encoded = encoded_dead_letter(
                record,
                reason,
                error,
                failed_at=failed_at,
                consumer_group=self.consumer_group,
                forms=forms,
            )
            try:
                await self.send(self.topic, key, encoded, headers)
                break
            except Exception as refused:
                if is_transient(refused):
                    raise
                last_refusal = refused
        else:
            log.error(
                "dead letter refused by %s (%s), moving on; the letter: %s",
                self.topic,
                describe(last_refusal),
                encoded.decode(),
            )
            if job is not None:
                job.dead_lettered("unpublished")
            return letter
        if job is not None:
            job.dead_lettered(reason)
        return letter


def send_with_producer(producer: AIOKafkaProducer) -> Send:
    """A `Send` over a started `aiokafka.AIOKafkaProducer`."""

    async def send(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        encoded = [(name, text.encode()) for name, text in headers.items()]
        await producer.send_and_wait(topic, value=value, key=key, headers=encoded)

    return send


@dataclass(frozen=True)
class StoredEventRecord:
    """A stored event as a `KafkaRecord`, for the dead letter of an event a follower of the
    notification log cannot process (`events.dead_letters.EVENT_STORE_ORIGIN`)."""

    offset: int
    key: bytes | None
    value: bytes | None
    event_topic: str
    topic: str = EVENT_STORE_ORIGIN
    partition: int = 0
    timestamp: int | None = None

    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]:
        return [("event-topic", self.event_topic.encode())]


def send_with_new_producer(settings: Settings) -> Send:
    """A `Send` that opens a producer for each message: for the rare dead letter of a job that
    holds no Kafka client of its own."""

    async def send(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        from services.kafka.consumer import acknowledged_producer

        async with acknowledged_producer(settings.kafka_client_options()) as producer:
            await send_with_producer(producer)(topic, key, value, headers)

    return send
