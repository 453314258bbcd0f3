"""Commands, as other services send them on `okr.commands` and as the HTTP API accepts them.

A message on `okr.commands` is a `Command` envelope (key = objective id) whose `body` is one of the
command models below, told apart by `type`, sent with a `principal` header naming the sending
service (UTF-8; it must be on the service's allow-list, and it is the recorded actor). The HTTP
API takes the same bodies. The outcome of every command that could be read goes to
`okr.command-results` as a `CommandResult`, keyed by command id.
These models import nothing of the service: other teams can vendor this package.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict
from pydantic_core import PydanticCustomError

SCHEMA_VERSION: Literal[1] = 1

KeyResultKind = Literal["increase", "decrease", "range", "at_least", "at_most", "milestone"]
Aggregation = Literal["latest", "sum", "count", "avg", "min", "max"]

MAX_VERSION = 2**63 - 1
"""Versions are 64-bit integers in both stores; a larger number is refused, not overflowed."""

NO_NUL_PATTERN = r"^[^\x00]*$"


def refuse_nul(text: str) -> str:
    """PostgreSQL cannot store U+0000 in text or JSONB, SQLite can: refused here, for both
    stores and both paths (HTTP, Kafka), so no store takes what the other would refuse."""
    if "\x00" in text:
        raise PydanticCustomError(
            "nul_character", "text must not contain the NUL character (U+0000)"
        )
    return text


NO_NUL = {"pattern": NO_NUL_PATTERN}
"""For the JSON schema (so clients and fuzzers know); `refuse_nul` says why when it fails."""

DAY_FORM = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def require_day(value: object) -> object:
    """A day is `YYYY-MM-DD` (or a `date` from Python callers), nothing else: pydantic alone would
    also take a moment at midnight, a Unix time or `20261001`, and guess a day from them."""
    if isinstance(value, str):
        if not DAY_FORM.fullmatch(value):
            raise PydanticCustomError(
                "date_parsing", "Input should be a day as YYYY-MM-DD, e.g. 2026-07-01, no time"
            )
        return value
    if isinstance(value, datetime) or not isinstance(value, date):
        raise PydanticCustomError(
            "date_type", "Input should be a day as a string YYYY-MM-DD, e.g. 2026-07-01"
        )
    return value


# Strict JSON types, on okr.commands as over HTTP: a number is a JSON number (an integer is one
# too), never a string or a boolean coerced into one; a day is YYYY-MM-DD.
Number = Annotated[float, Strict()]
Integer = Annotated[int, Strict()]
Day = Annotated[date, BeforeValidator(require_day)]

# Length first, NUL last: the length errors keep their `string_too_long` codes.
ShortText = Annotated[
    str, Field(min_length=1, max_length=200, json_schema_extra=NO_NUL), AfterValidator(refuse_nul)
]
Version = Annotated[Integer, Field(ge=0, le=MAX_VERSION)]
PeriodDay = Annotated[
    date,
    Field(
        ge=date(1900, 1, 1),
        le=date(9998, 12, 31),
        description="A day of the period; the period runs over whole days (UTC).",
    ),
    BeforeValidator(require_day),  # outside the bounds, so they stay the date's own (and schema's)
]
LongText = Annotated[
    str, Field(max_length=5000, json_schema_extra=NO_NUL), AfterValidator(refuse_nul)
]
CommentText = Annotated[
    str, Field(min_length=1, max_length=2000, json_schema_extra=NO_NUL), AfterValidator(refuse_nul)
]
MetricText = Annotated[
    str, Field(max_length=100, json_schema_extra=NO_NUL), AfterValidator(refuse_nul)
]
RelativeTarget = Annotated[
    str, Field(max_length=30, json_schema_extra=NO_NUL), AfterValidator(refuse_nul)
]
KpiKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.:\-/]+$",
        description="Name of a KPI stream, e.g. 'sales.product_x.units' or 'nps'.",
    ),
]


class Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class KeyResultDefinition(Contract):
    """How a key result is measured. Unmeasurable definitions are refused, with every reason."""

    title: ShortText = Field(description="What the key result says, e.g. 'Raise NPS to 80'.")
    kind: KeyResultKind = Field("increase", description="How achievement is judged.")
    metric: MetricText | None = Field(None, description="Unit, e.g. 'units', '%'.")
    baseline: Number | None = Field(None, description="Value at the start.")
    target: Number | None = Field(None, description="Value to reach, or threshold to hold.")
    target_low: Number | None = Field(None, description="Range kind: lower bound.")
    target_high: Number | None = Field(None, description="Range kind: upper bound.")
    relative_target: RelativeTarget | None = Field(
        None, description="Target relative to the baseline, e.g. '+30%'."
    )
    deadline: Day | None = Field(None, description="Date by which the target is due.")
    weight: Number = Field(1.0, gt=0, le=1000, description="Weight in the objective's score.")


class CreateObjective(Contract):
    type: Literal["create_objective"] = "create_objective"
    objective_id: UUID | None = Field(
        None, description="Chosen by the sender so it can key later commands; else generated."
    )
    title: ShortText
    description: LongText = ""
    owner: ShortText
    team: ShortText
    period_start: PeriodDay
    period_end: PeriodDay
    parent_id: UUID | None = Field(None, description="The objective this one aligns to.")
    key_results: list[KeyResultDefinition] = Field(min_length=1, max_length=50)


class ReviseObjective(Contract):
    """Change what is given; fields left out stay as they are."""

    type: Literal["revise_objective"] = "revise_objective"
    title: ShortText | None = None
    description: LongText | None = None
    owner: ShortText | None = None
    team: ShortText | None = None
    period_start: PeriodDay | None = None
    period_end: PeriodDay | None = None


class AlignObjective(Contract):
    type: Literal["align_objective"] = "align_objective"
    parent_id: UUID | None = Field(description="The new parent objective; null to detach.")


class ActivateObjective(Contract):
    type: Literal["activate_objective"] = "activate_objective"


class CloseObjective(Contract):
    type: Literal["close_objective"] = "close_objective"
    retrospective: LongText = ""


class ArchiveObjective(Contract):
    type: Literal["archive_objective"] = "archive_objective"


class AddKeyResult(Contract):
    type: Literal["add_key_result"] = "add_key_result"
    key_result: KeyResultDefinition


class ReviseKeyResult(Contract):
    """Replace a key result's definition; moving its target needs a reason."""

    type: Literal["revise_key_result"] = "revise_key_result"
    key_result_id: UUID
    key_result: KeyResultDefinition


