"""Upcasting of `okr.events` envelopes: old payload shapes read as the current ones.

`okr.events` is retained forever and replayed from offset 0, so a consumer meets every schema
version ever published. Each upcaster lifts one event type's payload by exactly one version; they
chain, so a v1 message reaches v3 through v1 -> v2 -> v3 and no upcaster ever needs rewriting.
Upcasters work on plain dicts, before validation: the old shape has no model any more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Payload = dict[str, Any]
PayloadUpcaster = Callable[[Payload], Payload]

UPCASTERS: dict[tuple[str, int], PayloadUpcaster] = {}
"""(event type, schema version it reads) -> function returning the payload one version later."""


def upcaster(event_type: str, from_version: int) -> Callable[[PayloadUpcaster], PayloadUpcaster]:
    """Register a function lifting `event_type` payloads from `from_version` to the next."""

    def register(function: PayloadUpcaster) -> PayloadUpcaster:
        key = (event_type, from_version)
        if key in UPCASTERS:
            raise ValueError(f"an upcaster for {event_type} v{from_version} already exists")
        UPCASTERS[key] = function
        return function

    return register


def upcast(envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope dict with its payload lifted as far as the registered upcasters go."""
    event_type = envelope.get("type")
    version = envelope.get("schema_version")
    if not isinstance(event_type, str) or not isinstance(version, int):
        return envelope  # not an envelope we can read: validation will say why
    payload = envelope.get("payload")
    while (event_type, version) in UPCASTERS and isinstance(payload, dict):
        payload = UPCASTERS[(event_type, version)](dict(payload))
        version += 1
    return {**envelope, "schema_version": version, "payload": payload}


@upcaster("ProgressCheckedIn", 1)
def _check_in_confidence(payload: Payload) -> Payload:
    """v2 added the owner's `confidence`; a v1 check-in did not ask, so it is unknown (null)."""
    payload.setdefault("confidence", None)
    return payload
