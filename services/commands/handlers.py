"""One handler per command: wire body in, domain decision out. Registered in `HANDLERS`.

Handlers are pure: they translate the contract (`events.commands`) into the domain's terms and
call the decision; loading, saving, idempotency and concurrency are the application's job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID

from domain import objective as decide
from domain.chain import GENESIS_HASH, seal
from domain.errors import RuleViolationError
from domain.objective import Decision, Objective, ObjectiveDetails, require_objective
from domain.objective_events import Aggregation, DomainEvent, KpiBinding, spec_of
from domain.quality import QualityReport
from events import commands as wire
from events import okr


@dataclass(frozen=True)
class Outcome:
    events: list[DomainEvent]
    report: QualityReport | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def create_objective(_: Objective | None, decision: Decision, body: Any) -> Outcome:
    command: wire.CreateObjective = body
    events, report = decide.create_objective(
        decision,
        ObjectiveDetails.model_validate(command, from_attributes=True),
        [spec_of(kr) for kr in command.key_results],
        objective_id=command.objective_id,
    )
    [created] = events
    assert isinstance(created, okr.ObjectiveCreated)
    made = [key_result.key_result_id for key_result in created.key_results]
    return Outcome(events, report, {"key_result_ids": made})


def revise_objective(objective: Objective, decision: Decision, body: Any) -> Outcome:
    command: wire.ReviseObjective = body
    requested = okr.ObjectiveRevised.model_validate(command, from_attributes=True)
    events, report = decide.revise_objective(objective, decision, requested)
    return Outcome(events, report)


def align_objective(objective: Objective, decision: Decision, body: Any) -> Outcome:
    command: wire.AlignObjective = body
    return Outcome(decide.align_objective(objective, decision, command.parent_id))


def activate_objective(objective: Objective, decision: Decision, _: Any) -> Outcome:
    events, report = decide.activate_objective(objective, decision)
    return Outcome(events, report)


def close_objective(objective: Objective, decision: Decision, body: Any) -> Outcome:
    command: wire.CloseObjective = body
    return Outcome(decide.close_objective(objective, decision, command.retrospective))


def archive_objective(objective: Objective, decision: Decision, _: Any) -> Outcome:
    return Outcome(decide.archive_objective(objective, decision))


def add_key_result(objective: Objective, decision: Decision, body: Any) -> Outcome:
    command: wire.AddKeyResult = body
    events, report, key_result_id = decide.add_key_result(
        objective, decision, spec_of(command.key_result)
    )
    return Outcome(
        events, report, {"key_result_id": key_result_id, "key_result_ids": [key_result_id]}
    )


def revise_key_result(objective: Objective, decision: Decision, body: Any) -> Outcome:
    command: wire.ReviseKeyResult = body
    events, report = decide.revise_key_result(
        objective, decision, command.key_result_id, spec_of(command.key_result)
    )
    return Outcome(events, report)


def remove_key_result(objective: Objective, decision: Decision, body: Any) -> Outcome:
    command: wire.RemoveKeyResult = body
    return Outcome(decide.remove_key_result(objective, decision, command.key_result_id))


def bind_kpi(objective: Objective, decision: Decision, body: Any) -> Outcome:
    command: wire.BindKpi = body
    binding = KpiBinding(kpi_key=command.kpi_key, aggregation=Aggregation(command.aggregation))
    return Outcome(decide.bind_kpi(objective, decision, command.key_result_id, binding))


def unbind_kpi(objective: Objective, decision: Decision, body: Any) -> Outcome:
    command: wire.UnbindKpi = body
    return Outcome(decide.unbind_kpi(objective, decision, command.key_result_id))


def check_in(objective: Objective, decision: Decision, body: Any) -> Outcome:
    command: wire.CheckIn = body
    events = decide.check_in(
        objective,
        decision,
        command.key_result_id,
        command.value,
        confidence=command.confidence,
        note=command.note,
    )
    return Outcome(events)


def comment_key_result(objective: Objective, decision: Decision, body: Any) -> Outcome:
    command: wire.CommentKeyResult = body
    return Outcome(
        decide.comment_key_result(objective, decision, command.key_result_id, command.text)
    )


def keyed_by_envelope(body: wire.CreateObjective, objective_id: UUID | None) -> Any:
    """A create keyed by its envelope's objective id creates that objective, not a random one."""
    if objective_id is None or body.objective_id == objective_id:
        return body
    if body.objective_id is not None:
        raise RuleViolationError(
            f"the command targets objective {objective_id} but its body creates {body.objective_id}"
        )
    return body.model_copy(update={"objective_id": objective_id})


Handler = Callable[[Any, Decision, Any], Outcome]

CREATING: dict[str, Handler] = {"create_objective": create_objective}
"""Handlers that start a new objective; every other one needs the objective to exist."""

HANDLERS: dict[str, Handler] = {
    **CREATING,
    "revise_objective": revise_objective,
    "align_objective": align_objective,
    "activate_objective": activate_objective,
    "close_objective": close_objective,
    "archive_objective": archive_objective,
    "add_key_result": add_key_result,
    "revise_key_result": revise_key_result,
    "remove_key_result": remove_key_result,
    "bind_kpi": bind_kpi,
    "unbind_kpi": unbind_kpi,
    "check_in": check_in,
    "comment_key_result": comment_key_result,
}


def run_handler(
    body_type: str,
    objective: Objective | None,
    objective_id: UUID | None,
    decision: Decision,
    body: Any,
) -> Outcome:
    """The command's decision, its events sealed onto the objective's hash chain."""
    handler = HANDLERS[body_type]
    if body_type in CREATING:
        outcome: Outcome = handler(None, decision, keyed_by_envelope(body, objective_id))
        return replace(outcome, events=seal(GENESIS_HASH, outcome.events))
    assert objective_id is not None
    current = require_objective(objective, objective_id)
    outcome = handler(current, decision, body)
    return replace(outcome, events=seal(current.chain_hash, outcome.events))
