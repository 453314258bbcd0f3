"""Tamper evidence: every event of an objective is hashed together with the hash of the one before.

An event's hash is SHA-256 over the previous event's hash and a canonical encoding of the event
*as written*: objective id, version, type name, class version and its fields (`EventRecord`).
Editing, deleting or reordering a stored event changes a hash or breaks a link, so `okr audit
verify` can name the first objective and version that no longer fit.

The record is taken as written, not as read: an event upcast to a newer class version on reading
is verified against the form it was hashed in, so upcasting never breaks the chain. The encoding is
canonical JSON (sorted keys, no spaces, UTF-8, floats as Python's shortest repr), which the
stored JSON round-trips exactly. A hash is no signature: someone who can rewrite the whole store
can recompute every hash; what the chain gives is that a change to history cannot go unnoticed
against any copy taken before it (the `okr.events` topic, an export, a printed hash).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

if TYPE_CHECKING:
    from domain.objective_events import DomainEvent

GENESIS_HASH = "0" * 64
"""The "previous hash" of an objective's first event."""

NOT_HASHED = frozenset({"originator_id", "originator_version", "chain_hash", "class_version"})
"""Fields of a stored state that are not part of the hashed fields (they are hashed separately
or are the hash itself)."""

E = TypeVar("E", bound="DomainEvent")

CANONICAL_JSON = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
"""One encoder for every canonical encoding (`json.dumps` would build one per call)."""


@dataclass(frozen=True)
class EventRecord:
    """What is hashed of one event: its place in the objective's history and its fields."""

    objective_id: UUID
    version: int
    event_type: str
    class_version: int
    fields: Mapping[str, Any]

    def canonical(self) -> bytes:
        document = {
            "objective_id": str(self.objective_id),
            "version": self.version,
            "type": self.event_type,
            "class_version": self.class_version,
            "fields": self.fields,
        }
        return CANONICAL_JSON.encode(document).encode()

    @classmethod
    def from_stored(
        cls, objective_id: UUID, version: int, event_type: str, state: Mapping[str, Any]
    ) -> EventRecord:
        """The record of a stored state (the JSON object the mapper wrote)."""
        return cls(
            objective_id=objective_id,
            version=version,
            event_type=event_type,
            class_version=int(state.get("class_version", 1)),
            fields={k: v for k, v in state.items() if k not in NOT_HASHED},
        )


def chain_hash(previous_hash: str, record: EventRecord) -> str:
    """The hash of an event that follows `previous_hash`."""
    return _linked(previous_hash, record.canonical())


def _linked(previous_hash: str, canonical: bytes) -> str:
    digest = hashlib.sha256(previous_hash.encode("ascii"))
    digest.update(b"\n")
    digest.update(canonical)
    return digest.hexdigest()


def record_of(event: DomainEvent) -> EventRecord:
    """The record of an event about to be written, exactly as the store will hold it."""
    return EventRecord(
        objective_id=event.originator_id,
        version=event.originator_version,
        event_type=type(event).__name__,
        class_version=type(event).class_version,
        fields=event.model_dump(mode="json", exclude=set(NOT_HASHED)),
    )


def seal(previous_hash: str, events: Sequence[E]) -> list[E]:
    """The events with their chain hashes set, each linked to the one before."""
    sealed: list[E] = []
    for event in events:
        canonical = record_of(event).canonical()
        previous_hash = _linked(previous_hash, canonical)
        _recently_sealed.keep(previous_hash, canonical)
        sealed.append(event.model_copy(update={"chain_hash": previous_hash}))
    return sealed


class _RecentlySealed:
    """The canonical bytes of the events sealed lately, by chain hash, until stored: the store's
    transparency log hashes the same bytes and need not encode each event again. A chain hash
    covers the bytes it was computed from, so an event found here by its hash has those bytes.
    Bounded: events decided and never stored (a lost race) age out."""

    LIMIT = 20_000

    def __init__(self) -> None:
        self._bytes: dict[str, bytes] = {}
        self._lock = threading.Lock()  # sealed in one thread, stored from another

    def keep(self, chain_hash: str, canonical: bytes) -> None:
        with self._lock:
            if len(self._bytes) >= self.LIMIT:
                del self._bytes[next(iter(self._bytes))]  # the oldest (insertion order)
            self._bytes[chain_hash] = canonical

    def take(self, chain_hash: str) -> bytes | None:
        with self._lock:
            return self._bytes.pop(chain_hash, None)


_recently_sealed = _RecentlySealed()


def canonical_of(event: DomainEvent) -> bytes | None:
    """The canonical bytes `seal` hashed this event with, if it was sealed in this process and
    not yet asked for (each is handed out once, to the store that writes the event)."""
    return _recently_sealed.take(event.chain_hash) if event.chain_hash else None


@dataclass(frozen=True)
class ChainBreak:
    """One place where an objective's history no longer fits its chain."""

    objective_id: UUID
    version: int
    problem: str

    def __str__(self) -> str:
        return f"objective {self.objective_id} version {self.version}: {self.problem}"


@dataclass(frozen=True)
class ChainLink:
    """One stored event as the verifier sees it: its record and the hash stored with it."""

    record: EventRecord
    stored_hash: str


def verify_chain(objective_id: UUID, links: Iterable[ChainLink]) -> list[ChainBreak]:
    """Every break in one objective's history, given its events in version order.

    After a break the walk goes on from the stored hash, so one edited event is reported once,
    not again for every event after it; a deleted one is reported as missing, once.
    """
    breaks: list[ChainBreak] = []
    previous_hash = GENESIS_HASH
    expected_version = 1
    for link in links:
        version = link.record.version
        follows_a_gap = version > expected_version
        if follows_a_gap:
            missing = f"is missing (the next stored event is version {version})"
            breaks.append(ChainBreak(objective_id, expected_version, missing))
        if not link.stored_hash:
            breaks.append(ChainBreak(objective_id, version, "has no chain hash"))
        elif not follows_a_gap:  # after a gap the link's other end is gone: nothing to check
            recomputed = chain_hash(previous_hash, link.record)
            if recomputed != link.stored_hash:
                breaks.append(
                    ChainBreak(
                        objective_id,
                        version,
                        "content or position does not match its hash "
                        f"(stored {link.stored_hash[:12]}…, recomputed {recomputed[:12]}…)",
                    )
                )
        previous_hash = link.stored_hash or previous_hash
        expected_version = version + 1
    return breaks
