"""`okr audit verify`: does the stored history still fit its hash chains, and does `okr.events`?

The event store is checked on its own: every objective's events, read raw (as written, before
any upcasting), must follow each other version by version and recompute to their stored hashes
(`domain.chain`); every snapshot must equal the state its events fold to. The topic is checked
against the verified store: each message must be the translation of the stored event at its
objective and version, hash included. A message for a version the store does not hold (forged,
or published and then deleted from the store) and one whose content differs are both breaks.

Messages of the store not yet on the topic are the relay's backlog, not a break. Delivery is
at-least-once, so the topic may hold a message more than once: a message equal to the stored event
at an (objective, version) already read is a redelivery, counted apart and not a break.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from uuid import UUID

from aiokafka import ConsumerRecord
from aiokafka.errors import UnknownTopicOrPartitionError
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic, resolve_topic
from pydantic import BaseModel, computed_field

from domain.chain import ChainBreak, ChainLink, EventRecord, verify_chain
from domain.objective import Objective
from domain.objective_events import DomainEvent
from events import topics
from events.okr import parse_okr_event
from projections.topic_scan import scan_topic, topic_partitions
from services.commands.application import OkrApplication
from services.commands.event_store import ObjectiveSnapshot, PydanticMapper, project_objective
from services.relay.publisher import to_envelope
from services.settings import Settings

NOTIFICATIONS_PAGE = 1000
TOPIC_BATCH = 1000

Source = Literal["event store", "okr.events"]


class Break(BaseModel):
    """One finding, where it was found and what is wrong."""

    source: Source
    objective_id: UUID
    version: int
    problem: str

    def __str__(self) -> str:
        return (
            f"{self.source}: objective {self.objective_id} version {self.version}: {self.problem}"
        )


class VerifyReport(BaseModel):
    """What was checked and every break found; `intact` when there is none."""

    objectives: int = 0
    events: int = 0
    snapshots: int = 0
    messages: int | None = None
    """Messages read from `okr.events`; None when the topic was not checked."""
    redeliveries: int | None = None
    """Of those messages, how many repeat an (objective, version) already read, identical to the
    stored event (the relay is at-least-once: not a break); None when the topic was not checked."""
    breaks: list[Break] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def intact(self) -> bool:
        return not self.breaks

    def summary(self) -> str:
        checked = f"{self.objectives} objectives, {self.events} events, {self.snapshots} snapshots"
        if self.messages is not None:
            checked += f", {self.messages} messages on okr.events"
        if self.redeliveries:
            plural = "redelivery" if self.redeliveries == 1 else "redeliveries"
            checked += f" ({self.redeliveries} {plural} of an identical (objective, version))"
        verdict = "intact" if self.intact else f"{len(self.breaks)} break(s)"
        return f"checked {checked}: {verdict}"


# --- the event store ------------------------------------------------------------------------------


def verify_event_store(application: OkrApplication, report: VerifyReport) -> None:
    """Check every objective's chain, that each of its events can be read and folded as the
    application would, and its snapshots (blocking; run it in a thread)."""
    for objective_id in objective_ids(application):
        verify_objective(application, objective_id, report)


def verify_objective(
    application: OkrApplication, objective_id: UUID, report: VerifyReport
) -> str | None:
    """Check one objective's chain, events and snapshots into `report`; returns the stored hash
    of its newest event (the head of its chain), None when it has no event."""
    stored = application.recorder.select_events(objective_id)
    report.objectives += 1
    report.events += len(stored)
    links = [_link(application, objective_id, event) for event in stored]
    found = verify_chain(objective_id, links)
    report.breaks += [_break("event store", b) for b in found]
    snapshots = _snapshots(application, objective_id, report)
    report.snapshots += len(snapshots)
    report.breaks += _replay(application, objective_id, stored, snapshots)
    return (links[-1].stored_hash or None) if links else None


def objective_ids(application: OkrApplication) -> Iterator[UUID]:
    """Every objective with a stored event, each once, in the order they were first stored."""
    seen: set[UUID] = set()
    for page in application.notification_pages(page_size=NOTIFICATIONS_PAGE):
        for notification in page:
            objective_id = UUID(str(notification.originator_id))
            if objective_id not in seen:
                seen.add(objective_id)
                yield objective_id


def _link(application: OkrApplication, objective_id: UUID, stored: StoredEvent) -> ChainLink:
    try:
        state = cast(PydanticMapper, application.mapper).stored_state(stored)
    except Exception as error:  # an edited row may not even be JSON any more
        state = {"unreadable": str(error)}
    record = EventRecord.from_stored(
        objective_id, stored.originator_version, event_type(stored.topic), state
    )
    stored_hash = state.get("chain_hash")
    return ChainLink(record, stored_hash if isinstance(stored_hash, str) else "")


def event_type(topic: str) -> str:
    """`domain.objective_events:KpiBound` -> `KpiBound`: the class name is what is hashed."""
    return topic.rpartition(":")[2].rpartition(".")[2]


def _snapshots(
    application: OkrApplication, objective_id: UUID, report: VerifyReport
) -> dict[int, Objective]:
    """The objective's snapshots by version; an unreadable one is a break (a loaded objective
    starts from its newest snapshot, so it matters as much as an event)."""
    if application.snapshots is None:
        return {}
    found: dict[int, Objective] = {}
    for stored in application.snapshots.recorder.select_events(objective_id):
        try:
            snapshot = cast(ObjectiveSnapshot, application.mapper.to_domain_event(stored))
        except Exception as error:
            report.breaks.append(
                _store_break(
                    objective_id, stored.originator_version, f"snapshot unreadable: {error}"
                )
            )
            continue
        found[stored.originator_version] = snapshot.state
    return found


def _replay(
    application: OkrApplication,
    objective_id: UUID,
    stored: Sequence[StoredEvent],
    snapshots: dict[int, Objective],
) -> list[Break]:
    """Read and fold every event as the application does, comparing each snapshot on the way.

    The chain covers what a row says; this covers whether the application can still use it: a
    row whose topic names something other than its domain event class, or whose state no longer
    validates, would stop the objective from loading. The fold stops at the first such row.
    """
    state: Objective | None = None
    for event in stored:
        version = event.originator_version
        try:
            event_class = resolve_topic(event.topic)
        except Exception:
            event_class = None
        if (
            not isinstance(event_class, type)
            or not issubclass(event_class, DomainEvent)
            or issubclass(event_class, ObjectiveSnapshot)
            or get_topic(event_class) != event.topic
        ):
            return [_store_break(objective_id, version, f"names no domain event: {event.topic!r}")]
        try:
            domain_event = cast(DomainEvent, application.mapper.to_domain_event(event))
            state = project_objective(state, [domain_event])
        except Exception as error:
            return [_store_break(objective_id, version, f"cannot be read or replayed: {error}")]
        snapshot = snapshots.pop(version, None)
        if snapshot is not None and snapshot != state:
            problem = "the snapshot differs from the state its events fold to"
            return [_store_break(objective_id, version, problem)]
    return [
        _store_break(objective_id, version, "a snapshot exists for a version with no stored event")
        for version in sorted(snapshots)
    ]


def _store_break(objective_id: UUID, version: int, problem: str) -> Break:
    return Break(source="event store", objective_id=objective_id, version=version, problem=problem)


def _break(source: Source, found: ChainBreak) -> Break:
    return Break(
        source=source, objective_id=found.objective_id, version=found.version, problem=found.problem
    )


# --- the okr.events topic -------------------------------------------------------------------------


UNREADABLE = "unreadable"
"""Stands for a stored event that cannot be translated: the store pass names it already."""

STORED_ENVELOPES_CACHED = 1000
"""Objectives whose translated events are kept while scanning the topic. Messages of one
objective share a partition and arrive close together, so a small cache serves nearly all."""


@dataclass
class _StoredEnvelopes:
    """The store's events translated to wire form, loaded an objective at a time on demand."""

    application: OkrApplication
    by_objective: OrderedDict[UUID, dict[int, dict[str, Any] | str]] = field(
        default_factory=OrderedDict
    )

    def get(self, objective_id: UUID, version: int) -> dict[str, Any] | str | None:
        """The stored event's wire form, `UNREADABLE`, or None when the store has no such event."""
        found = self.by_objective.get(objective_id)
        if found is None:
            found = self._load(objective_id)
            self.by_objective[objective_id] = found
            if len(self.by_objective) > STORED_ENVELOPES_CACHED:
                self.by_objective.popitem(last=False)
        else:
            self.by_objective.move_to_end(objective_id)
        return found.get(version)

    def _load(self, objective_id: UUID) -> dict[int, dict[str, Any] | str]:
        translated: dict[int, dict[str, Any] | str] = {}
        for stored in self.application.recorder.select_events(objective_id):
            try:
                event = cast(DomainEvent, self.application.mapper.to_domain_event(stored))
                translated[stored.originator_version] = _comparable(to_envelope(event))
            except Exception:
                translated[stored.originator_version] = UNREADABLE
        return translated


