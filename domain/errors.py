"""Domain errors: one base class so callers can catch every OKR rule violation at once.

Each concrete error also derives from the built-in class it refines (mostly ``ValueError``) so that
generic code, e.g. an HTTP layer mapping ``ValueError`` to 422, keeps working without knowing us.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from domain.quality import QualityReport


class OkrError(Exception):
    """Base of every error the OKR domain raises on purpose."""


class InvalidRelativeTargetError(OkrError, ValueError):
    """A relative target such as "+30 %" could not be read or applied."""


class NotScorableError(OkrError, ValueError):
    """The key result lacks what its scoring formula needs, or the value given is unusable."""


class NaiveDatetimeError(OkrError, ValueError):
    """A datetime without a timezone: comparing it with aware ones would silently be wrong."""


class InvalidPeriodError(OkrError, ValueError):
    """A period whose end is not after its start."""


class InvalidScoreError(OkrError, ValueError):
    """A score outside 0..100, or not a finite number."""


class InvalidPaceSettingError(OkrError, ValueError):
    """Pace thresholds or staleness window that cannot produce a meaningful status."""


class QualityRejectedError(OkrError, ValueError):
    """An objective or key result failed the quality rules; ``report`` says every reason."""

    def __init__(self, report: QualityReport) -> None:
        self.report = report
        super().__init__(_describe_problems(report))

    def __reduce__(self) -> tuple[type[QualityRejectedError], tuple[QualityReport]]:
        # Exceptions pickle by re-calling __init__ with ``args``; ours takes the report, not a text.
        return (type(self), (self.report,))


def _describe_problems(report: QualityReport) -> str:
    count = len(report.problems)
    noun = "problem" if count == 1 else "problems"
    details = "; ".join(f"{issue.field}: {issue.message}" for issue in report.problems)
    return f"rejected by the quality rules ({count} {noun}): {details}"


class ObjectiveNotFoundError(OkrError, LookupError):
    def __init__(self, objective_id: object) -> None:
        self.objective_id = objective_id
        super().__init__(f"objective {objective_id} not found")


class KeyResultNotFoundError(OkrError, LookupError):
    def __init__(self, objective_id: object, key_result_id: object) -> None:
        self.objective_id = objective_id
        self.key_result_id = key_result_id
        super().__init__(f"objective {objective_id} has no key result {key_result_id}")


class InvalidTransitionError(OkrError, ValueError):
    """The command does not apply to an objective in its current status (e.g. closing a draft)."""

    def __init__(self, objective_id: object, status: str, action: str) -> None:
        self.objective_id = objective_id
        self.status = status
        self.action = action
        super().__init__(f"cannot {action} objective {objective_id}: it is {status}")


class ReasonRequiredError(OkrError, ValueError):
    """Decisions (target change, KR removal, close, archive) must say why: the audit trail asks."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"{what} needs a reason")


class RuleViolationError(OkrError, ValueError):
    """A domain rule that is not a quality rule, e.g. keeping at least one key result."""


class VersionConflictError(OkrError):
    """Another writer got there first: the objective is not at the version the command expected."""

    def __init__(self, objective_id: object, expected: int | None, actual: int | None) -> None:
        self.objective_id = objective_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"objective {objective_id} is at version {actual}, not the expected {expected}"
        )


class IdempotencyKeyReusedError(OkrError, ValueError):
    """A command id already applied to a different request: refusing beats guessing."""

    def __init__(self, command_id: str) -> None:
        self.command_id = command_id
        super().__init__(f"command id {command_id!r} was already used for a different request")
