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

The Kafka side, a consumer group that seeks each assigned partition to the position stored in
the database (the authority) and commits the same offsets to Kafka afterwards only so that lag
tools see them, is `services.projector_service.run_projector`, on the service's one Kafka consumer
(docs/decisions/0006-projection-store.md, 0026-one-kafka-consumer.md).

Each batch's stages are timed once (fetch, decode, apply, save, commit: the
`okr_stage_*{job="projector"}` histograms of `projections.stage_timings`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID
from weakref import WeakKeyDictionary

from events.okr import NotAnObjectError, NotJsonError, UnknownOkrEventError, parse_okr_event
from projections.decoding import PROGRESS, Decoded, ProgressRecorded, decode_okr_event
from projections.failures import SetAsideStreak, describe, is_transient
from projections.folding import Folds, ObjectiveFold
from projections.job_health import current_stages
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