BITMAP_VERSIONS = 1 << 24
"""Versions below this are kept as bits (at most 2 MiB an objective); any above, one by one."""


@dataclass
class _Delivered:
    """The (objective, version) pairs already read intact from the topic.

    An objective's versions run 1, 2, 3…, so a bit each holds a million events in kilobytes.
    """

    bits: dict[UUID, bytearray] = field(default_factory=dict)
    beyond: set[tuple[UUID, int]] = field(default_factory=set)

    def again(self, objective_id: UUID, version: int) -> bool:
        """Whether this pair was read before; marks it read."""
        if version >= BITMAP_VERSIONS:
            seen = (objective_id, version) in self.beyond
            self.beyond.add((objective_id, version))
            return seen
        bits = self.bits.setdefault(objective_id, bytearray())
        index, bit = divmod(version, 8)
        if index >= len(bits):
            bits.extend(bytes(index + 1 - len(bits)))
        seen = bool(bits[index] >> bit & 1)
        bits[index] |= 1 << bit
        return seen


def _comparable(envelope: Any) -> dict[str, Any]:
    """An envelope as read back by consumers (upcast, parsed), so both sides compare alike."""
    parsed, payload = parse_okr_event(envelope.to_bytes())
    return {**parsed.model_dump(mode="json"), "payload": payload.model_dump(mode="json")}


