"""`okr audit verify --since-checkpoint`: has anything a signed checkpoint covered been changed?

The checkpoint is the auditor's: its signature is checked with the verifier keys, and its root is
the only thing trusted. Then every leaf is recomputed from the events as stored now (their
canonical bytes, `services.transparency.log_store.leaf_data`), and three things are compared:
- the root of the first `tree_size` recomputed leaves with the checkpoint's root: any change to
  what it covered (an event edited, deleted, inserted or two swapped) changes that root, even
  when the chain hashes and `okr.events` were rewritten to match;
- the stored tree with the checkpoint (a consistency proof from the checkpoint to the tree as
  stored now): the tree itself was not rebuilt;
- each recomputed leaf with the stored leaf of the same event, which names the place: an event
  edited, one gone from the store, two that changed places, one the log never saw.
A forger who also rebuilds the stored tree from the changed events makes the last comparison
agree; the first two still fail, and the report says the tree was rebuilt.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from uuid import UUID

from services.commands.application import OkrApplication
from services.transparency.log_store import LogReader, leaf_data
from services.transparency.merkle import prove_consistency, tree_hash
from services.transparency.tlog_check import (
    CheckError,
    Checkpoint,
    VerifierKey,
    leaf_hash,
    open_checkpoint,
    root_of,
    verify_consistency,
)

PAGE = 5000


@dataclass(frozen=True)
class Finding:
    """One thing that no longer fits the checkpoint, and where."""

    problem: str
    leaf_index: int | None = None
    objective_id: UUID | None = None
    version: int | None = None

    def __str__(self) -> str:
        where = []
        if self.leaf_index is not None:
            where.append(f"leaf {self.leaf_index}")
        if self.objective_id is not None:
            where.append(f"objective {self.objective_id} version {self.version}")
        return f"{', '.join(where)}: {self.problem}" if where else self.problem


@dataclass
class SinceCheckpointReport:
    checkpoint: Checkpoint | None = None
    events: int = 0
    tree_size: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return self.checkpoint is not None and not self.findings

    def summary(self) -> str:
        if self.checkpoint is None:
            return "the checkpoint was refused"
        verdict = "consistent" if self.intact else f"{len(self.findings)} finding(s)"
        return (
            f"checkpoint of tree size {self.checkpoint.tree_size}: {self.events} events stored, "
            f"tree size {self.tree_size} now: {verdict}"
        )


@dataclass(frozen=True)
class _Leaf:
    notification_id: int
    objective_id: UUID
    version: int
    hash: bytes


def verify_since_checkpoint(
    application: OkrApplication, note: str, verifiers: Iterable[VerifierKey]
) -> SinceCheckpointReport:
    """The whole check (blocking; reads every event once)."""
    report = SinceCheckpointReport()
    try:
        checkpoint = open_checkpoint(note, verifiers)
    except CheckError as error:
        report.findings.append(Finding(f"checkpoint refused: {error}"))
        return report
    report.checkpoint = checkpoint
    log_reader = application.receipts.log
    recomputed = list(_recomputed_leaves(application))
    report.events = len(recomputed)
    report.tree_size = log_reader.size()
    size = checkpoint.tree_size

    events_changed = True
    if len(recomputed) < size:
        report.findings.append(
            Finding(
                f"the store holds {len(recomputed)} events, fewer than the {size} the "
                "checkpoint covered: events were deleted"
            )
        )
    elif root_of([leaf.hash for leaf in recomputed[:size]]) != checkpoint.root_hash:
        report.findings.append(
            Finding(
                f"the first {size} events as stored now do not hash to the checkpoint's root: "
                "an event it covered was changed, removed, inserted or moved"
            )
        )
    else:
        events_changed = False
    tree_findings = _stored_tree_against(log_reader, checkpoint, report.tree_size)
    places = _places(recomputed, log_reader.leaves(0, report.tree_size), size)
    report.findings += tree_findings + places
    if events_changed and tree_findings and not places:
        report.findings.append(
            Finding(
                "the stored tree was rebuilt to match the changed events, so the store alone "
                "cannot name them; the checkpoint shows that something before leaf "
                f"{size} changed"
            )
        )
    return report


def _recomputed_leaves(application: OkrApplication) -> Iterable[_Leaf]:
    for page in application.notification_pages(page_size=PAGE):
        for notification in page:
            try:
                digest = leaf_hash(leaf_data(notification))
            except ValueError as error:  # an edited row may not even be JSON
                digest = leaf_hash(f"unreadable: {error}".encode())
            yield _Leaf(
                notification.id,
                UUID(str(notification.originator_id)),
                notification.originator_version,
                digest,
            )


def _stored_tree_against(
    log_reader: LogReader, checkpoint: Checkpoint, size_now: int
) -> list[Finding]:
    if size_now < checkpoint.tree_size:
        return [
            Finding(
                f"the stored tree has {size_now} leaves, fewer than the checkpoint's "
                f"{checkpoint.tree_size}: it was truncated"
            )
        ]
    try:
        root_now = tree_hash(size_now, log_reader.read_hashes)
        proof = prove_consistency(size_now, checkpoint.tree_size, log_reader.read_hashes)
        verify_consistency(checkpoint.tree_size, size_now, checkpoint.root_hash, root_now, proof)
    except (CheckError, LookupError) as error:
        return [
            Finding(
                "the stored tree is not an extension of the checkpointed one (it was "
                f"rewritten): {error}"
            )
        ]
    return []


def _places(
    recomputed: list[_Leaf], stored_leaves: Iterable[tuple[int, int, bytes]], covered: int
) -> list[Finding]:
    """Name each event whose leaf differs from the stored tree's leaf for it."""
    findings: list[Finding] = []
    stored = list(stored_leaves)
    now = {leaf.notification_id: leaf for leaf in recomputed}
    leaf_of_hash = {digest: index for index, _, digest in stored}
    in_log = set()
    for index, notification_id, digest in stored:
        in_log.add(notification_id)
        leaf = now.get(notification_id)
        scope = "" if index < covered else " (after the checkpoint)"
        if leaf is None:
            findings.append(
                Finding(f"the event of this leaf is no longer in the store{scope}", index)
            )
        elif leaf.hash != digest:
            moved_from = leaf_of_hash.get(leaf.hash)
            problem = (
                f"holds what leaf {moved_from} held: events were swapped{scope}"
                if moved_from is not None
                else f"edited: its content no longer matches its leaf{scope}"
            )
            findings.append(Finding(problem, index, leaf.objective_id, leaf.version))
    for leaf in recomputed:
        if leaf.notification_id not in in_log:
            findings.append(
                Finding(
                    "stored but never logged: inserted behind the log's back",
                    None,
                    leaf.objective_id,
                    leaf.version,
                )
            )
    return findings
