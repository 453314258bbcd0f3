"""The scorer's bindings follower: which key result follows which KPI, over which period.

It follows the event store's notification log, not Kafka: the event store is the system of record
and the scorer writes there anyway, so a binding is known (and back-filled) as soon as it is
stored, with no `okr.events` lag in between (docs/decisions/0007-kpi-scorer.md). Its position is
eventsourcing's tracking record "okr-scorer-bindings", written in the same transaction as what it
changes, so a crash repeats nothing and skips nothing.

For every objective named by a relevant event, the follower reconciles `kpi_bindings` with the
objective as it stands now (idempotent, whatever events it is catching up on): a new binding, or
one whose KPI or period changed, is aggregated from the stored series at once (back-fill) and, if
the objective is active, its key result gets the value; an activated objective gets the values of
its bindings; unbound or removed key results lose their row; closed and archived objectives keep
their rows, frozen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
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
    evolve,
    record_kpi_progress,
)
from domain.objective_events import EVENTS, DomainEvent, KpiBinding
from projections.backoff import Backoff, keep_running
from projections.failures import SetAsideStreak, describe, is_transient
from services.kafka.dead_letters import (
    DeadLetterPublisher,
    StoredEventRecord,
    send_with_new_producer,
)
from services.relay.publisher import tracking_recorder
from services.relay.wakeup import SAFETY_POLL_S, wait_for_wakeup
from services.scoring.scorer import ACTOR, kpi_reader
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
    """Blocking; call from a worker thread (`run_bindings_follower` does)."""

    def __init__(self, application: OkrApplication, *, actor: str = ACTOR) -> None:
        self.application = application
        self.reader: KpiReader = kpi_reader(application)
        recorder = tracking_recorder(application)
        assert isinstance(recorder, SQLiteTrackingRecorder | PostgresTrackingRecorder)
        self.tracking_recorder = recorder
        self.actor = actor

    def position(self) -> int:
        return self.tracking_recorder.max_tracking_id(FOLLOWER_NAME) or 0

    def follow(self, batch_size: int = BATCH_SIZE) -> int:
        """Process everything stored so far; returns how many relevant notifications."""
        total = 0
        while processed := self.follow_once(batch_size):
            total += processed
        return total

    def follow_once(self, batch_size: int = BATCH_SIZE) -> int:
        """Process the next relevant notifications (at most `batch_size`); 0 when caught up."""
        start = self.position()
        notifications = self.application.recorder.select_notifications(
            start=start, limit=batch_size, topics=RELEVANT_TOPICS, inclusive_of_start=False
        )
        if not notifications:
            return 0
        objective_ids = list(dict.fromkeys(UUID(str(n.originator_id)) for n in notifications))
        tracking = Tracking(FOLLOWER_NAME, notifications[-1].id)
        for attempt in range(1, CONFLICT_RETRIES + 1):
            plan = _Reconciliation()
            try:
                self._reconcile(objective_ids, tracking, plan)
            except IntegrityError as error:
                self.application.evict(plan.objective_ids)
                if self.position() >= tracking.notification_id:
                    return len(notifications)  # another follower on this store did it
                log.info("bindings lost a race (%s); recomputing (attempt %d)", error, attempt)
                continue
            self.application.snapshot_due(plan.events)
            return len(notifications)
        raise IntegrityError(f"bindings still conflicting after {CONFLICT_RETRIES} attempts")

    def set_aside_next(self) -> Notification | None:
        """Pass over the next relevant notification without processing it (it fails alone)."""
        notifications = self.application.recorder.select_notifications(
            start=self.position(), limit=1, topics=RELEVANT_TOPICS, inclusive_of_start=False
        )
        if not notifications:
            return None
        tracking = Tracking(FOLLOWER_NAME, notifications[0].id)
        self.application.save(
            kpi_batch=KpiBatch(tracking=TrackingWrite(self.tracking_recorder, tracking))
        )
        return notifications[0]

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
            events = record_kpi_progress(
                objective,
                decision,
                binding.key_result_id,
                value,
                observations=binding.aggregate.count,
                last_kpi_event_id=latest.event_id,
                binding=KpiBinding(kpi_key=binding.kpi_key, aggregation=binding.aggregation),
            )
        except NotScorableError as error:
            log.warning("key result %s not back-filled: %s", binding.key_result_id, error)
            return objective
        for event in events:
            objective = evolve(event, objective)
        plan.events.extend(events)
        return objective


def _bound(objective: Objective | None) -> list[KeyResult]:
    if objective is None:
        return []
    return [kr for kr in objective.key_results if kr.binding is not None]


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
    """Follow the notification log until cancelled; woken at once by this process's saves.

    Every exception is retried (`keep_running`): a follower that died quietly would leave new
    bindings unscored.
    """
    follower: BindingsFollower | None = None
    dead_letters = DeadLetterPublisher(
        settings, send_with_new_producer(settings), consumer_group=FOLLOWER_NAME
    )
    streak = SetAsideStreak()
    suspects = 0
    """Notifications still to follow one at a time, after a batch failed for good."""

    async def follow_next() -> int:
        """The next notifications; after a failure a retry cannot cure, one at a time, and the
        one that fails alone is dead-lettered and passed over."""
        nonlocal suspects
        assert follower is not None
        if not suspects:
            try:
                return await asyncio.to_thread(follower.follow_once)
            except Exception as error:
                if is_transient(error):
                    raise
                log.warning("bindings follower: %s; following one at a time", describe(error))
                suspects = BATCH_SIZE
        try:
            processed = await asyncio.to_thread(follower.follow_once, 1)
        except Exception as error:
            if is_transient(error):
                raise
            streak.setting_aside(error)
            await set_aside(error)
            processed = 1
        else:
            streak.processed()
        suspects = max(0, suspects - 1) if processed else 0
        return processed

    async def set_aside(error: Exception) -> None:
        assert follower is not None
        notification = await asyncio.to_thread(follower.set_aside_next)
        if notification is None:
            return
        log.error(
            "bindings follower: stored event %d cannot be processed; dead-lettering it",
            notification.id,
            exc_info=error,
        )
        record = StoredEventRecord(
            offset=notification.id,
            key=str(notification.originator_id).encode(),
            value=notification.state,
            event_topic=notification.topic,
        )
        await dead_letters.publish(record, "processing_failed", error)

    with application.saved.listen() as saved:

        async def attempt(succeeded: Callable[[], None]) -> None:
            nonlocal follower
            if follower is None:
                follower = await asyncio.to_thread(BindingsFollower, application)
            while True:
                saved.clear()
                processed = await follow_next()
                succeeded()
                if not processed:
                    await wait_for_wakeup(saved, idle_poll_s)

        await keep_running(
            "bindings follower", attempt, backoff=backoff, resuming="retrying", log=log
        )
