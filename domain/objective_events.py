"""What can happen to an objective: the stored, immutable facts, one class per decision.

Each event is declared once, by its payload model in `events/okr.py` (the contract other services
read): the stored event of that type is the same model plus who took the decision, when, under
which command and (for decisions) why, and this module makes one such class per payload. So the
fields, the schema version, the upcasters (`events/upcasters.py`) and the place on the timeline
are never written twice, and the relay publishes a stored event by dropping its header
(docs/decisions/0019-one-declaration-per-event.md).

Four event types were stored before their fields were declared this way, in the domain's older
words (a key result's `spec`, a KPI `binding`); `OLDER_SHAPES` writes and reads them as they
have always been stored, so their stored bytes and chain hashes do not change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, cast
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from domain.measures import KeyResultKind, KeyResultSpec
from events import okr
from events.commands import KeyResultDefinition
from events.upcasters import UPCASTERS


class Immutable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Aggregation(StrEnum):
    """How a bound KPI's observations over the objective's period become a key result's value."""

    LATEST = "latest"
    SUM = "sum"
    COUNT = "count"
    AVG = "avg"
    MIN = "min"
    MAX = "max"


class KpiBinding(Immutable):
    kpi_key: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-/]+$")
    aggregation: Aggregation = Aggregation.LATEST


class DomainEvent(Immutable):
    """Fields every stored event carries; `originator_*` are eventsourcing's names."""

    class_version: ClassVar[int] = 1
    """The stored form's version: its payload's `schema_version`."""
    payload_model: ClassVar[type[okr.OkrPayload]]
    """The wire model that declares the event's own fields."""

    originator_id: UUID
    originator_version: int
    timestamp: datetime
    actor: str
    command_id: str
    reason: str | None = None
    chain_hash: str = ""
    """SHA-256 linking this event to the objective's previous one (`domain.chain`); set by
    `seal` once the event is decided, empty only on events never meant to be stored."""

    def payload(self) -> okr.OkrPayload:
        """The event as `okr.events` carries it: its declared fields, without the header."""
        model = self.payload_model
        return model.model_validate({name: getattr(self, name) for name in model.model_fields})


HEADER = frozenset(DomainEvent.model_fields)


# --- the older stored shapes ----------------------------------------------------------------------

State = dict[str, Any]
Reshape = Callable[[State], State]


def _nested_key_result(key_result: State) -> State:
    """{definition..., key_result_id} as stored: {key_result_id, spec: {definition...}}."""
    definition = {k: v for k, v in key_result.items() if k != "key_result_id"}
    return {"key_result_id": key_result["key_result_id"], "spec": definition}


def _flat_key_result(key_result: Any) -> Any:
    if isinstance(key_result, dict) and "spec" in key_result:
        return {**key_result["spec"], "key_result_id": key_result["key_result_id"]}
    return key_result


def _renamed(old: str, new: str) -> Reshape:
    def rename(state: State) -> State:
        return {new if name == old else name: value for name, value in state.items()}

    return rename


def _grouped(state: State) -> State:
    """`kpi_key` and `aggregation` as stored: one `binding` object where they stood."""
    grouped: State = {}
    for name, value in state.items():
        if name in ("kpi_key", "aggregation"):
            grouped.setdefault("binding", {})[name] = value
        else:
            grouped[name] = value
    return grouped


def _ungrouped(state: State) -> State:
    binding = state.get("binding")
    if isinstance(binding, BaseModel):
        binding = binding.model_dump()
    if not isinstance(binding, dict):
        return state
    return {k: v for k, v in state.items() if k != "binding"} | binding


def _each(field: str, reshape: Callable[[Any], Any]) -> Reshape:
    def each(state: State) -> State:
        if not isinstance(state.get(field), list | tuple):
            return state
        return state | {field: [reshape(item) for item in state[field]]}

    return each


def _one(field: str, reshape: Callable[[Any], Any]) -> Reshape:
    def one(state: State) -> State:
        return state | {field: reshape(state[field])} if field in state else state

    return one


OLDER_SHAPES: Mapping[str, tuple[Reshape, Reshape]] = {
    # event type: (declared -> as stored, as stored -> declared)
    "ObjectiveCreated": (
        _each("key_results", _nested_key_result),
        _each("key_results", _flat_key_result),
    ),
    "KeyResultAdded": (
        _one("key_result", _nested_key_result),
        _one("key_result", _flat_key_result),
    ),
    "KeyResultRevised": (_renamed("key_result", "spec"), _renamed("spec", "key_result")),
    "KpiBound": (_grouped, _ungrouped),
}
"""The event types stored before their fields were the wire's. A key result is stored as
{key_result_id, spec}, a revised definition as `spec`, a binding as one `binding` object."""


class StoredInAnOlderShape(DomainEvent):
    """Written as `OLDER_SHAPES` says (so `model_dump`, the store and the chain hash see the old
    shape), and read back from either shape."""

    @model_validator(mode="before")
    @classmethod
    def _from_stored(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return OLDER_SHAPES[cls.__name__][1](data)

    @model_serializer(mode="wrap")
    def _as_stored(self, handler: SerializerFunctionWrapHandler) -> State:
        return OLDER_SHAPES[type(self).__name__][0](handler(self))


# --- one stored event class per payload -----------------------------------------------------------


def _stored_upcaster(name: str, lift: Callable[[State], State]) -> Callable[[State], None]:
    """The wire upcaster of `name`, applied in place to a stored state (eventsourcing's way)."""

    def upcast(state: State) -> None:
        header = {k: state[k] for k in state if k in HEADER or k == "class_version"}
        payload = {k: v for k, v in state.items() if k not in header}
        if name in OLDER_SHAPES:
            payload = OLDER_SHAPES[name][1](payload)
        state.clear()
        state.update(header | lift(payload))

    return upcast


def _stored_event(payload: type[okr.OkrPayload]) -> type[DomainEvent]:
    name = payload.__name__
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": payload.__doc__,
        "class_version": payload.schema_version,
        "payload_model": payload,
    }
    for (event_type, version), lift in UPCASTERS.items():
        if event_type == name and version < payload.schema_version:
            namespace[f"upcast_v{version}_v{version + 1}"] = staticmethod(
                _stored_upcaster(name, lift)
            )
    base = StoredInAnOlderShape if name in OLDER_SHAPES else DomainEvent
    return cast(type[DomainEvent], type(name, (payload, base), namespace))


EVENTS: Mapping[str, type[DomainEvent]] = {
    name: _stored_event(payload) for name, payload in okr.PAYLOADS.items()
}
"""Event type -> its stored class, `domain.objective_events:<type>` in the event store."""
globals().update(EVENTS)  # where eventsourcing finds a stored topic's class


def stored(declared: type[okr.OkrPayload], /, **fields: Any) -> DomainEvent:
    """The stored event of the type `declared` declares, from its header and its fields."""
    return EVENTS[declared.__name__](**fields)


# --- the special conversions between the domain's values and the declared fields ------------------


def spec_of(definition: KeyResultDefinition) -> KeyResultSpec:
    """A key result's definition (commands, events) as the domain measures it."""
    values = {name: getattr(definition, name) for name in KeyResultDefinition.model_fields}
    return KeyResultSpec(**values | {"kind": KeyResultKind(definition.kind)})


def definition_of(spec: KeyResultSpec) -> KeyResultDefinition:
    return KeyResultDefinition.model_validate(spec.model_dump(mode="json"))


def binding_of(event: okr.KpiBound) -> KpiBinding:
    return KpiBinding(kpi_key=event.kpi_key, aggregation=Aggregation(event.aggregation))
