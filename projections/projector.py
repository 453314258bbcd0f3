"""The projector: `okr.events` into the read store, with its Kafka position in the same transaction.

`apply_batch` folds a batch of messages and records, per partition, the next offset to read, in ONE
database transaction: after a crash either the rows and the position moved together or neither
did, so nothing is applied twice or lost (exactly-once effect over at-least-once delivery).
Within a batch each message is checked against the objective's projected version:

- `version <= projected`: a redelivery or a relay resend; skipped, changes nothing.
- `version == projected + 1`: applied.
- `version > projected + 1`: a gap. The relay only lets that happen when an earlier send failed
  and later ones got through, and it then resends the missing event and everything after it in
  order (docs/decisions/0004), so the gap is logged and skipped; applying it would fold a state
  that never existed.
- unreadable (not an OKR event, unknown type or schema version, or an event that cannot follow the
  projected state): logged, counted, skipped, and dead-lettered on `okr.dlq` with the reason. One
  bad message must not stall the read models.

`run_projector` is the Kafka side: a consumer group that seeks each assigned partition to the
position stored in the database (the authority), and commits the same offsets to Kafka afterwards
only so that lag tools see them. docs/decisions/0006-projection-store.md.

Each batch's stages are timed once (fetch, decode, apply, save, commit: the
`okr_stage_*{job="projector"}` histograms of `projections.stage_timings`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from time import perf_counter
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID
from weakref import WeakKeyDictionary

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from events.okr import NotAnObjectError, NotJsonError, UnknownOkrEventError, parse_okr_event
from projections.backoff import Backoff, keep_running
from projections.decoding import PROGRESS, Decoded, ProgressRecorded, decode_okr_event
from projections.failures import SetAsideStreak, describe, is_transient
from projections.folding import Folds, ObjectiveFold
from projections.job_health import current_stages
from projections.kafka_positions import FETCH_MAX_WAIT_MS, SeekToStoredPositions
from projections.stage_timings import PROJECTOR
from projections.views import AuditEntry, ProjectedObjective, ReadStore, TimelineEntry

if TYPE_CHECKING:
    from aiokafka.structs import ConsumerRecord

log = logging.getLogger(__name__)

PROJECTOR_GROUP = "okr-projector"
MAX_RECORDS = 10_000
"""Messages a batch takes at most: a backlog (a rebuild, a projector catching up) goes faster in
big batches, each objective's rows then written once for many of its events; a live stream
brings what arrived since the last fetch."""
POLL_TIMEOUT_MS = 500
COMMIT_STOP_WAIT_S = 2.0


@dataclass(frozen=True)
class Message:
    """One consumed record: what the projector reads, and what a dead letter keeps of it."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp: int | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    @classmethod
    def of(cls, record: ConsumerRecord[Any, Any]) -> Message:
        return cls(
            record.topic,
            record.partition,
            record.offset,
            record.value,
            record.key,
            record.timestamp,
            tuple(record.headers),
        )


class EmptyMessageError(ValueError):
    """A tombstone or a zero-byte value: nothing to parse."""


RejectionReason = Literal[
    "empty", "not_json", "not_an_object", "unknown_type", "schema_violation", "processing_failed"
]
"""The dead-letter reasons (`events.dead_letters.DeadLetterReason`) a projector can give."""


@dataclass(frozen=True)
class Rejected:
    """A message the projector skipped as unusable, and why: it is dead-lettered after the batch."""

    message: Message
    reason: RejectionReason
    detail: str


@dataclass(frozen=True)
class BatchReport:
    applied: int = 0
    duplicates: int = 0
    gaps: int = 0
    invalid: int = 0
    rejected: tuple[Rejected, ...] = ()
    """The `invalid` messages themselves (a gap is not one: the relay sends it again in order)."""
    objective_ids: frozenset[UUID] = field(default=frozenset(), compare=False)
    """The objectives whose rows the batch changed, for live pages to redraw (not compared:
    two reports of the same counts are equal whichever objectives they touched)."""

    def __add__(self, other: BatchReport) -> BatchReport:
        return BatchReport(
            self.applied + other.applied,
            self.duplicates + other.duplicates,
            self.gaps + other.gaps,
            self.invalid + other.invalid,
            self.rejected + other.rejected,
            self.objective_ids | other.objective_ids,
        )

    @property
    def messages(self) -> int:
        return self.applied + self.duplicates + self.gaps + self.invalid


