"""A `kpi.events` record's bytes to a `KpiReading`: what the scorer keeps of a KPI event.

The contract is `events.kpi.KpiEvent` (pydantic); validating every record through it costs about
as much as fetching the record from Kafka, and the scorer reads hundreds of thousands a second.
So the common shape takes a fast path: msgspec decodes it (strict types, lengths, no unknown
field) and a few pattern, NUL and range checks follow, accepting only what the model accepts, with
the same values. Anything else (an unknown field, a timestamp in another spelling, invalid JSON or
UTF-8...) goes through the model, which either accepts it (then its reading is used) or names
every problem for the dead letter.
`tests/unit/test_kpi_decoding.py` checks, over generated and mutated messages, that the fast path
never accepts what the model refuses and never reads a value differently.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Literal

import msgspec
import orjson
from pydantic import ValidationError

from domain.kpi_series import epoch_us
from events.dead_letters import DeadLetterReason
from events.kpi import EARLIEST, LATEST, SCHEMA_VERSION, KpiEvent


class KpiReading(msgspec.Struct, frozen=True, gc=False):
    """A valid KPI event as the scorer folds and stores it. One per record, so made cheap: a
    struct is built in C (a third of a named tuple's time) and, holding only text and numbers,
    is kept out of the cyclic garbage collector's lists (`gc=False`)."""

    event_id: str
    kpi_key: str
    value: float
    """-0.0 is read as 0.0: one spelling of zero, as the aggregates count it (and as SQLite,
    which stores a REAL without fraction as an integer, would give it back)."""
    observed_at: str
    """ISO 8601 with the producer's UTC offset (the producer's spelling, or `isoformat`)."""
    observed_at_us: int
    source: str
    unit: str | None
    dimensions: str
    """JSON object text ("{}" when none)."""


class NotAKpiEventError(Exception):
    """The record cannot be read as a KPI event; it goes to the dead letters."""

    def __init__(self, reason: DeadLetterReason, detail: str) -> None:
        self.reason: DeadLetterReason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")

    def __reduce__(self) -> tuple[type[NotAKpiEventError], tuple[DeadLetterReason, str]]:
        """Pickled by its own arguments: the scorer's worker process sends rejections back."""
        return (type(self), (self.reason, self.detail))


def decode_kpi_event(value: bytes | None) -> KpiReading:
    """The reading in a record's value, or why not (`NotAKpiEventError.reason`)."""
    if not value:
        raise NotAKpiEventError("empty", "the message has no value")
    reading = _fast_reading(value)
    if reading is not None:
        return reading
    try:
        event = KpiEvent.model_validate_json(value)
    except ValidationError as error:
        raise NotAKpiEventError(_reason(error), _describe(error)) from None
    return reading_of(event)


def reading_of(event: KpiEvent) -> KpiReading:
    return KpiReading(
        event.event_id,
        event.kpi_key,
        event.value + 0.0,
        event.observed_at.isoformat(),
        epoch_us(event.observed_at),
        event.source,
        event.unit,
        orjson.dumps(event.dimensions).decode() if event.dimensions else "{}",
    )


# --- the fast path: the model's rules for the common shape, or None ----------------------------

_SHORT = msgspec.Meta(min_length=1, max_length=200)


class _Common(msgspec.Struct, forbid_unknown_fields=True):
    """`KpiEvent` for msgspec (strict: no coercion between types). The patterns of `kpi_key`
    and `observed_at` are checked after decoding: msgspec's own pattern checks cost more than
    the rest of the decoding together."""

    event_id: Annotated[str, _SHORT]
    kpi_key: str
    value: float
    observed_at: str
    source: Annotated[str, _SHORT]
    unit: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    dimensions: Annotated[
        dict[
            Annotated[str, msgspec.Meta(min_length=1, max_length=100)],
            Annotated[str, msgspec.Meta(max_length=200)],
        ],
        msgspec.Meta(max_length=50),
    ] = msgspec.field(default_factory=dict)
    schema_version: Literal[1] = SCHEMA_VERSION


_DECODER = msgspec.json.Decoder(_Common)
# `fullmatch`, not `$`: Python's `$` also matches before a final newline.
_KPI_KEY = re.compile(r"[A-Za-z0-9_.:\-/]{1,200}")
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-5][0-9])"
)
"""The spellings `datetime.fromisoformat` reads as the model does (and the model reads more)."""
_VALID_KEYS: set[str] = set()
"""KPI keys that matched `_KPI_KEY`: a stream has few keys and many events."""
_VALID_KEYS_LIMIT = 100_000


def _fast_reading(raw: bytes) -> KpiReading | None:
    try:
        event = _DECODER.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):  # the latter: invalid UTF-8 in a string
        return None
    value = event.value + 0.0
    text = event.observed_at
    if (
        not math.isfinite(value)
        or not _valid_key(event.kpi_key)
        or _TIMESTAMP.fullmatch(text) is None
        or "\x00" in event.event_id
        or "\x00" in event.source
        or (event.unit is not None and "\x00" in event.unit)
    ):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if not "0001" < text[:4] < "9999" and not EARLIEST <= moment <= LATEST:
        return None
    labels = "{}"
    if event.dimensions:
        if any("\x00" in name or "\x00" in label for name, label in event.dimensions.items()):
            return None
        labels = orjson.dumps(event.dimensions).decode()
    # The producer's spelling of the moment is kept: `fromisoformat` reads it back the same.
    return KpiReading(
        event.event_id,
        event.kpi_key,
        value,
        text,
        epoch_us(moment),
        event.source,
        event.unit,
        labels,
    )


def _valid_key(kpi_key: str) -> bool:
    if kpi_key in _VALID_KEYS:
        return True
    if _KPI_KEY.fullmatch(kpi_key) is None:
        return False
    if len(_VALID_KEYS) >= _VALID_KEYS_LIMIT:
        _VALID_KEYS.clear()
    _VALID_KEYS.add(kpi_key)
    return True


# --- why the model refused ---------------------------------------------------------------------


def _reason(error: ValidationError) -> DeadLetterReason:
    problems = error.errors(include_url=False)
    first = problems[0]
    if first["type"] == "json_invalid":
        return "not_json"
    if first["type"] in ("model_type", "model_attributes_type") and not first["loc"]:
        return "not_an_object"
    fields = {problem["loc"][0] for problem in problems if problem["loc"]}
    if "schema_version" in fields:
        return "unsupported_schema_version"
    if "event_id" in fields:
        return "missing_id"
    return "schema_violation"


def _describe(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'value'}: {problem['msg']}"
        for problem in error.errors(include_url=False)
    )
