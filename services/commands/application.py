"""The command side: load an objective, decide, and store the events with the command's receipt.

Every write is optimistic: events carry the next version and the store's primary key on
(objective id, version) refuses a second writer. A command that named the version it expected gets
a conflict; one that did not is decided again on the fresh state (its intent did not depend on a
version, and re-deciding loses nothing). The receipt, stored in the same transaction, makes a
repeated command id return the first response and write nothing. A command id (over HTTP, the
`Idempotency-Key`) is its actor's own: receipts are kept per actor, so the same id from another
principal is simply another command, neither replayed nor refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

import orjson
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, Notification, Recording

from domain.errors import IdempotencyKeyReusedError, RuleViolationError, VersionConflictError
from domain.objective import Decision, Objective, require_objective
from domain.objective_events import DomainEvent
from domain.quality import QualityReport
from events.commands import Command, CommandResult, CreateObjective, Issue
from services.commands.event_store import (
    ObjectiveSnapshot,
    PostgresReceiptRecorder,
    Receipt,
    SQLiteReceiptRecorder,
    project_objective,
    store_doorbell,
)
from services.commands.handlers import CREATING, Outcome, run_handler
from services.relay.wakeup import Wakeup
from services.settings import Settings
from services.stores import prepare_store

if TYPE_CHECKING:
    from eventsourcing.domain import DomainEventProtocol

log = logging.getLogger(__name__)

UNVERSIONED_RETRIES = 32
"""Each lost race means another writer's command was stored, so re-deciding cannot livelock: with
N writers on one objective a command loses at most N - 1 times. The cap only bounds starvation
under sustained contention; 5 made 8 concurrent check-ins on one objective fail with a 409."""

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def request_digest(command: Command) -> str:
    """What makes two commands "the same request": everything but the id itself."""
    payload = command.model_dump(mode="json", exclude={"command_id"})
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def receipt_key(actor: str, command_id: str) -> str:
    """Where a command's receipt is kept: its id within its actor's. A JSON pair, so no actor and
    id can spell another's; stores written before keep bare ids (`OkrApplication._legacy`)."""
    return orjson.dumps([actor, command_id]).decode()


def target_objective_id(command: Command) -> UUID | None:
    """The objective a command writes to; a create may name it in its body, envelope or both."""
    if isinstance(command.body, CreateObjective):
        return command.body.objective_id or command.objective_id
    return command.objective_id


def issues(report: QualityReport | None, kind: str) -> list[Issue]:
    if report is None:
        return []
    found = report.problems if kind == "problems" else report.warnings
    return [Issue(code=i.code, field=i.field, message=i.message) for i in found]


