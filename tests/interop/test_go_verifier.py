"""Go's own verifiers accept our checkpoints and proofs, and refuse them once tampered with.

`go_verifier/main.go` opens our signed checkpoints with golang.org/x/mod/sumdb/note (NewVerifier,
Open) and checks our proofs with golang.org/x/mod/sumdb/tlog (CheckRecord, CheckTree): the
formats are the standard ones, not merely ones our own checker agrees with. It is built once per
session with the `go` found on PATH or at /usr/local/go/bin/go; without one the tests are skipped,
or fail under CI=true. Our checker's verdict is compared with Go's on every input.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.transparency import merkle
from services.transparency.signing import CheckpointSigner, generate_signer
from services.transparency.tlog_check import (
    CheckError,
    Checkpoint,
    ConsistencyProof,
    InclusionProof,
    check_consistency,
    check_inclusion,
    leaf_hash,
    open_checkpoint,
)

pytestmark = pytest.mark.interop

GO_SOURCE = Path(__file__).resolve().parent / "go_verifier"
IN_CI = os.environ.get("CI", "").lower() == "true"
ORIGIN = "okr-ledger.example/interop"
OFFLINE_HINTS = ("dial tcp", "no such host", "i/o timeout", "connection refused", "lookup ")

SIZES = [1, 2, 3, 7, 8, 9, 100, 255, 256, 257, 300]
INCLUSIONS = [(1, 0), (2, 1), (3, 2), (7, 6), (8, 0), (9, 8), (100, 37), (256, 255), (257, 256)]
INCLUSIONS += [(300, 0), (300, 150), (300, 299)]
CONSISTENCIES = [(1, 300), (2, 7), (3, 9), (7, 8), (8, 100), (100, 257), (255, 300), (256, 257)]
CONSISTENCIES += [(257, 300), (300, 300)]


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def find_go() -> str | None:
    found = shutil.which("go")
    if found:
        return found
    return "/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None


@pytest.fixture(scope="session")
def go_verifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = find_go()
    if go is None:
        unavailable("no Go toolchain (go on PATH or /usr/local/go/bin/go)")
        raise AssertionError("unreachable")
    binary = tmp_path_factory.mktemp("go_verifier") / "goverifier"
    build = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=GO_SOURCE,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if build.returncode != 0:
        if any(hint in build.stderr for hint in OFFLINE_HINTS):
            unavailable(f"go build could not download golang.org/x/mod:\n{build.stderr}")
        pytest.fail(f"go build failed:\n{build.stderr}", pytrace=False)
    return binary


@dataclass
class Log:
    signer: CheckpointSigner
    datas: list[bytes]
    checkpoints: dict[int, str]
    inclusions: list[InclusionProof]
    consistencies: list[ConsistencyProof]


@pytest.fixture(scope="module")
def log() -> Log:
    """A log of 300 events, stored in uneven batches, signed at several sizes, with proofs."""
    signer = generate_signer(ORIGIN)
    datas = [json.dumps({"event": i, "objective": f"o-{i % 7}"}).encode() for i in range(300)]
    hashes: dict[int, bytes] = {}
    frontier: list[bytes] = []
    size = 0
    for batch in [1, 1, 5, 1, 100, 40, 108, 44]:
        start = merkle.stored_hash_count(size)
        leaves = [leaf_hash(d) for d in datas[size : size + batch]]
        written, frontier = merkle.append_leaves(size, frontier, leaves)
        hashes.update(enumerate(written, start=start))
        size += batch
    assert size == 300

    def read(indexes: Sequence[int]) -> list[bytes]:
        return [hashes[i] for i in indexes]

    checkpoints = {n: signer.sign(Checkpoint(ORIGIN, n, merkle.tree_hash(n, read))) for n in SIZES}
    inclusions = [
        InclusionProof(
            leaf_index=index,
            tree_size=n,
            leaf_data=datas[index],
            audit_path=tuple(merkle.prove_inclusion(n, index, read)),
            checkpoint=checkpoints[n],
        )
        for n, index in INCLUSIONS
    ]
    consistencies = [
        ConsistencyProof(
            old_size=old,
            new_size=new,
            proof=tuple(merkle.prove_consistency(new, old, read)),
            old_checkpoint=checkpoints[old],
            new_checkpoint=checkpoints[new],
        )
        for old, new in CONSISTENCIES
    ]
    return Log(signer, datas, checkpoints, inclusions, consistencies)


def go_accepts(
    go_verifier: Path,
    tmp_path: Path,
    log: Log,
    *,
    checkpoint: str | None = None,
    inclusions: Sequence[InclusionProof] = (),
    consistencies: Sequence[ConsistencyProof] = (),
) -> bool:
    """Go's verdict on these, after checking that our own checker gives the same one."""
    document: dict[str, Any] = {"verifier_key": str(log.signer.verifier)}
    if checkpoint is not None:
        document["checkpoint"] = checkpoint
    document["inclusion"] = [json.loads(p.to_json()) for p in inclusions]
    document["consistency"] = [json.loads(p.to_json()) for p in consistencies]
    path = tmp_path / "input.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    run = subprocess.run(
        [str(go_verifier), str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    accepted = run.returncode == 0
    if accepted:
        checked = f"ok: {len(inclusions)} inclusion, {len(consistencies)} consistency"
        assert run.stdout.strip() == checked, run.stdout
    else:
        assert run.returncode == 1 and run.stderr.startswith("refused:"), run.stderr
    ours = python_accepts(log, checkpoint, inclusions, consistencies)
    assert ours == accepted, f"our checker says {ours}, Go says {accepted}: {run.stderr}"
    return accepted


def python_accepts(
    log: Log,
    checkpoint: str | None,
    inclusions: Sequence[InclusionProof],
    consistencies: Sequence[ConsistencyProof],
) -> bool:
    verifiers = [log.signer.verifier]
    try:
        if checkpoint is not None:
            open_checkpoint(checkpoint, verifiers)
        for inclusion in inclusions:
            check_inclusion(inclusion, verifiers)
        for consistency in consistencies:
            check_consistency(consistency, verifiers)
    except CheckError:
        return False
    return True


def changed(text: str, position: int) -> str:
    """`text` with one character replaced: a digit by another digit, anything else by a letter."""
    ch = text[position]
    replacement = str((int(ch) + 1) % 10) if ch.isdigit() else "B" if ch == "A" else "A"
    return text[:position] + replacement + text[position + 1 :]


def flipped(proof: tuple[bytes, ...], which: int) -> tuple[bytes, ...]:
    h = proof[which]
    return (*proof[:which], bytes([h[0] ^ 0x80]) + h[1:], *proof[which + 1 :])


def test_go_accepts_our_checkpoints_and_proofs(go_verifier: Path, tmp_path: Path, log: Log) -> None:
    assert go_accepts(
        go_verifier,
        tmp_path,
        log,
        checkpoint=log.checkpoints[300],
        inclusions=log.inclusions,
        consistencies=log.consistencies,
    )
    for note in log.checkpoints.values():
        assert go_accepts(go_verifier, tmp_path, log, checkpoint=note)


@pytest.mark.parametrize(
    "where",
    ["origin", "tree size", "root hash", "key name", "key id", "signature", "blank line"],
)
def test_go_refuses_a_checkpoint_with_one_character_changed(
    go_verifier: Path, tmp_path: Path, log: Log, where: str
) -> None:
    note = log.checkpoints[300]
    text_end = note.index("\n\n")
    signature_line = note[text_end + 2 :]
    positions = {
        "origin": 3,
        "tree size": note.index("\n300\n") + 2,
        "root hash": note.index("\n300\n") + 10,
        "key name": text_end + 2 + len("\u2014 ") + 2,
        "key id": text_end + 2 + signature_line.index(" ", 3) + 2,
        "signature": len(note) - 10,
        "blank line": text_end + 1,
    }
    tampered = changed(note, positions[where])
    assert not go_accepts(go_verifier, tmp_path, log, checkpoint=tampered)
    proof = next(p for p in log.inclusions if p.tree_size == 300)
    with_tampered = InclusionProof(
        proof.leaf_index, proof.tree_size, proof.leaf_data, proof.audit_path, tampered
    )
    assert not go_accepts(go_verifier, tmp_path, log, inclusions=[with_tampered])


def test_go_refuses_a_checkpoint_signed_by_another_key(
    go_verifier: Path, tmp_path: Path, log: Log
) -> None:
    impostor = generate_signer(ORIGIN)
    forged = impostor.sign(open_checkpoint(log.checkpoints[300], [log.signer.verifier]))
    assert not go_accepts(go_verifier, tmp_path, log, checkpoint=forged)


def test_go_refuses_proofs_with_one_hash_changed(
    go_verifier: Path, tmp_path: Path, log: Log
) -> None:
    for proof in log.inclusions:
        for which in range(len(proof.audit_path)):
            tampered = InclusionProof(
                proof.leaf_index,
                proof.tree_size,
                proof.leaf_data,
                flipped(proof.audit_path, which),
                proof.checkpoint,
            )
            assert not go_accepts(go_verifier, tmp_path, log, inclusions=[tampered])
    for cproof in log.consistencies:
        for which in range(len(cproof.proof)):
            ctampered = ConsistencyProof(
                cproof.old_size,
                cproof.new_size,
                flipped(cproof.proof, which),
                cproof.old_checkpoint,
                cproof.new_checkpoint,
            )
            assert not go_accepts(go_verifier, tmp_path, log, consistencies=[ctampered])


def test_go_refuses_other_leaf_data_and_wrong_indexes(
    go_verifier: Path, tmp_path: Path, log: Log
) -> None:
    proof = log.inclusions[-2]  # leaf 150 of 300
    other_data = InclusionProof(
        proof.leaf_index, proof.tree_size, log.datas[151], proof.audit_path, proof.checkpoint
    )
    other_index = InclusionProof(
        proof.leaf_index + 1, proof.tree_size, proof.leaf_data, proof.audit_path, proof.checkpoint
    )
    other_size = InclusionProof(
        proof.leaf_index, 257, proof.leaf_data, proof.audit_path, log.checkpoints[257]
    )
    for tampered in (other_data, other_index, other_size):
        assert not go_accepts(go_verifier, tmp_path, log, inclusions=[tampered])
