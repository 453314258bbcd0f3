"""One table from failures to what the edges say: HTTP status, error code, every problem.

HTTP (422/404/409) and Kafka (`okr.command-results` rejections, dead letters) both read it, so a
command refused over one path is refused the same way over the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import KafkaError
from eventsourcing.persistence import InterfaceError, OperationalError
from pydantic import ValidationError

from domain.errors import (
    IdempotencyKeyReusedError,
    InvalidTransitionError,
    KeyResultNotFoundError,
    ObjectiveNotFoundError,
    OkrError,
    QualityRejectedError,
    ReasonRequiredError,
    VersionConflictError,
)
from events.commands import Issue
from services.access.principals import (
    AccessError,
    ImpersonationError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnknownPrincipalError,
)


@dataclass(frozen=True)
class Rejection:
    status: int
    error: str
    message: str
    problems: list[Issue]


def validation_problems(error: ValidationError) -> list[Issue]:
    """Every problem pydantic found, each located by a dotted path."""
    return problems_of(error.errors(include_url=False))


def problems_of(errors: Iterable[Mapping[str, Any]]) -> list[Issue]:
    """Pydantic-style error dicts as issues; FastAPI's request errors have the same shape."""
    return [
        Issue(
            code=str(problem["type"]),
            field=".".join(str(part) for part in problem["loc"]) or "(root)",
            message=str(problem["msg"]),
        )
        for problem in errors
    ]


def invalid_command(problems: list[Issue]) -> Rejection:
    """A command (or the HTTP request carrying it) that does not match its contract."""
    return Rejection(422, "invalid_command", "the command is not valid", problems)


STATUS_BY_ERROR: tuple[tuple[type[Exception], int, str], ...] = (
    (VersionConflictError, 409, "version_conflict"),
    (IdempotencyKeyReusedError, 422, "idempotency_key_reused"),
    (ObjectiveNotFoundError, 404, "objective_not_found"),
    (KeyResultNotFoundError, 404, "key_result_not_found"),
    (InvalidTransitionError, 409, "invalid_transition"),
    (QualityRejectedError, 422, "quality_rejected"),
    (ReasonRequiredError, 422, "reason_required"),
    (OkrError, 422, "rule_violation"),
    (UnauthenticatedError, 401, "unauthenticated"),
    (PermissionDeniedError, 403, "forbidden"),
    (UnknownPrincipalError, 403, "unknown_principal"),
    (ImpersonationError, 403, "impersonation"),
)


def reject(error: Exception) -> Rejection:
    """The rejection for an error the domain or validation raised on purpose."""
    if isinstance(error, ValidationError):
        return invalid_command(validation_problems(error))
    for error_type, status, code in STATUS_BY_ERROR:
        if isinstance(error, error_type):
            return Rejection(status, code, str(error), _problems_of(error, code))
    raise TypeError(f"not a rejection: {error!r}") from error


def _problems_of(error: Exception, code: str) -> list[Issue]:
    if isinstance(error, QualityRejectedError):
        return [
            Issue(code=issue.code, field=issue.field, message=issue.message)
            for issue in error.report.problems
        ]
    if isinstance(error, AccessError):
        return [Issue(code=code, field=error.problem_field, message=str(error))]
    field = "reason" if isinstance(error, ReasonRequiredError) else "(command)"
    return [Issue(code=code, field=field, message=str(error))]


REJECTABLE: tuple[type[Exception], ...] = (ValidationError, OkrError)
"""Errors that mean "this command is refused", as opposed to a fault of ours or of a store."""

TRANSIENT: tuple[type[Exception], ...] = (OperationalError, InterfaceError, KafkaError, OSError)
"""Outages: the same command later succeeds, so HTTP answers 503 and Kafka retries the message."""