class _Batch:
    """The objectives a batch touches, read once and folded in memory (`ObjectiveFold`), the
    entries it appends, the positions it moves past, and its counts."""

    def __init__(self, kept: Folds, loaded: Mapping[UUID, ProjectedObjective]) -> None:
        self.kept = kept
        self.loaded = loaded
        self.folds: dict[UUID, ObjectiveFold] = {}
        self.changed: set[UUID] = set()
        self.timeline: list[TimelineEntry] = []
        self.audit: list[AuditEntry] = []
        self.next_offsets: dict[tuple[str, int], int] = {}
        self.duplicates = self.gaps = 0
        self.rejected: list[Rejected] = []

    def fold(self, objective_id: UUID) -> ObjectiveFold:
        fold = self.folds.get(objective_id)
        if fold is None:
            loaded = self.loaded.get(objective_id)
            fold = self.folds[objective_id] = self.kept.fold(objective_id, loaded)
        return fold

    def projected(self) -> list[ProjectedObjective]:
        """The objectives the batch changed, each made into rows once."""
        made = [self.folds[objective_id].projected() for objective_id in self.changed]
        return [projected for projected in made if projected is not None]

    def progressed(self) -> set[UUID]:
        """The changed objectives that took nothing but KPI progress."""
        return {
            objective_id for objective_id in self.changed if self.folds[objective_id].only_progress
        }

    def report(self) -> BatchReport:
        return BatchReport(
            applied=len(self.audit),
            duplicates=self.duplicates,
            gaps=self.gaps,
            invalid=len(self.rejected),
            rejected=tuple(self.rejected),
            objective_ids=frozenset(self.changed),
        )


def apply_batch(store: ReadStore, messages: Sequence[Message]) -> BatchReport:
    """Fold `messages` into the store and move the positions past them, in one transaction.

    Every message is decoded first, so the objectives the batch touches are read in one query;
    each objective's events are then folded in memory, and each table is written once, with
    one set-based statement (not one per event: at a live stream's rate the per-statement
    waits, then the per-event work, were what kept the read models behind).
    """
    timer = current_stages().timer(PROJECTOR)
    kept = _kept_folds(store)
    with timer.stage("decode"):
        decoded = [_decode(message) for message in messages]
    with timer.stage("save"), store.transaction() as writer:
        with timer.stage("apply"):
            batch = _Batch(kept, writer.load_many(_objective_ids(decoded)))
            for message, event in zip(messages, decoded, strict=True):
                key = (message.topic, message.partition)
                batch.next_offsets[key] = max(batch.next_offsets.get(key, 0), message.offset + 1)
                _apply_one(batch, message, event)
            projected = batch.projected()
        writer.save_many(projected, progressed=batch.progressed())
        writer.append_timeline(batch.timeline)
        writer.append_audit(batch.audit)
        for (topic, partition), next_offset in batch.next_offsets.items():
            writer.advance(topic, partition, next_offset)
    kept.keep(batch.folds)
    timer.observe(len(messages))
    return batch.report()


_KEPT_FOLDS: WeakKeyDictionary[ReadStore, Folds] = WeakKeyDictionary()
_KEPT_FOLDS_LOCK = threading.Lock()
KEPT_FOLDS = 10_000
"""Objectives whose folds a projector keeps between batches (as many as the store keeps rows of,
`projections.sql.CACHE_SIZE`)."""


def _kept_folds(store: ReadStore) -> Folds:
    """The folds kept for this store's projector (one per store: a fold stands at rows the
    store made)."""
    with _KEPT_FOLDS_LOCK:
        kept = _KEPT_FOLDS.get(store)
        if kept is None:
            kept = _KEPT_FOLDS[store] = Folds(KEPT_FOLDS)
        return kept


def _objective_ids(decoded: Sequence[Decoded | ValueError]) -> list[UUID]:
    return [
        event.objective_id if isinstance(event, ProgressRecorded) else event[0].objective_id
        for event in decoded
        if not isinstance(event, ValueError)
    ]


