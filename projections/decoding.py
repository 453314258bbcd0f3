"""An `okr.events` message's bytes to what the projector folds, with a fast path for KPI progress.

The contract is `events.okr.parse_okr_event` (pydantic): the envelope, then the payload model its
type names. A live KPI stream makes nearly every message a `KpiProgressRecorded`, and validating
each through two models cost the projector more than writing its rows. So that shape takes a fast
path: msgspec decodes it (strict types, no unknown field) and the models' remaining rules follow
(UUIDs, an aware timestamp, the chain hash's and the KPI key's patterns, finite values, bounds),
accepting only what the models accept, with the same values. Everything else (every other event
type, an upcast schema version, a value in an unusual spelling, invalid JSON...) goes through
`parse_okr_event`, which either reads it or says why not.
`tests/unit/test_projection_decoding.py` checks, over generated and mutated messages, that the
fast path never accepts what the models refuse and never reads a value differently.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import msgspec

from events import okr
from events.upcasters import UPCASTERS

PROGRESS = okr.KpiProgressRecorded.__name__


def _place_of_progress() -> okr.Timeline:
    place = okr.KpiProgressRecorded.timeline
    if place is None:
        raise RuntimeError(f"{PROGRESS} has lost its place on the score timeline")
    return place


PROGRESS_PLACE = _place_of_progress()


class ProgressRecorded(NamedTuple):
    """A valid `KpiProgressRecorded` envelope, as the projector folds it (a plain tuple: one per
    message of a live stream)."""

    objective_id: UUID
    version: int
    occurred_at: datetime
    actor: str
    command_id: str
    reason: str | None
    key_result_id: UUID
    value: float
    detail: dict[str, Any]
    """The payload's fields the score timeline repeats (`KpiProgressRecorded.timeline`)."""


Decoded = ProgressRecorded | tuple[okr.OkrEventEnvelope, okr.OkrPayload]


def decode_okr_event(value: bytes) -> Decoded:
    """What a message says, or ValueError (as `parse_okr_event` raises it) if it is unreadable."""
    fast = _fast_progress(value)
    if fast is not None:
        return fast
    return okr.parse_okr_event(value)


# --- the fast path: the models' rules for the common shape, or None -----------------------------


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """`OkrEventEnvelope` for msgspec (strict: no coercion between types); the timestamp and the
    chain hash are checked after decoding."""

    event_id: UUID
    type: str
    schema_version: int
    objective_id: UUID
    version: int
    occurred_at: str
    actor: str
    command_id: str
    payload: msgspec.Raw
    reason: str | None = None
    chain_hash: str | None = None


class _Progress(msgspec.Struct, forbid_unknown_fields=True):
    """`KpiProgressRecorded`'s fields; the KPI key's pattern is checked after decoding."""

    key_result_id: UUID
    value: float
    kpi_key: str
    observations: int
    last_kpi_event_id: str
    last_offset: int | None = None


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_PROGRESS = msgspec.json.Decoder(_Progress)
# `fullmatch`, not `$`: Python's `$` also matches before a final newline.
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-5][0-9])"
)
"""Spellings `datetime.fromisoformat` reads as pydantic does (pydantic reads more)."""
_CHAIN_HASH = re.compile(r"[0-9a-f]{64}")
_KPI_KEY = re.compile(r"[A-Za-z0-9_.:\-/]{1,200}")
_FAST_SCHEMA_VERSION = okr.KpiProgressRecorded.schema_version


def _fast_progress(raw: bytes) -> ProgressRecorded | None:
    try:
        envelope = _ENVELOPE.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    if (
        envelope.type != PROGRESS
        or envelope.schema_version != _FAST_SCHEMA_VERSION
        or (PROGRESS, _FAST_SCHEMA_VERSION) in UPCASTERS
        or envelope.version < 1
        or (envelope.chain_hash is not None and not _CHAIN_HASH.fullmatch(envelope.chain_hash))
        or not _TIMESTAMP.fullmatch(envelope.occurred_at)
    ):
        return None
    try:
        occurred_at = datetime.fromisoformat(envelope.occurred_at)
        payload = _PROGRESS.decode(envelope.payload)
    except (ValueError, msgspec.DecodeError, UnicodeDecodeError):
        return None
    value = payload.value
    if (
        not math.isfinite(value)
        or payload.observations < 1
        or not _KPI_KEY.fullmatch(payload.kpi_key)
    ):
        return None
    return ProgressRecorded(
        envelope.objective_id,
        envelope.version,
        occurred_at,
        envelope.actor,
        envelope.command_id,
        envelope.reason,
        payload.key_result_id,
        value,
        {name: getattr(payload, name) for name in PROGRESS_PLACE.detail},
    )