async def verify_topic(
    settings: Settings, application: OkrApplication, report: VerifyReport
) -> None:
    """Check every message now on `okr.events` against the event store."""
    topic = settings.topic(topics.EVENTS)
    options = settings.kafka_client_options()
    try:
        partitions = await topic_partitions(options, topic)
    except LookupError as error:
        # A Kafka error like any other outage: 503 over HTTP, exit code 3 from the command.
        raise UnknownTopicOrPartitionError(str(error)) from error
    stored = _StoredEnvelopes(application)
    delivered = _Delivered()
    report.messages = report.redeliveries = 0
    async with scan_topic(options, partitions) as scan:
        async for records in scan.batches(TOPIC_BATCH):
            report.messages += len(records)
            breaks, redeliveries = await asyncio.to_thread(
                _check_messages, stored, delivered, records
            )
            report.breaks += breaks
            report.redeliveries += redeliveries


def _check_messages(
    stored: _StoredEnvelopes,
    delivered: _Delivered,
    records: list[ConsumerRecord[bytes, bytes]],
) -> tuple[list[Break], int]:
    """The breaks among these messages, and how many are redeliveries of intact ones."""
    breaks: list[Break] = []
    redeliveries = 0
    for record in records:
        where = f"partition {record.partition} offset {record.offset}"
        try:
            envelope, payload = parse_okr_event(record.value or b"")
        except ValueError as error:
            breaks.append(_unreadable(record, where, error))
            continue
        published = {**envelope.model_dump(mode="json"), "payload": payload.model_dump(mode="json")}
        expected = stored.get(envelope.objective_id, envelope.version)
        if expected is None:
            problem = f"published at {where} but not in the event store (forged, or deleted)"
        elif isinstance(expected, str):  # UNREADABLE
            problem = f"published at {where}; the stored event it should equal cannot be read"
        elif published != expected:
            differing = sorted(
                key
                for key in expected.keys() | published.keys()
                if expected.get(key) != published.get(key)
            )
            problem = f"published at {where} differs from the event store in {', '.join(differing)}"
        else:
            redeliveries += delivered.again(envelope.objective_id, envelope.version)
            continue
        breaks.append(
            Break(
                source="okr.events",
                objective_id=envelope.objective_id,
                version=envelope.version,
                problem=problem,
            )
        )
    return breaks, redeliveries


def _unreadable(record: ConsumerRecord[bytes, bytes], where: str, error: Exception) -> Break:
    """A message nobody can read still names its objective: the key is the objective id."""
    try:
        objective_id = UUID((record.key or b"").decode())
    except ValueError:
        objective_id = UUID(int=0)
    return Break(
        source="okr.events",
        objective_id=objective_id,
        version=0,
        problem=f"unreadable message at {where}: {error}",
    )


# --- both -----------------------------------------------------------------------------------------


async def verify(
    settings: Settings, application: OkrApplication, *, check_topic: bool = True
) -> VerifyReport:
    """The whole audit: the event store, then (unless told not to) the topic against it."""
    report = VerifyReport()
    await asyncio.to_thread(verify_event_store, application, report)
    if check_topic:
        await verify_topic(settings, application, report)
    report.breaks.sort(key=lambda b: (b.source, str(b.objective_id), b.version))
    return report
