"""Publish a message no consumer can process to `okr.dlq`, with why and where it came from.

Any consumer (command handler, scorer) hands over the raw Kafka record and a reason; the record's
bytes are kept exactly, so the message can be replayed once its sender is fixed. `publish` returns
only after Kafka acknowledged the dead letter: the caller commits the original offset after that,
so a message is never lost between the two topics (at worst dead-lettered twice after a crash).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from events.dead_letters import DeadLetter, DeadLetterHeader, DeadLetterReason, RawBytes
from events.topics import DEAD_LETTERS
from services.settings import Settings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer
    from faststream.kafka import KafkaBroker

REASON_HEADER = "okr-dead-letter-reason"

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
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    return error


def dead_letter_for(
    record: KafkaRecord,
    reason: DeadLetterReason,
    error: str | BaseException,
    *,
    failed_at: datetime,
    consumer_group: str | None = None,
) -> DeadLetter:
    """The dead letter of one record: pure, so it is tested without a broker."""
    timestamp = (
        datetime.fromtimestamp(record.timestamp / 1000, UTC)
        if record.timestamp is not None and record.timestamp >= 0
        else None
    )
    return DeadLetter(
        reason=reason,
        error=describe_error(error),
        consumer_group=consumer_group,
        origin_topic=record.topic,
        origin_partition=record.partition,
        origin_offset=record.offset,
        origin_timestamp=timestamp,
        key=None if record.key is None else RawBytes.of(record.key),
        value=None if record.value is None else RawBytes.of(record.value),
        headers=[
            DeadLetterHeader(name=name, value=None if value is None else RawBytes.of(value))
            for name, value in record.headers
        ],
        failed_at=failed_at,
    )


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
        """Dead-letter `record`, keyed like the original so an objective's letters stay together."""
        letter = dead_letter_for(
            record, reason, error, failed_at=self.clock(), consumer_group=self.consumer_group
        )
        headers = {"content-type": "application/json", REASON_HEADER: reason}
        await self.send(self.topic, record.key, letter.model_dump_json().encode(), headers)
        return letter


def send_with_broker(broker: KafkaBroker) -> Send:
    """A `Send` over a connected FastStream broker (it waits for Kafka's acknowledgement)."""

    async def send(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        await broker.publish(value, topic, key=key, headers=headers)

    return send


def send_with_producer(producer: AIOKafkaProducer) -> Send:
    """A `Send` over a started `aiokafka.AIOKafkaProducer`."""

    async def send(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        encoded = [(name, text.encode()) for name, text in headers.items()]
        await producer.send_and_wait(topic, value=value, key=key, headers=encoded)

    return send
