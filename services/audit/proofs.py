"""Inclusion and consistency proofs from the event store's transparency log, for auditors.

A proof is made against a signed checkpoint the service kept (`services.audit.checkpoints`), and
travels with it: the proof files are exactly what `services.transparency.tlog_check` reads, so an
auditor checks them on their own machine with nothing but the verifier key. Each proof reads
O(log n) stored hashes (`services.transparency.merkle`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from services.audit.checkpoints import make_checkpoint, signer_for
from services.transparency.log_store import StoredCheckpoint, leaf_data
from services.transparency.merkle import prove_consistency, prove_inclusion
from services.transparency.tlog_check import (
    CheckError,
    ConsistencyProof,
    InclusionProof,
    parse_checkpoint,
    parse_note,
)

if TYPE_CHECKING:
    from services.commands.application import OkrApplication


class ProofUnavailableError(LookupError):
    """What was asked cannot be proven: no such event, no such checkpoint, or not covered yet."""


def checkpoint_size(note: str) -> int:
    """The tree size a signed checkpoint states (its signature is the auditor's to check)."""
    try:
        return parse_checkpoint(parse_note(note).text).tree_size
    except CheckError as error:
        raise ProofUnavailableError(f"not a checkpoint: {error}") from None


def kept_checkpoint(application: OkrApplication, tree_size: int | None) -> StoredCheckpoint:
    """The kept checkpoint of that size; without a size, the newest, signing one now if the
    newest kept one lags the tree."""
    log_reader = application.receipts.log
    if tree_size is None:
        settings = application.settings
        return make_checkpoint(log_reader, signer_for(settings), settings.audit_log_origin)
    kept = log_reader.checkpoint_at(tree_size)
    if kept is None:
        raise ProofUnavailableError(f"no checkpoint of tree size {tree_size} is kept")
    return kept


def inclusion_proof(
    application: OkrApplication,
    objective_id: UUID,
    version: int,
    *,
    tree_size: int | None = None,
) -> InclusionProof:
    """That the event at (objective, version), as stored now, is leaf i of the checkpointed tree."""
    log_reader = application.receipts.log
    leaf_index = log_reader.leaf_index(objective_id, version)
    if leaf_index is None:
        raise ProofUnavailableError(
            f"objective {objective_id} has no stored event at version {version}"
        )
    checkpoint = kept_checkpoint(application, tree_size)
    if leaf_index >= checkpoint.tree_size:
        raise ProofUnavailableError(
            f"the event is leaf {leaf_index}, after the checkpoint of tree size "
            f"{checkpoint.tree_size}: ask for a newer checkpoint"
        )
    stored = application.recorder.select_events(objective_id, gt=version - 1, lte=version)
    if not stored:  # deleted between the two reads
        raise ProofUnavailableError(f"objective {objective_id} version {version} is gone")
    return InclusionProof(
        leaf_index=leaf_index,
        tree_size=checkpoint.tree_size,
        leaf_data=leaf_data(stored[0]),
        audit_path=tuple(prove_inclusion(checkpoint.tree_size, leaf_index, log_reader.read_hashes)),
        checkpoint=checkpoint.note,
    )


def consistency_proof(
    application: OkrApplication, old_note: str, new_size: int | None = None
) -> ConsistencyProof:
    """That the tree at `new_size` (default: now, signed now if needed) extends the one an older
    checkpoint states: nothing it held was changed, removed or reordered. The older checkpoint
    is the auditor's own text (the store need not list it; it is returned as given)."""
    old_size = checkpoint_size(old_note)
    new = kept_checkpoint(application, new_size)
    if old_size > new.tree_size:
        raise ProofUnavailableError(
            f"tree size {old_size} is beyond the newer checkpoint's {new.tree_size}"
        )
    proof = prove_consistency(new.tree_size, old_size, application.receipts.log.read_hashes)
    return ConsistencyProof(
        old_size=old_size,
        new_size=new.tree_size,
        proof=tuple(proof),
        old_checkpoint=old_note,
        new_checkpoint=new.note,
    )
