"""OKR events as they cross Kafka on `okr.events`: one envelope, one payload model per event type.

A message is an `OkrEventEnvelope` (key = objective id) whose `payload` follows the model named by
`type`, at the envelope's `schema_version`. Delivery is at-least-once: a relay restart may publish
an event again, with the same `event_id`, so consumers dedupe on (objective_id, version).
Payloads speak the commands' vocabulary (`events.commands`): a key result is its definition plus
its id, a KPI binding is `kpi_key` + `aggregation`. These models import nothing of the service.

Each payload model is the one declaration of its event: the service stores the same fields (plus
who, when, why), and the class says where the event stands on an objective's score timeline
(`timeline`) and whether it can change a KPI binding (`changes_bindings`); docs/adding-a-command.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, ClassVar
from uuid import UUID, uuid5

import pydantic_core
from pydantic import AwareDatetime, Field

from events.commands import Aggregation, Contract, KeyResultDefinition, KpiKey
from events.upcasters import upcast

EVENT_ID_NAMESPACE = UUID("6f1c2a8e-4b7d-5e39-9a0c-3d5f7e9b1c24")
"""Namespace of `event_id`s; never change it, or republished events get new ids."""


def event_id_for(objective_id: UUID, version: int) -> UUID:
    """The same event always gets the same id, however often it is published."""
    return uuid5(EVENT_ID_NAMESPACE, f"{objective_id}/{version}")


class EventHeader(Contract):
    """What the envelope says of every event, whatever its payload: its place in the objective's
    history, and who decided it, when, under which command and why (`okr_event` takes it)."""

    objective_id: UUID = Field(description="The objective, also the message key.")
    version: int = Field(ge=1, description="The objective's version after this event (1, 2, …).")
    occurred_at: AwareDatetime = Field(description="When the decision was taken.")
    actor: str = Field(description="Who took it.")
    command_id: str = Field(description="The command that caused it.")
    reason: str | None = Field(None, description="Why, for decisions that need one.")
    chain_hash: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 chaining this event to the objective's previous one, as stored in "
        "the event store; `okr audit verify` checks the topic against it.",
    )


class _EventIdentity(Contract):
    event_id: UUID = Field(description="uuid5 of (objective id, version): stable across resends.")
    type: str = Field(description="Event type, e.g. 'ObjectiveCreated'; names the payload model.")
    schema_version: int = Field(ge=1, description="Version of this type's payload schema.")


class OkrEventEnvelope(EventHeader, _EventIdentity):
    """What every message on `okr.events` is; `payload` is read with `parse_okr_event`."""

    # Pydantic lists the bases' fields from the last base: event_id, type, schema_version, then
    # the header's, then payload, the order the JSON has always had.
    payload: dict[str, Any] = Field(description="The event's own fields, per `type`.")

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


@dataclass(frozen=True)
class Timeline:
    """Where an event stands on its objective's score timeline (`GET /objectives/{id}/timeline`).

    An event with a place adds one row: the scores right after it, its `cause`, the key result it
    names (its `key_result_id`, or its key result's) and a `detail` repeating the fields named
    here: the event's own, or its key result's as it stood before (a removed one's title).
    """

    cause: str
    detail: tuple[str, ...] = ()


class OkrPayload(Contract):
    """Base of the payload models; `schema_version` is the version this model reads."""

    schema_version: ClassVar[int] = 1
    timeline: ClassVar[Timeline | None] = None
    """The event's place on the score timeline; None: it adds no row there."""
    changes_bindings: ClassVar[bool] = False
    """True when the event can change which KPI moves a key result, over which period, or
    whether its objective takes KPI progress at all (what a KPI scorer must follow)."""


class KeyResult(KeyResultDefinition):
    """A key result as it enters an objective: its definition and the id it was given."""

    key_result_id: UUID


class ObjectiveCreated(OkrPayload):
    timeline = Timeline("created")

    title: str
    description: str = ""
    owner: str
    team: str
    period_start: date
    period_end: date
    parent_id: UUID | None = None
    key_results: list[KeyResult]


class ObjectiveRevised(OkrPayload):
    """Only the fields that changed are set; null means unchanged."""

    changes_bindings = True  # the period a bound KPI is aggregated over

    title: str | None = None
    description: str | None = None
    owner: str | None = None
    team: str | None = None
    period_start: date | None = None
    period_end: date | None = None


class ObjectiveAligned(OkrPayload):
    parent_id: UUID | None = Field(description="The new parent objective; null when detached.")


class ObjectiveActivated(OkrPayload):
    changes_bindings = True


class ObjectiveClosed(OkrPayload):
    timeline = Timeline("closed", detail=("final_score",))
    changes_bindings = True

    final_score: float = Field(description="Objective score (0..100) when it was closed.")
    retrospective: str = ""


class ObjectiveArchived(OkrPayload):
    changes_bindings = True


class KeyResultAdded(OkrPayload):
    timeline = Timeline("key_result_added")

    key_result: KeyResult


class KeyResultRevised(OkrPayload):
    timeline = Timeline("key_result_revised")

    key_result_id: UUID
    key_result: KeyResultDefinition = Field(description="The whole new definition.")


class KeyResultRemoved(OkrPayload):
    timeline = Timeline("key_result_removed", detail=("title",))
    changes_bindings = True

    key_result_id: UUID


class KpiBound(OkrPayload):
    changes_bindings = True

    key_result_id: UUID
    kpi_key: KpiKey
    aggregation: Aggregation


class KpiUnbound(OkrPayload):
    changes_bindings = True

    key_result_id: UUID


class ProgressCheckedIn(OkrPayload):
    """A person's check-in. v2 added `confidence`; v1 messages read as null (unknown)."""

    schema_version = 2
    timeline = Timeline("check_in", detail=("note", "confidence"))

    key_result_id: UUID
    value: float = Field(description="The key result's current value, in its metric.")
    confidence: float | None = Field(None, ge=0, le=1, description="0..1, how sure the owner is.")
    note: str = ""


class KpiProgressRecorded(OkrPayload):
    """A batch of KPI events moved a bound key result; names the KPI events it covers."""

    timeline = Timeline(
        "kpi", detail=("kpi_key", "observations", "last_kpi_event_id", "last_offset")
    )

    key_result_id: UUID
    value: float
    kpi_key: KpiKey
    observations: int = Field(ge=1, description="KPI events folded into this value.")
    last_kpi_event_id: str
    last_offset: int | None = None


class KeyResultCommented(OkrPayload):
    """Someone said something about a key result; its value and score do not change."""

    timeline = Timeline("comment", detail=("text",))

    key_result_id: UUID
    text: str


PAYLOADS: Mapping[str, type[OkrPayload]] = {
    payload.__name__: payload
    for payload in (
        ObjectiveCreated,
        ObjectiveRevised,
        ObjectiveAligned,
        ObjectiveActivated,
        ObjectiveClosed,
        ObjectiveArchived,
        KeyResultAdded,
        KeyResultRevised,
        KeyResultRemoved,
        KpiBound,
        KpiUnbound,
        ProgressCheckedIn,
        KpiProgressRecorded,
        KeyResultCommented,
    )
}
"""Event type -> payload model; the type name is the model's class name."""


class NotJsonError(ValueError):
    """The message's value is not JSON at all."""


class NotAnObjectError(ValueError):
    """The message's value is JSON, but not an object."""


class UnknownOkrEventError(ValueError):
    """A well-formed envelope whose type, or schema version, this code cannot read."""

    def __init__(self, event_type: str, schema_version: int) -> None:
        super().__init__(f"cannot read OKR event {event_type!r} at schema version {schema_version}")
        self.event_type = event_type
        self.schema_version = schema_version


def okr_event(payload: OkrPayload, header: EventHeader) -> OkrEventEnvelope:
    """Wrap a payload; its type, schema version and event id follow from the arguments."""
    return OkrEventEnvelope(
        event_id=event_id_for(header.objective_id, header.version),
        type=type(payload).__name__,
        schema_version=payload.schema_version,
        **dict(header),
        payload=payload.model_dump(mode="json"),
    )


def parse_okr_event(data: bytes) -> tuple[OkrEventEnvelope, OkrPayload]:
    """Read a message of `okr.events`, upcast to the current schema; ValueError if unreadable."""
    try:
        raw = pydantic_core.from_json(data)
    except ValueError as error:
        raise NotJsonError(f"not JSON: {error}") from None
    if not isinstance(raw, dict):
        raise NotAnObjectError("an OKR event must be a JSON object")
    envelope = OkrEventEnvelope.model_validate(upcast(raw))
    payload_model = PAYLOADS.get(envelope.type)
    if payload_model is None or envelope.schema_version != payload_model.schema_version:
        raise UnknownOkrEventError(envelope.type, envelope.schema_version)
    return envelope, payload_model.model_validate(envelope.payload)
