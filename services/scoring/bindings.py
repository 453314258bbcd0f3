"""The scorer's bindings follower: which key result follows which KPI, over which period.

It follows the event store's notification log, not Kafka: the event store is the system of record
and the scorer writes there anyway, so a binding is known (and back-filled) as soon as it is
stored, with no `okr.events` lag in between (docs/decisions/0007-kpi-scorer.md). Its position is
eventsourcing's tracking record "okr-scorer-bindings", written in the same transaction as what it
changes, so a crash repeats nothing and skips nothing. Reading the log a page at a time, waking
on saves, retrying and setting aside a stored event that fails alone are the log follower's
(`services.relay.follower`); this module is what the bindings follower does with a page.

For every objective named by a relevant event, the follower reconciles `kpi_bindings` with the
objective as it stands now (idempotent, whatever events it is catching up on): a new binding, or
one whose KPI or period changed, is aggregated from the stored series at once (back-fill) and, if
the objective is active, its key result gets the value; an activated objective gets the values of
its bindings; unbound or removed key results lose their row; closed and archived objectives keep
their rows, frozen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING
from uuid import UUID

from eventsourcing.persistence import IntegrityError, Notification, Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from eventsourcing.utils import get_topic

from domain.errors import NotScorableError
from domain.kpi_series import aggregate
from domain.objective import (
    Decision,
    KeyResult,
    Objective,
    ObjectiveStatus,
)
from domain.objective_events import EVENTS, DomainEvent
from projections.backoff import Backoff
from projections.stage_timings import StageTimer
from services.kafka.dead_letters import DeadLetterPublisher, send_with_new_producer
from services.relay.follower import Entry, LogPosition, NotificationFollower
from services.relay.wakeup import SAFETY_POLL_S
from services.scoring.scorer import ACTOR, kpi_reader, move_key_result
from services.scoring.series_store import (
    Binding,
    KpiBatch,
    KpiReader,
    KpiStateConflictError,
    TrackingWrite,
)

if TYPE_CHECKING:
    from services.commands.application import OkrApplication
    from services.settings import Settings

log = logging.getLogger(__name__)

FOLLOWER_NAME = "okr-scorer-bindings"
"""Its row in the tracking table (the relay has "okr.events-relay")."""
JOB_NAME = "bindings follower"
"""Its entry on the job board."""

RELEVANT_EVENTS: tuple[type[DomainEvent], ...] = tuple(
    event for event in EVENTS.values() if event.payload_model.changes_bindings
)
"""The events that can change a binding, its period or whether it scores, as their payload
models declare it (`changes_bindings`)."""
RELEVANT_TOPICS = [get_topic(cls) for cls in RELEVANT_EVENTS]

BATCH_SIZE = 100
CONFLICT_RETRIES = 20


@dataclass
class _Reconciliation:
    events: list[DomainEvent] = field(default_factory=list)
    bindings: list[Binding] = field(default_factory=list)
    removed: list[tuple[UUID, UUID]] = field(default_factory=list)
    fenced: set[str] = field(default_factory=set)
    """KPIs whose bindings change: their stats rows are written (fenced) with the change."""
    objective_ids: set[UUID] = field(default_factory=set)


class BindingsFollower:
    """Reconciles a page of the log at a time; blocking, but for `handle` (the log follower's
    `Handle`, which `run_bindings_follower` gives it)."""

    def __init__(self, application: OkrApplication, *, actor: str = ACTOR) -> None:
        self.application = application
        self.reader: KpiReader = kpi_reader(application)
        self.log = NotificationFollower(
            application,
            LogPosition(application, FOLLOWER_NAME),
            _objective_id,
            name=JOB_NAME,
            page_size=BATCH_SIZE,
            topics=RELEVANT_TOPICS,
            log=log,
        )
        self.actor = actor

    @property
    def position(self) -> LogPosition:
        return self.log.position

    @property
    def tracking_recorder(self) -> SQLiteTrackingRecorder | PostgresTrackingRecorder:
        recorder = self.position.recorder
        assert isinstance(recorder, SQLiteTrackingRecorder | PostgresTrackingRecorder)
        return recorder

    def follow(self) -> int:
        """Process everything stored so far; returns how many relevant notifications."""
        self.position.reload()
        total = 0
        while page := self.log.read():
            self.reconcile(page)
            total += len(page)
        return total

    async def handle(self, page: Sequence[Entry[UUID]], timer: StageTimer) -> None:
        await asyncio.to_thread(self.reconcile, page)

    def reconcile(self, page: Sequence[Entry[UUID]]) -> None:
        """The objectives the page names, reconciled, with the position at the page's end
        recorded in the same transaction."""
        objective_ids = list(dict.fromkeys(objective_id for _, objective_id in page))
        tracking = self.position.tracking(page[-1][0].id)
        for attempt in range(1, CONFLICT_RETRIES + 1):
            plan = _Reconciliation()
            try:
                self._reconcile(objective_ids, tracking, plan)
            except IntegrityError as error:
                self.application.evict(plan.objective_ids)
                if self.position.reload() >= tracking.notification_id:
                    return  # another follower on this store did it
                log.info("bindings lost a race (%s); recomputing (attempt %d)", error, attempt)
                continue
            self.position.moved_to(tracking.notification_id)
            self.application.snapshot_due(plan.events)
            return
        raise IntegrityError(f"bindings still conflicting after {CONFLICT_RETRIES} attempts")

    def _reconcile(
        self, objective_ids: Sequence[UUID], tracking: Tracking, plan: _Reconciliation
    ) -> None:
        plan.objective_ids.update(objective_ids)
        objectives = {oid: self.application.get_objective(oid) for oid in objective_ids}
        # Fence first: the KPIs' stats versions are read before their bindings and series, so a
        # scorer batch committed after this read makes our save fail instead of being lost.
        kpis: set[str] = set()
        for objective_id, objective in objectives.items():
            kpis |= {b.kpi_key for b in self.reader.bindings_of_objective(objective_id)}
            kpis |= {kr.binding.kpi_key for kr in _bound(objective) if kr.binding}
        stats = self.reader.stats(sorted(kpis))
        for objective_id, objective in objectives.items():
            self._reconcile_objective(objective_id, objective, tracking, plan)
        if not plan.fenced <= stats.keys():
            raise KpiStateConflictError("bindings changed while being reconciled")
        self.application.save(
            *plan.events,
            kpi_batch=KpiBatch(
                stats=[stats[key] for key in sorted(plan.fenced)],
                bindings=plan.bindings,
                removed_bindings=plan.removed,
                tracking=TrackingWrite(self.tracking_recorder, tracking),
            ),
        )

    def _reconcile_objective(
        self,
        objective_id: UUID,
        objective: Objective | None,
        tracking: Tracking,
        plan: _Reconciliation,
    ) -> None:
        existing = {b.key_result_id: b for b in self.reader.bindings_of_objective(objective_id)}
        desired = {kr.key_result_id: kr.binding for kr in _bound(objective) if kr.binding}
        for key_result_id, gone in existing.items():
            if key_result_id not in desired:
                plan.removed.append((objective_id, key_result_id))
                plan.fenced.add(gone.kpi_key)
        if objective is None:
            return
        for key_result_id, kpi in desired.items():
            wanted = Binding(
                objective_id=objective_id,
                key_result_id=key_result_id,
                kpi_key=kpi.kpi_key,
                aggregation=kpi.aggregation,
                period_start=objective.period_start,
                period_end=objective.period_end,
                objective_status=objective.status.value,
            )
            old = existing.get(key_result_id)
            if old is not None and (old.kpi_key, old.bounds_us) == (
                wanted.kpi_key,
                wanted.bounds_us,
            ):
                if (old.aggregation, old.objective_status) == (
                    kpi.aggregation,
                    wanted.objective_status,
                ):
                    continue
                wanted = replace(wanted, aggregate=old.aggregate)
            else:
                # New, or another KPI or period: aggregate the stored series (back-fill).
                start, end = wanted.bounds_us
                wanted = replace(
                    wanted, aggregate=aggregate(self.reader.series(wanted.kpi_key, start, end))
                )
            if old is not None:
                plan.fenced.add(old.kpi_key)
            plan.fenced.add(wanted.kpi_key)
            plan.bindings.append(wanted)
            if objective.status is ObjectiveStatus.ACTIVE:
                objective = self._backfill(objective, wanted, tracking, plan)

    def _backfill(
        self, objective: Objective, binding: Binding, tracking: Tracking, plan: _Reconciliation
    ) -> Objective:
        """The key result takes its binding's value now, from everything stored so far."""
        value = binding.value
        latest = binding.aggregate.latest
        if value is None or latest is None:
            return objective
        decision = Decision(
            actor=self.actor,
            command_id=f"kpi-backfill:{tracking.notification_id}:{binding.key_result_id}",
            now=self.application.clock(),
        )
        try:
            objective, events = move_key_result(
                objective,
                decision,
                binding,
                value,
                observations=binding.aggregate.count,
                last_kpi_event_id=latest.event_id,
            )
        except NotScorableError as error:
            log.warning("key result %s not back-filled: %s", binding.key_result_id, error)
            return objective
        plan.events.extend(events)
        return objective


def _bound(objective: Objective | None) -> list[KeyResult]:
    if objective is None:
        return []
    return [kr for kr in objective.key_results if kr.binding is not None]


def _objective_id(notification: Notification) -> UUID:
    return UUID(str(notification.originator_id))


def follow_bindings(application: OkrApplication) -> int:
    """Blocking: bring `kpi_bindings` up to date with everything stored; for tests and tools."""
    return BindingsFollower(application).follow()


async def run_bindings_follower(
    settings: Settings,
    application: OkrApplication,
    *,
    idle_poll_s: float = SAFETY_POLL_S,
    backoff: Backoff = Backoff(),
) -> None:
    """Follow the notification log until cancelled (`services.relay.follower`: woken by saves,
    every failure retried, a stored event that fails alone dead-lettered and passed over, so
    that new bindings are never left unscored)."""
    follower = BindingsFollower(application)
    dead_letters = DeadLetterPublisher(
        settings, send_with_new_producer(settings), consumer_group=FOLLOWER_NAME
    )
    await follower.log.run(
        lambda _: contextlib.nullcontext(follower.handle),
        backoff=backoff,
        resuming="retrying",
        idle_poll_s=idle_poll_s,
        dead_letters=dead_letters,
    )