class RemoveKeyResult(Contract):
    type: Literal["remove_key_result"] = "remove_key_result"
    key_result_id: UUID


class BindKpi(Contract):
    type: Literal["bind_kpi"] = "bind_kpi"
    key_result_id: UUID
    kpi_key: KpiKey
    aggregation: Aggregation = Field(
        "latest", description="How the KPI's values over the objective's period become the KR's."
    )


class UnbindKpi(Contract):
    type: Literal["unbind_kpi"] = "unbind_kpi"
    key_result_id: UUID


class CheckIn(Contract):
    type: Literal["check_in"] = "check_in"
    key_result_id: UUID
    value: Number = Field(description="The key result's current value, in its metric.")
    confidence: Number | None = Field(None, ge=0, le=1, description="0..1, how sure the owner is.")
    note: LongText = ""


class CommentKeyResult(Contract):
    """Say something about a key result (why it stalls, what was tried); nothing in it changes."""

    type: Literal["comment_key_result"] = "comment_key_result"
    key_result_id: UUID
    text: CommentText = Field(description="The comment, 1 to 2000 characters.")


CommandBody = Annotated[
    CreateObjective
    | ReviseObjective
    | AlignObjective
    | ActivateObjective
    | CloseObjective
    | ArchiveObjective
    | AddKeyResult
    | ReviseKeyResult
    | RemoveKeyResult
    | BindKpi
    | UnbindKpi
    | CheckIn
    | CommentKeyResult,
    Field(discriminator="type"),
]


class Command(Contract):
    """The envelope on `okr.commands` (key = objective id)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    command_id: ShortText = Field(description="Unique per command; a repeat is applied once.")
    objective_id: UUID | None = Field(
        None, description="Target objective; null only for create_objective."
    )
    expected_version: Version | None = Field(
        None, description="Refuse (conflict) unless the objective is at this version."
    )
    actor: ShortText | None = Field(
        None,
        description="Who decides, as recorded on the events: always the authenticated principal "
        "(the API key's over HTTP; the `principal` header on okr.commands). May be left out; a "
        "value naming anyone else is rejected as impersonation.",
    )
    reason: LongText | None = Field(
        None, description="Why; required to change a target, remove a KR, close or archive."
    )
    body: CommandBody


class Issue(Contract):
    """One problem (or warning) with a command, located by a dotted path."""

    code: str
    field: str
    message: str


class CommandResult(Contract):
    """The outcome of a command on `okr.command-results` (key = command id)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    command_id: str
    status: Literal["accepted", "rejected"]
    objective_id: UUID | None = None
    version: int | None = Field(None, description="The objective's version after the command.")
    events: list[str] = Field(default_factory=list, description="Types of the events written.")
    key_result_id: UUID | None = Field(None, description="Set when a key result was added.")
    key_result_ids: list[UUID] = Field(
        default_factory=list,
        description="The key results the command made, in the order sent: every one a create "
        "made, or the one added.",
    )
    replayed: bool = Field(False, description="True when the command id had been applied before.")
    error: str | None = Field(None, description="Machine-readable reason of a rejection.")
    problems: list[Issue] = Field(default_factory=list)
    warnings: list[Issue] = Field(default_factory=list)