def apply_isolating(
    store: ReadStore, messages: Sequence[Message], streak: SetAsideStreak | None = None
) -> BatchReport:
    """`apply_batch`, but a message that makes its batch fail for good is set aside.

    A failure a retry can cure (the store away or locked) is raised: the batch is tried again.
    Any other failure is bisected: each half is applied on its own, down to the one message that
    fails alone, which is rejected (`processing_failed`, dead-lettered) with its position moved
    past it, so one message cannot stall its partition. `streak` stops that when message after
    message fails alone (the fault is then the projector's, and it retries instead).
    """
    streak = streak or SetAsideStreak()
    try:
        report = apply_batch(store, messages)
    except Exception as error:
        if is_transient(error):
            raise
        if len(messages) == 1:
            streak.setting_aside(error)
            return _set_aside(store, messages[0], error)
        log.warning(
            "projector: a batch of %d failed (%s); applying it in halves to find the message",
            len(messages),
            describe(error),
        )
        middle = len(messages) // 2
        first = apply_isolating(store, messages[:middle], streak)
        return first + apply_isolating(store, messages[middle:], streak)
    streak.processed()
    return report


def _set_aside(store: ReadStore, message: Message, error: Exception) -> BatchReport:
    """Move the position past a message that cannot be applied, in a transaction of its own."""
    log.error(
        "projector: setting aside %s, which cannot be applied", _where(message), exc_info=error
    )
    with store.transaction() as writer:
        writer.advance(message.topic, message.partition, message.offset + 1)
    return _rejected(message, "processing_failed", f"cannot be applied: {describe(error)}")


def _decode(message: Message) -> Decoded | ValueError:
    try:
        if not message.value:
            raise EmptyMessageError("a message without a value")
        return decode_okr_event(message.value)
    except ValueError as error:
        return error


def _apply_one(batch: _Batch, message: Message, event: Decoded | ValueError) -> None:
    if isinstance(event, ValueError):
        log.warning("projector: skipping unreadable message %s: %s", _where(message), event)
        batch.rejected.append(Rejected(message, _reason(event), str(event)))
        return
    if isinstance(event, ProgressRecorded):
        objective_id, version, event_type = event.objective_id, event.version, PROGRESS
    else:
        objective_id, version, event_type = event[0].objective_id, event[0].version, event[0].type
    fold = batch.fold(objective_id)
    if version <= fold.version:
        batch.duplicates += 1
        return
    if version > fold.version + 1:
        log.warning(
            "projector: skipping %s v%s of objective %s at %s: projected version is %s (a gap)",
            event_type,
            version,
            objective_id,
            _where(message),
            fold.version,
        )
        batch.gaps += 1
        return
    entries: tuple[TimelineEntry | None, AuditEntry] | None = None
    if isinstance(event, ProgressRecorded):
        entries = fold.progress(event)
    if entries is None:
        # Any other event, or progress the fast path cannot follow: the reducer folds it, or
        # says why it cannot.
        envelope, payload = (
            parse_okr_event(message.value or b"") if isinstance(event, ProgressRecorded) else event
        )
        try:
            entries = fold.reduce(envelope, payload)
        except ValueError as error:
            log.warning(
                "projector: skipping %s v%s of objective %s at %s: %s",
                event_type,
                version,
                objective_id,
                _where(message),
                error,
            )
            detail = f"{event_type} v{version} cannot follow the projected state: {error}"
            batch.rejected.append(Rejected(message, "processing_failed", detail))
            return
    timeline, audit = entries
    if timeline is not None:
        batch.timeline.append(timeline)
    batch.audit.append(audit)
    batch.changed.add(objective_id)


def _where(message: Message) -> str:
    return f"{message.topic}[{message.partition}]@{message.offset}"


def _rejected(message: Message, reason: RejectionReason, detail: str) -> BatchReport:
    return BatchReport(invalid=1, rejected=(Rejected(message, reason, detail),))


def _reason(error: ValueError) -> RejectionReason:
    if isinstance(error, EmptyMessageError):
        return "empty"
    if isinstance(error, NotJsonError):
        return "not_json"
    if isinstance(error, NotAnObjectError):
        return "not_an_object"
    if isinstance(error, UnknownOkrEventError):
        return "unknown_type"
    return "schema_violation"


