"""`okr audit verify`: does the stored history still fit its hash chains, and does `okr.events`?

The event store is checked on its own: every objective's events, read raw (as written, before
any upcasting), must follow each other version by version and recompute to their stored hashes
(`domain.chain`); every snapshot must equal the state its events fold to. The topic is checked
against the verified store: each message must be the translation of the stored event at its
objective and version, hash included. A message for a version the store does not hold (forged,
or published and then deleted from the store) and one whose content differs are both breaks.

Messages of the store not yet on the topic are the relay's backlog, not a break.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from uuid import UUID

from aiokafka import ConsumerRecord
from eventsourcing.persistence import StoredEvent
from pydantic import BaseModel, computed_field

from domain.chain import ChainBreak, ChainLink, EventRecord, verify_chain
from domain.objective import Objective
from domain.objective_events import DomainEvent
from events import topics
from events.okr import parse_okr_event
from projections.topic_scan import scan_topic, topic_partitions
from services.application import OkrApplication
from services.persistence import ObjectiveSnapshot, PydanticMapper, project_objective
from services.relay import to_envelope
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
    breaks: list[Break] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def intact(self) -> bool:
        return not self.breaks

    def summary(self) -> str:
        checked = f"{self.objectives} objectives, {self.events} events, {self.snapshots} snapshots"
        if self.messages is not None:
            checked += f", {self.messages} messages on okr.events"
        verdict = "intact" if self.intact else f"{len(self.breaks)} break(s)"
        return f"checked {checked}: {verdict}"


# --- the event store ------------------------------------------------------------------------------


def verify_event_store(application: OkrApplication, report: VerifyReport) -> None:
    """Check every objective's chain and snapshots (blocking; run it in a thread)."""
    for objective_id in objective_ids(application):
        stored = application.recorder.select_events(objective_id)
        report.objectives += 1
        report.events += len(stored)
        links = [_link(application, objective_id, event) for event in stored]
        found = verify_chain(objective_id, links)
        report.breaks += [_break("event store", b) for b in found]
        report.snapshots += _check_snapshots(application, objective_id, stored, report)


def objective_ids(application: OkrApplication) -> Iterator[UUID]:
    """Every objective with a stored event, each once, in the order they were first stored."""
    seen: set[UUID] = set()
    start = 1
    while True:
        page = application.recorder.select_notifications(start, NOTIFICATIONS_PAGE)
        for notification in page:
            objective_id = UUID(str(notification.originator_id))
            if objective_id not in seen:
                seen.add(objective_id)
                yield objective_id
        if len(page) < NOTIFICATIONS_PAGE:
            return
        start = page[-1].id + 1


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


def _check_snapshots(
    application: OkrApplication,
    objective_id: UUID,
    stored: Sequence[StoredEvent],
    report: VerifyReport,
) -> int:
    """Each snapshot must be the state its objective's events fold to at its version: a loaded
    objective starts from the newest snapshot, so an edited one would change what commands see."""
    if application.snapshots is None:
        return 0
    snapshots = list(application.snapshots.get(objective_id))
    if not snapshots:
        return 0
    by_version = {s.originator_version: cast(ObjectiveSnapshot, s).state for s in snapshots}
    state: Objective | None = None
    try:
        for event in stored:
            domain_event = cast(DomainEvent, application.mapper.to_domain_event(event))
            state = project_objective(state, [domain_event])
            expected = by_version.pop(event.originator_version, None)
            if expected is not None and expected != state:
                report.breaks.append(
                    Break(
                        source="event store",
                        objective_id=objective_id,
                        version=event.originator_version,
                        problem="the snapshot differs from the state its events fold to",
                    )
                )
    except Exception as error:
        report.breaks.append(
            Break(
                source="event store",
                objective_id=objective_id,
                version=state.version + 1 if state else 1,
                problem=f"cannot be replayed: {error}",
            )
        )
        return len(snapshots)
    for version in sorted(by_version):
        report.breaks.append(
            Break(
                source="event store",
                objective_id=objective_id,
                version=version,
                problem="a snapshot exists for a version with no stored event",
            )
        )
    return len(snapshots)


def _break(source: Source, found: ChainBreak) -> Break:
    return Break(
        source=source, objective_id=found.objective_id, version=found.version, problem=found.problem
    )


# --- the okr.events topic -------------------------------------------------------------------------


@dataclass
class _StoredEnvelopes:
    """The store's events translated to wire form, loaded an objective at a time on demand."""

    application: OkrApplication
    by_objective: dict[UUID, dict[int, dict[str, Any]]] = field(default_factory=dict)

    def get(self, objective_id: UUID, version: int) -> dict[str, Any] | None:
        if objective_id not in self.by_objective:
            self.by_objective[objective_id] = {
                event.originator_version: _comparable(to_envelope(cast(DomainEvent, event)))
                for event in self.application.events.get(objective_id)
            }
        return self.by_objective[objective_id].get(version)


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
    partitions = await topic_partitions(options, topic)
    stored = _StoredEnvelopes(application)
    report.messages = 0
    async with scan_topic(options, partitions) as scan:
        async for records in scan.batches(TOPIC_BATCH):
            report.messages += len(records)
            report.breaks += await asyncio.to_thread(_check_messages, stored, records)


def _check_messages(
    stored: _StoredEnvelopes, records: list[ConsumerRecord[bytes, bytes]]
) -> list[Break]:
    breaks: list[Break] = []
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
        elif published != expected:
            differing = sorted(
                key
                for key in expected.keys() | published.keys()
                if expected.get(key) != published.get(key)
            )
            problem = f"published at {where} differs from the event store in {', '.join(differing)}"
        else:
            continue
        breaks.append(
            Break(
                source="okr.events",
                objective_id=envelope.objective_id,
                version=envelope.version,
                problem=problem,
            )
        )
    return breaks


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
