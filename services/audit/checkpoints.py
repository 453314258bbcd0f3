"""Signed checkpoints of the transparency log: made every N events or T seconds and on demand,
kept in the event store and published on `okr.audit-checkpoints`.

A checkpoint is the C2SP `tlog-checkpoint` text (origin, tree size, base64 root) signed as a C2SP
`signed-note` with the service's Ed25519 key (`services.transparency.signing`). An auditor who kept
one can later ask for a consistency proof from it to any newer checkpoint and check it offline:
the operator cannot change, remove or reorder what it covered without the proof failing.
Publishing is at-least-once (a checkpoint may appear twice on the topic); the topic is kept forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from events import topics
from projections.backoff import Backoff, keep_running
from services.relay.publisher import relay_producer
from services.relay.wakeup import wait_for_wakeup
from services.transparency.log_store import LogReader, StoredCheckpoint
from services.transparency.merkle import tree_hash
from services.transparency.signing import (
    CheckpointSigner,
    known_verifiers,
    load_or_create_signing_key,
    signer_from_text,
)
from services.transparency.tlog_check import Checkpoint, VerifierKey

if TYPE_CHECKING:
    from services.commands.application import OkrApplication
    from services.settings import Settings

log = logging.getLogger(__name__)

SIGNER_NAME_DEFAULT = "okr-ledger"


def signer_for(settings: Settings) -> CheckpointSigner:
    """The signing key: the variable when set, else the key file (created, mode 600, if absent)."""
    if settings.audit_signing_key is not None:
        return signer_from_text(settings.audit_signing_key.get_secret_value())
    return load_or_create_signing_key(settings.audit_signing_key_file, key_name(settings))


def key_name(settings: Settings) -> str:
    """The signature's name: the log's origin, as the C2SP witness ecosystem names log keys."""
    return settings.audit_log_origin


def verifiers_for(settings: Settings) -> list[VerifierKey]:
    """The current verifier key and every retired one kept beside the key file."""
    return known_verifiers(settings.audit_signing_key_file, signer_for(settings))


def make_checkpoint(
    log_reader: LogReader, signer: CheckpointSigner, origin: str
) -> StoredCheckpoint:
    """Sign the tree as it is now and keep the checkpoint (blocking). When the newest kept
    checkpoint already covers every leaf, that one is returned: a checkpoint per size, once."""
    size = log_reader.size()
    latest = log_reader.latest_checkpoint()
    if latest is not None and latest.tree_size == size:
        return latest
    root = tree_hash(size, log_reader.read_hashes)
    note = signer.sign(Checkpoint(origin=origin, tree_size=size, root_hash=root))
    log_reader.keep_checkpoint(size, note)
    kept = log_reader.checkpoint_at(size)
    assert kept is not None  # kept now, or by another process a moment before
    return kept


class CheckpointSchedule:
    """When the next checkpoint is due: N new leaves, or T seconds with at least one new leaf."""

    def __init__(
        self, every_events: int, every_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every_events = every_events
        self.every_s = every_s
        self.clock = clock
        self.signed_size: int | None = None
        self.signed_at = clock()

    def due(self, size: int) -> bool:
        if self.signed_size is None:
            return True
        grown = size - self.signed_size
        if grown <= 0:
            return False
        return grown >= self.every_events or self.clock() - self.signed_at >= self.every_s

    def signed(self, size: int) -> None:
        self.signed_size = size
        self.signed_at = self.clock()

    def wait_s(self, size: int) -> float:
        """How long to sleep unless a save wakes us first: until T is up when leaves wait to be
        signed, a whole T when none do (a save will wake us)."""
        if self.signed_size is None or size <= self.signed_size:
            return self.every_s
        return max(0.05, self.every_s - (self.clock() - self.signed_at))


async def run_checkpointer(
    settings: Settings, application: OkrApplication, *, backoff: Backoff = Backoff()
) -> None:
    """Sign and publish checkpoints until cancelled; wakes on every save, so N events are
    signed at once, and at the latest T seconds after the last checkpoint."""
    signer = await asyncio.to_thread(signer_for, settings)
    log_reader = application.receipts.log
    schedule = CheckpointSchedule(settings.checkpoint_every_events, settings.checkpoint_every_s)
    topic = settings.topic(topics.AUDIT_CHECKPOINTS)
    origin = settings.audit_log_origin

    async def attempt(succeeded: Callable[[], None]) -> None:
        async with relay_producer(settings) as producer:
            with application.saved.listen() as saved:
                while True:
                    saved.clear()
                    size = await asyncio.to_thread(log_reader.size)
                    if schedule.due(size):
                        kept = await asyncio.to_thread(make_checkpoint, log_reader, signer, origin)
                        await producer.send_and_wait(
                            topic,
                            kept.note.encode(),
                            key=origin.encode(),
                            headers=[("tree_size", str(kept.tree_size).encode())],
                        )
                        schedule.signed(kept.tree_size)
                    succeeded()
                    await wait_for_wakeup(saved, schedule.wait_s(size))

    await keep_running(
        "audit checkpoints", attempt, backoff=backoff, resuming="signing again", log=log
    )