class OkrApplication(Application[UUID]):
    """The event-sourced application whose event store is the system of record."""

    name = "okr"
    snapshot_class = ObjectiveSnapshot

    def __init__(self, settings: Settings, clock: Clock = utc_now) -> None:
        prepare_store(settings.event_store_url)  # made private before anything else makes it
        super().__init__(env=settings.event_store_env())
        self.settings = settings
        self.clock = clock
        self.saved = Wakeup(store_doorbell(settings, self.recorder))
        """Rung after every save that stored events, by this process or another: the relay and
        followers wake at once (`services.relay.wakeup`)."""
        self.bare_receipts = self.receipts.has_bare_receipts()
        """Receipts under bare command ids exist (a store from before receipts were per actor):
        only then does a new command look for one (`_legacy`), a second lookup on every write."""

    def close(self) -> None:
        self.saved.close()
        super().close()

    @property
    def receipts(self) -> SQLiteReceiptRecorder | PostgresReceiptRecorder:
        recorder = self.recorder
        assert isinstance(recorder, SQLiteReceiptRecorder | PostgresReceiptRecorder)
        return recorder

    def get_objective(self, objective_id: UUID, version: int | None = None) -> Objective | None:
        try:
            objective: Objective = self.repository.get(
                objective_id,
                version=version,
                projector_func=project_objective,
                deepcopy_from_cache=False,
            )
        except AggregateNotFoundError:
            return None
        cache = self.repository.cache
        if version is None and cache is not None:
            # eventsourcing fast-forwards a cached aggregate but keeps the stale copy for mutable
            # ones to update in place; ours is immutable, so without this every load would replay
            # all events since the first (snapshots are not used for a cached objective).
            cache.put(objective_id, objective)
        return objective

    def handle(self, command: Command) -> CommandResult:
        """Apply a command once; raises domain errors for the edge to map (422/404/409)."""
        if command.actor is None:
            raise RuleViolationError("a command needs its actor: the edge names the principal")
        actor = command.actor
        digest = request_digest(command)
        key = receipt_key(actor, command.command_id)
        replayed = self._replayed(key, command, digest)
        if replayed is not None:
            return replayed
        creating = command.body.type in CREATING
        objective_id = target_objective_id(command)
        if objective_id is None and not creating:
            raise RuleViolationError(f"{command.body.type} needs the objective_id it applies to")
        # A create that lost its race finds the objective there on every retry: re-deciding is
        # pointless, so it conflicts at once, like a versioned command.
        retry = command.expected_version is None and not creating
        attempts = UNVERSIONED_RETRIES if retry else 1
        for attempt in range(attempts):
            objective = None
            if not creating:
                assert objective_id is not None
                objective = require_objective(self.get_objective(objective_id), objective_id)
            self._check_expected_version(command, objective)
            decision = Decision(
                actor=actor,
                command_id=command.command_id,
                now=self.clock(),
                reason=command.reason,
            )
            outcome = run_handler(
                command.body.type, objective, command.objective_id, decision, command.body
            )
            result = self._accepted(command, objective, outcome)
            receipt = Receipt(
                command_id=key,
                request_digest=digest,
                response=result.model_dump(mode="json"),
            )
            try:
                self.save(*outcome.events, receipt=receipt)
            except IntegrityError:
                replayed = self._replayed(key, command, digest)
                if replayed is not None:
                    return replayed
                self.evict([objective_id])
                if attempt + 1 < attempts:
                    continue
                current = self.get_objective(objective_id) if objective_id else None
                raise VersionConflictError(
                    objective_id,
                    command.expected_version
                    if command.expected_version is not None
                    else (objective.version if objective else 0),
                    current.version if current else None,
                ) from None
            self.snapshot_due(outcome.events)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _replayed(self, key: str, command: Command, digest: str) -> CommandResult | None:
        """The first answer to this actor's command id, None if it is new; an id the actor used
        for another request is refused."""
        receipt = self.receipts.select_receipt(key)
        if receipt is None and self.bare_receipts:
            receipt = self._legacy(command, digest)
        if receipt is None:
            return None
        if receipt.request_digest != digest:
            raise IdempotencyKeyReusedError(command.command_id)
        return CommandResult.model_validate({**receipt.response, "replayed": True})

    def _legacy(self, command: Command, digest: str) -> Receipt | None:
        """A receipt kept under the bare command id, as stores written before receipts were per
        actor hold them, if it is this actor's: the digest covers the actor, so the same request
        matches; for another request, the events it wrote name their actor."""
        receipt = self.receipts.select_receipt(command.command_id)
        if receipt is None or receipt.request_digest == digest:
            return receipt
        return receipt if self._written_by(receipt, command) else None

    def _written_by(self, receipt: Receipt, command: Command) -> bool:
        response = CommandResult.model_validate(receipt.response)
        if response.objective_id is None or response.version is None or not response.events:
            return False  # wrote nothing: no event says whose it was
        written = self.events.get(
            response.objective_id, gt=response.version - 1, lte=response.version
        )
        return any(
            event.actor == command.actor and event.command_id == command.command_id
            for event in cast("Iterable[DomainEvent]", written)
        )

    def _check_expected_version(self, command: Command, objective: Objective | None) -> None:
        expected = command.expected_version
        if expected is None:
            return
        actual = objective.version if objective is not None else 0
        if actual != expected:
            raise VersionConflictError(command.objective_id, expected, actual)

    def _accepted(
        self, command: Command, objective: Objective | None, outcome: Outcome
    ) -> CommandResult:
        if outcome.events:
            objective_id: UUID | None = outcome.events[-1].originator_id
            version: int | None = outcome.events[-1].originator_version
        else:
            objective_id = command.objective_id
            version = objective.version if objective is not None else None
        return CommandResult(
            command_id=command.command_id,
            status="accepted",
            objective_id=objective_id,
            version=version,
            events=[type(event).__name__ for event in outcome.events],
            key_result_id=outcome.extra.get("key_result_id"),
            key_result_ids=outcome.extra.get("key_result_ids", []),
            warnings=issues(outcome.report, "warnings"),
        )

    def evict(self, objective_ids: Iterable[UUID | None]) -> None:
        """A conflict means our cached copies are behind; drop them so the next load is fresh."""
        cache = self.repository.cache
        if cache is None:
            return
        for objective_id in objective_ids:
            if objective_id is not None:
                with contextlib.suppress(KeyError):
                    cache.get(objective_id, evict=True)

    def save_events(self, events: Sequence[DomainEvent], **kwargs: Any) -> list[Recording[UUID]]:
        """Store events already decided, in one transaction with what `kwargs` carry.

        `save` checks every object against eventsourcing's runtime protocols (~14 µs an event);
        the KPI scorer saves thousands of events a batch and skips that.
        """
        recordings = self.events.put(
            cast("list[DomainEventProtocol[UUID]]", list(events)), **kwargs
        )
        self._notify(recordings)
        return recordings

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        super()._notify(recordings)
        if recordings:
            self.saved.notify()

    def snapshot_due(self, events: Sequence[DomainEvent]) -> None:
        """Snapshot objectives whose new version is a multiple of the interval, after a save."""
        interval = self.settings.snapshot_interval
        for event in events:
            if event.originator_version % interval != 0:
                continue
            try:
                self.take_snapshot(
                    event.originator_id,
                    version=event.originator_version,
                    projector_func=project_objective,
                )
            except Exception:
                # The command is stored already; a snapshot only speeds up loading, so failing
                # to take one must not turn an applied command into an error.
                log.exception(
                    "snapshot of %s at %s failed", event.originator_id, event.originator_version
                )

    def notification_pages(
        self, *, after: int = 0, stop: int | None = None, page_size: int = 1000
    ) -> Iterator[Sequence[Notification]]:
        """The stored events in store order, a page at a time, from after notification `after`
        up to `stop` (included; None: whatever is stored when each page is read)."""
        while True:
            page = self.recorder.select_notifications(
                start=after, limit=page_size, stop=stop, inclusive_of_start=False
            )
            if not page:
                return
            yield page
            after = page[-1].id

    def last_notification_id(self) -> int:
        """The notification id of the newest stored event, 0 when none. Ids only grow, so the
        difference between two readings counts the events stored in between (when no insert
        failed: a failed one can leave a gap on PostgreSQL)."""
        return self.recorder.max_notification_id() or 0