# --- the Kafka side -------------------------------------------------------------------------------


def stored_positions(
    store: ReadStore, partitions: Sequence[TopicPartition]
) -> dict[TopicPartition, int]:
    """The read store's next offset of each partition it has a position for."""
    positions = store.positions()
    return {
        tp: positions[(tp.topic, tp.partition)]
        for tp in partitions
        if (tp.topic, tp.partition) in positions
    }


async def run_projector(
    store: ReadStore,
    *,
    topic: str,
    client_options: Mapping[str, Any],
    group_id: str = PROJECTOR_GROUP,
    max_records: int = MAX_RECORDS,
    backoff: Backoff = Backoff(),
    on_batch: Callable[[BatchReport], None] | None = None,
    dead_letters: Callable[[Sequence[Rejected]], Awaitable[None]] | None = None,
) -> None:
    """Project `topic` until cancelled. A failure restarts the consumer from the stored positions.

    `client_options` are aiokafka's connection keywords (bootstrap servers, security). Records
    fetched but not applied when a batch fails are simply read again after the re-seek.
    `on_batch` sees each applied batch's report (metrics, tests); `dead_letters` is handed the
    messages a batch skipped as unusable, to publish them on `okr.dlq`.
    """

    streak = SetAsideStreak()

    async def attempt(succeeded: Callable[[], None]) -> None:
        consumer = AIOKafkaConsumer(
            **client_options,
            group_id=group_id,
            client_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        listener = SeekToStoredPositions(
            consumer, partial(stored_positions, store), name="projector"
        )
        commits = KafkaCommits(consumer)
        try:
            consumer.subscribe([topic], listener=listener)
            await consumer.start()
            succeeded()
            stages = current_stages()
            while True:
                fetching = perf_counter()
                fetched = await consumer.getmany(
                    timeout_ms=POLL_TIMEOUT_MS, max_records=max_records
                )
                listener.raise_if_failed()
                messages = [Message.of(r) for records in fetched.values() for r in records]
                if not messages:
                    continue
                stages.observe(PROJECTOR, "fetch", perf_counter() - fetching, len(messages))
                report = await asyncio.to_thread(apply_isolating, store, messages, streak)
                if report.rejected and dead_letters is not None:
                    # After the batch's commit: the rejected messages stay on okr.events (kept
                    # forever), so a crash before this only loses the notice, never the message.
                    await dead_letters(report.rejected)
                succeeded()
                log.debug("projector: %s", report)
                if on_batch is not None:
                    on_batch(report)
                commits.follow(fetched, len(messages))
        finally:
            await commits.stop()
            await consumer.stop()  # leave the group while pausing, so others can take over

    await keep_running(
        "projector",
        attempt,
        backoff=backoff,
        resuming="restarting from the stored positions",
        log=log,
    )


class KafkaCommits:
    """Tells Kafka the offsets of the batches applied, for lag tools only, without holding up
    the next batch: one commit in flight at a time, in a task of its own, with the latest
    offsets of each partition (a commit round trip took ~7 ms a batch, during which what had
    arrived waited). A failed commit loses nothing: the database decides where to resume."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self._offsets: dict[TopicPartition, int] = {}
        self._messages = 0
        self._task: asyncio.Task[None] | None = None

    def follow(
        self, fetched: Mapping[TopicPartition, list[ConsumerRecord[Any, Any]]], messages: int
    ) -> None:
        self._offsets.update(
            {tp: records[-1].offset + 1 for tp, records in fetched.items() if records}
        )
        self._messages += messages
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._commit())

    async def _commit(self) -> None:
        stages = current_stages()
        while self._offsets:
            offsets, messages = self._offsets, self._messages
            self._offsets, self._messages = {}, 0
            committing = perf_counter()
            try:
                await self._consumer.commit(offsets)
            except KafkaError as error:
                log.info("projector: Kafka commit skipped (%s: %s)", type(error).__name__, error)
            stages.observe(PROJECTOR, "commit", perf_counter() - committing, messages)

    async def stop(self) -> None:
        """Give the commit in flight a moment to finish (the consumer is stopped next)."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, COMMIT_STOP_WAIT_S)
