"""The command side: load an objective, decide, and store the events with the command's receipt.

Every write is optimistic: events carry the next version and the store's primary key on
(objective id, version) refuses a second writer. A command that named the version it expected gets
a conflict; one that did not is decided again on the fresh state (its intent did not depend on a
version, and re-deciding loses nothing). The receipt, stored in the same transaction, makes a
repeated command id return the first response and write nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from domain.errors import IdempotencyKeyReusedError, VersionConflictError
from domain.objective import Decision, Objective
from domain.quality import QualityReport
from events.commands import Command, CommandResult, Issue
from services.handlers import CREATING, Outcome, run_handler
from services.persistence import (
    ObjectiveSnapshot,
    PostgresReceiptRecorder,
    Receipt,
    SQLiteReceiptRecorder,
    project_objective,
)
from services.settings import Settings

UNVERSIONED_RETRIES = 5

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def request_digest(command: Command) -> str:
    """What makes two commands "the same request": everything but the id itself."""
    payload = command.model_dump(mode="json", exclude={"command_id"})
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


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
        super().__init__(env=settings.event_store_env())
        self.settings = settings
        self.clock = clock

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
        return objective

    def handle(self, command: Command) -> CommandResult:
        """Apply a command once; raises domain errors for the edge to map (422/404/409)."""
        digest = request_digest(command)
        replayed = self._replayed(command.command_id, digest)
        if replayed is not None:
            return replayed
        attempts = 1 if command.expected_version is not None else UNVERSIONED_RETRIES
        for attempt in range(attempts):
            objective_id = command.objective_id
            objective = None
            if command.body.type not in CREATING:
                assert objective_id is not None
                objective = self.get_objective(objective_id)
            self._check_expected_version(command, objective)
            decision = Decision(
                actor=command.actor,
                command_id=command.command_id,
                now=self.clock(),
                reason=command.reason,
            )
            outcome = run_handler(
                command.body.type, objective, objective_id, decision, command.body
            )
            result = self._accepted(command, objective, outcome)
            receipt = Receipt(
                command_id=command.command_id,
                request_digest=digest,
                response=result.model_dump(mode="json"),
            )
            try:
                self.save(*outcome.events, receipt=receipt)
            except IntegrityError:
                replayed = self._replayed(command.command_id, digest)
                if replayed is not None:
                    return replayed
                self._evict(objective_id)
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
            self._maybe_snapshot(outcome)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _replayed(self, command_id: str, digest: str) -> CommandResult | None:
        receipt = self.receipts.select_receipt(command_id)
        if receipt is None:
            return None
        if receipt.request_digest != digest:
            raise IdempotencyKeyReusedError(command_id)
        return CommandResult.model_validate({**receipt.response, "replayed": True})

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
            warnings=issues(outcome.report, "warnings"),
        )

    def _evict(self, objective_id: UUID | None) -> None:
        """A conflict means our cached copy is behind; drop it so the next load is fresh."""
        cache = self.repository.cache
        if cache is not None and objective_id is not None:
            with contextlib.suppress(KeyError):
                cache.get(objective_id, evict=True)

    def _maybe_snapshot(self, outcome: Outcome) -> None:
        interval = self.settings.snapshot_interval
        for event in outcome.events:
            if event.originator_version % interval == 0:
                self.take_snapshot(
                    event.originator_id,
                    version=event.originator_version,
                    projector_func=project_objective,
                )

    def stored_event_count(self) -> int:
        return self.recorder.max_notification_id() or 0

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "persistence": self.env.get("PERSISTENCE_MODULE")}
