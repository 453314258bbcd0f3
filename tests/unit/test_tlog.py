"""The transparency log's pure core: Merkle storage and proofs, checkpoints, signed notes, keys.

Proofs made by `services.transparency.merkle` (Go's tlog stored-hash scheme) must verify with the
stand-alone checker `services.transparency.tlog_check` (RFC 9162's algorithms), and nothing tampered
with may. Known answers come from the Certificate Transparency test vectors and from Go's note
package; the interoperability with Go itself is in tests/interop.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import itertools
import os
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.transparency import merkle, tlog_check
from services.transparency.signing import (
    CheckpointSigner,
    SigningKeyError,
    generate_signer,
    known_verifiers,
    load_or_create_signing_key,
    rotate_signing_key,
    signer_from_text,
    verifiers_path,
)
from services.transparency.tlog_check import (
    EMPTY_ROOT,
    CheckError,
    Checkpoint,
    ConsistencyProof,
    InclusionProof,
    VerifierKey,
    check_consistency,
    check_inclusion,
    leaf_hash,
    node_hash,
    open_checkpoint,
    open_note,
    parse_checkpoint,
    parse_note,
    root_of,
    verify_consistency,
    verify_inclusion,
)

ORIGIN = "okr-ledger.example/test-log"
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- a store of hashes in memory, as the SQL store will hold them ---------------------------------


class MemoryStore:
    """Stored hashes by index, appended with `merkle.append_leaves` in batches."""

    def __init__(self) -> None:
        self.hashes: dict[int, bytes] = {}
        self.size = 0
        self.reads: list[list[int]] = []

    def append(self, leaf_hashes: Sequence[bytes]) -> None:
        frontier = self.read(merkle.frontier_indexes(self.size)) if self.size else []
        written, new_frontier = merkle.append_leaves(self.size, frontier, leaf_hashes)
        start = merkle.stored_hash_count(self.size)
        for offset, h in enumerate(written):
            assert start + offset not in self.hashes
            self.hashes[start + offset] = h
        self.size += len(leaf_hashes)
        assert len(self.hashes) == merkle.stored_hash_count(self.size)
        assert new_frontier == self.read(merkle.frontier_indexes(self.size))

    def read(self, indexes: Sequence[int]) -> list[bytes]:
        assert list(indexes) == sorted(set(indexes)), "indexes are asked in increasing order"
        self.reads.append(list(indexes))
        return [self.hashes[i] for i in indexes]


def store_of(leaf_hashes: Sequence[bytes], cuts: Sequence[int] = ()) -> MemoryStore:
    """A store holding `leaf_hashes`, appended in batches split at `cuts`."""
    store = MemoryStore()
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(leaf_hashes)}), len(leaf_hashes)]
    for lo, hi in itertools.pairwise(bounds):
        store.append(leaf_hashes[lo:hi])
    return store


def reference_mth(leaf_hashes: Sequence[bytes]) -> bytes:
    """RFC 6962 section 2.1, word for word: split at the largest power of two smaller than n."""
    n = len(leaf_hashes)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaf_hashes[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(
        b"\x01" + reference_mth(leaf_hashes[:k]) + reference_mth(leaf_hashes[k:])
    ).digest()


def flip(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


@st.composite
def logs(draw: st.DrawFn, max_size: int = 300) -> tuple[list[bytes], MemoryStore]:
    """Distinct random leaves (the index is part of each) stored in random batches."""
    size = draw(st.integers(1, max_size))
    salt = draw(st.binary(max_size=16))
    datas = [i.to_bytes(4, "big") + salt for i in range(size)]
    hashes = [leaf_hash(d) for d in datas]
    cuts = draw(st.lists(st.integers(1, max(size - 1, 1)), max_size=8))
    return hashes, store_of(hashes, cuts)


# --- the tree -------------------------------------------------------------------------------------


@FAST
@given(logs())
def test_tree_hash_is_rfc6962_mth_at_every_size(log: tuple[list[bytes], MemoryStore]) -> None:
    leaves, store = log
    for size in range(len(leaves) + 1):
        store.reads.clear()
        assert merkle.tree_hash(size, store.read) == reference_mth(leaves[:size])
        assert len(store.reads) == (1 if size else 0), "one read per tree hash"
        assert len(store.reads[0] if size else []) <= 1 + size.bit_length()
    assert root_of(leaves) == reference_mth(leaves)


@FAST
@given(logs(), st.data())
def test_every_inclusion_proof_verifies(
    log: tuple[list[bytes], MemoryStore], data: st.DataObject
) -> None:
    leaves, store = log
    size = len(leaves)
    root = merkle.tree_hash(size, store.read)
    for index in range(size):
        store.reads.clear()
        proof = merkle.prove_inclusion(size, index, store.read)
        assert len(store.reads) <= 1, "one read per proof"
        verify_inclusion(index, size, leaves[index], proof, root)
    for _ in range(10):
        smaller = data.draw(st.integers(1, size))
        index = data.draw(st.integers(0, smaller - 1))
        proof = merkle.prove_inclusion(smaller, index, store.read)
        verify_inclusion(index, smaller, leaves[index], proof, reference_mth(leaves[:smaller]))


@FAST
@given(logs(), st.data())
def test_consistency_proofs_verify(
    log: tuple[list[bytes], MemoryStore], data: st.DataObject
) -> None:
    leaves, store = log
    pairs = [(0, len(leaves)), (len(leaves), len(leaves))]
    for _ in range(20):
        new = data.draw(st.integers(0, len(leaves)))
        pairs.append((data.draw(st.integers(0, new)), new))
    for old, new in pairs:
        store.reads.clear()
        proof = merkle.prove_consistency(new, old, store.read)
        assert len(store.reads) <= 1, "one read per proof"
        verify_consistency(
            old, new, reference_mth(leaves[:old]), reference_mth(leaves[:new]), proof
        )


def test_stored_hash_indexes_round_trip() -> None:
    for index in range(5000):
        level, n = merkle.split_stored_hash_index(index)
        assert merkle.stored_hash_index(level, n) == index
    # Go's tlog: leaf n's hash goes right after leaf n-1's hashes and the subtrees it completes.
    assert [merkle.stored_hash_count(n) for n in range(9)] == [0, 1, 3, 4, 7, 8, 10, 11, 15]
    assert merkle.frontier_indexes(7) == [
        merkle.stored_hash_index(2, 0),
        merkle.stored_hash_index(1, 2),
        merkle.stored_hash_index(0, 6),
    ]


def test_merkle_refuses_impossible_requests() -> None:
    store = store_of([leaf_hash(bytes([i])) for i in range(5)])
    with pytest.raises(ValueError):
        merkle.prove_inclusion(5, 5, store.read)
    with pytest.raises(ValueError):
        merkle.prove_consistency(4, 5, store.read)
    with pytest.raises(ValueError):
        merkle.append_leaves(5, [], [leaf_hash(b"x")])  # a tree of 5 has a frontier of 2
    with pytest.raises(ValueError):
        merkle.append_leaves(0, [], [b"short"])
    with pytest.raises(ValueError):
        merkle.tree_hash(5, lambda indexes: [b"\x00" * 32])  # a reader that loses hashes


# --- tampering ------------------------------------------------------------------------------------


@FAST
@given(logs(), st.data())
def test_any_flipped_byte_fails_inclusion(
    log: tuple[list[bytes], MemoryStore], data: st.DataObject
) -> None:
    leaves, store = log
    size = data.draw(st.integers(1, len(leaves)))
    index = data.draw(st.integers(0, size - 1))
    proof = merkle.prove_inclusion(size, index, store.read)
    root = merkle.tree_hash(size, store.read)
    byte = data.draw(st.integers(0, 31))

    with pytest.raises(CheckError):
        verify_inclusion(index, size, flip(leaves[index], byte), proof, root)
    with pytest.raises(CheckError):
        verify_inclusion(index, size, leaves[index], proof, flip(root, byte))
    if proof:
        which = data.draw(st.integers(0, len(proof) - 1))
        tampered = [*proof]
        tampered[which] = flip(tampered[which], byte)
        with pytest.raises(CheckError):
            verify_inclusion(index, size, leaves[index], tampered, root)


@FAST
@given(logs(), st.data())
def test_any_flipped_byte_fails_consistency(
    log: tuple[list[bytes], MemoryStore], data: st.DataObject
) -> None:
    leaves, store = log
    new = data.draw(st.integers(1, len(leaves)))
    old = data.draw(st.integers(1, new))
    proof = merkle.prove_consistency(new, old, store.read)
    old_root, new_root = reference_mth(leaves[:old]), reference_mth(leaves[:new])
    byte = data.draw(st.integers(0, 31))

    with pytest.raises(CheckError):
        verify_consistency(old, new, flip(old_root, byte), new_root, proof)
    with pytest.raises(CheckError):
        verify_consistency(old, new, old_root, flip(new_root, byte), proof)
    if proof:
        which = data.draw(st.integers(0, len(proof) - 1))
        tampered = [*proof]
        tampered[which] = flip(tampered[which], byte)
        with pytest.raises(CheckError):
            verify_consistency(old, new, old_root, new_root, tampered)


@FAST
@given(logs(), st.data())
def test_a_proof_one_hash_short_or_long_fails(
    log: tuple[list[bytes], MemoryStore], data: st.DataObject
) -> None:
    leaves, store = log
    size = len(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof = merkle.prove_inclusion(size, index, store.read)
    root = merkle.tree_hash(size, store.read)
    extra = data.draw(st.sampled_from([*proof, root, leaves[index]]))
    for wrong in ([*proof, extra], [extra, *proof], proof[:-1], proof[1:]):
        if wrong != proof:
            with pytest.raises(CheckError):
                verify_inclusion(index, size, leaves[index], wrong, root)

    old = data.draw(st.integers(1, size))
    cproof = merkle.prove_consistency(size, old, store.read)
    old_root = reference_mth(leaves[:old])
    for wrong in ([*cproof, extra], [extra, *cproof], cproof[:-1], cproof[1:]):
        if wrong != cproof:
            with pytest.raises(CheckError):
                verify_consistency(old, size, old_root, root, wrong)


@FAST
@given(logs(max_size=100), st.data())
def test_a_wrong_index_or_size_fails(
    log: tuple[list[bytes], MemoryStore], data: st.DataObject
) -> None:
    leaves, store = log
    size = len(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof = merkle.prove_inclusion(size, index, store.read)
    root = merkle.tree_hash(size, store.read)

    other_index = data.draw(st.integers(0, size).filter(lambda i: i != index))
    with pytest.raises(CheckError):
        verify_inclusion(other_index, size, leaves[index], proof, root)
    # Another size with that size's root: the signed checkpoint binds a size to its root.
    other_size = data.draw(st.integers(index + 1, size + 5).filter(lambda s: s != size))
    more = leaves + [leaf_hash(b"more %d" % i) for i in range(5)]
    with pytest.raises(CheckError):
        verify_inclusion(index, other_size, leaves[index], proof, reference_mth(more[:other_size]))

    old = data.draw(st.integers(1, size))
    cproof = merkle.prove_consistency(size, old, store.read)
    other_old = data.draw(st.integers(1, size).filter(lambda s: s != old))
    with pytest.raises(CheckError):
        verify_consistency(other_old, size, reference_mth(leaves[:other_old]), root, cproof)
    with pytest.raises(CheckError):
        verify_consistency(
            old, size + 1, reference_mth(leaves[:old]), reference_mth(more[: size + 1]), cproof
        )


def test_proof_edge_cases() -> None:
    a = leaf_hash(b"a")
    verify_inclusion(0, 1, a, [], a)
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 1, EMPTY_ROOT, a, [])
    verify_consistency(1, 1, a, a, [])
    with pytest.raises(CheckError, match="not inside"):
        verify_inclusion(1, 1, a, [], a)
    with pytest.raises(CheckError, match="not inside"):
        verify_inclusion(0, 0, a, [], EMPTY_ROOT)
    with pytest.raises(CheckError, match="empty"):
        verify_consistency(0, 1, EMPTY_ROOT, a, [a])
    with pytest.raises(CheckError, match="empty tree"):
        verify_consistency(0, 1, a, a, [])
    with pytest.raises(CheckError, match="different roots"):
        verify_consistency(1, 1, a, leaf_hash(b"b"), [])
    with pytest.raises(CheckError, match="must be empty"):
        verify_consistency(1, 1, a, a, [a])
    with pytest.raises(CheckError, match="larger"):
        verify_consistency(2, 1, a, a, [])
    with pytest.raises(CheckError, match="negative"):
        verify_inclusion(-1, 1, a, [], a)
    with pytest.raises(CheckError, match="31 bytes"):
        verify_inclusion(0, 1, a[:31], [], a)


# --- known answers: the Certificate Transparency test vectors -------------------------------------
# Copied from github.com/transparency-dev/merkle, proof/verify_test.go at commit 9ca563d3 (April
# 2025; since then the same data is in its testdata/ directory). They are the vectors of
# Certificate Transparency's reference Merkle tree tests (google/certificate-transparency, carried
# over by Trillian): 8 leaves, the roots of the trees of their first 1..8 leaves, and inclusion
# and consistency proofs (leaf numbers there are 1-based).

CT_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    bytes.fromhex(h)
    for h in [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
]


def hexes(*values: str) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


CT_INCLUSION = [  # (1-based leaf, tree size, audit path)
    (1, 1, []),
    (
        1,
        8,
        hexes(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        6,
        8,
        hexes(
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (3, 3, hexes("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (
        2,
        5,
        hexes(
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
]
CT_CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (
        1,
        8,
        hexes(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        6,
        8,
        hexes(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (
        2,
        5,
        hexes(
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
    (
        6,
        7,
        hexes(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
]


def test_ct_roots() -> None:
    hashes = [leaf_hash(d) for d in CT_LEAVES]
    store = store_of(hashes, cuts=[3, 5])
    for size in range(1, 9):
        assert root_of(hashes[:size]) == CT_ROOTS[size - 1]
        assert merkle.tree_hash(size, store.read) == CT_ROOTS[size - 1]
    assert root_of([]) == bytes.fromhex(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


@pytest.mark.parametrize(("leaf", "size", "path"), CT_INCLUSION)
def test_ct_inclusion_vectors(leaf: int, size: int, path: list[bytes]) -> None:
    hashes = [leaf_hash(d) for d in CT_LEAVES]
    assert merkle.prove_inclusion(size, leaf - 1, store_of(hashes).read) == path
    verify_inclusion(leaf - 1, size, hashes[leaf - 1], path, CT_ROOTS[size - 1])


@pytest.mark.parametrize(("old", "new", "proof"), CT_CONSISTENCY)
def test_ct_consistency_vectors(old: int, new: int, proof: list[bytes]) -> None:
    hashes = [leaf_hash(d) for d in CT_LEAVES]
    assert merkle.prove_consistency(new, old, store_of(hashes).read) == proof
    verify_consistency(old, new, CT_ROOTS[old - 1], CT_ROOTS[new - 1], proof)
    if proof:
        with pytest.raises(CheckError):
            verify_consistency(old, new, CT_ROOTS[new - 1], CT_ROOTS[old - 1], proof)


def test_node_hash_is_rfc6962() -> None:
    left, right = leaf_hash(CT_LEAVES[0]), leaf_hash(CT_LEAVES[1])
    assert node_hash(left, right) == CT_ROOTS[1]


# --- checkpoints and signed notes -----------------------------------------------------------------

# Go's golang.org/x/mod/sumdb/note package documentation: a key, a text and its signed note.
GO_SIGNER_KEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSN"
    "XgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def test_signing_matches_go_note_byte_for_byte() -> None:
    signer = signer_from_text(GO_SIGNER_KEY)
    assert str(signer.verifier) == GO_VERIFIER_KEY
    assert signer.sign_note(GO_TEXT) == GO_NOTE
    assert signer.key_text() == GO_SIGNER_KEY
    note = open_note(GO_NOTE, [VerifierKey.parse(GO_VERIFIER_KEY)])
    assert note.text == GO_TEXT
    assert [(s.name, s.key_id) for s in note.signatures] == [("PeterNeumann", 0xC74F20A3)]


def signed_checkpoint(
    signer: CheckpointSigner, size: int = 3, extensions: tuple[str, ...] = ()
) -> tuple[Checkpoint, str]:
    leaves = [leaf_hash(b"event %d" % i) for i in range(size)]
    checkpoint = Checkpoint(ORIGIN, size, root_of(leaves), extensions)
    return checkpoint, signer.sign(checkpoint)


def test_checkpoint_sign_and_open_round_trip() -> None:
    signer = generate_signer(ORIGIN)
    checkpoint, message = signed_checkpoint(signer, 12, ("extension line",))
    assert message.startswith(f"{ORIGIN}\n12\n{base64.b64encode(checkpoint.root_hash).decode()}\n")
    assert open_checkpoint(message, [signer.verifier]) == checkpoint
    assert parse_checkpoint(checkpoint.text()) == checkpoint
    note = parse_note(message)
    assert note.text == checkpoint.text()
    assert note.message() == message
    assert VerifierKey.parse(str(signer.verifier)) == signer.verifier


def test_open_checkpoint_refuses_another_key() -> None:
    signer, impostor = generate_signer(ORIGIN), generate_signer(ORIGIN)
    _, message = signed_checkpoint(impostor)
    with pytest.raises(CheckError, match="no signature by a known key"):
        open_checkpoint(message, [signer.verifier])


def test_open_checkpoint_refuses_an_unknown_key_name() -> None:
    signer = generate_signer(ORIGIN)
    _, message = signed_checkpoint(generate_signer("someone.else/log"))
    with pytest.raises(CheckError, match=r"signed by someone\.else/log\+"):
        open_checkpoint(message, [signer.verifier])
    with pytest.raises(CheckError, match="no signature by a known key"):
        open_checkpoint(message, [])


def test_open_checkpoint_refuses_any_changed_character() -> None:
    signer = generate_signer(ORIGIN)
    _, message = signed_checkpoint(signer, 300, ("ext",))
    for position, ch in enumerate(message):
        replacement = "B" if ch == "A" else "A" if ch != "\n" else "a"
        changed = message[:position] + replacement + message[position + 1 :]
        with pytest.raises(CheckError):
            open_checkpoint(changed, [signer.verifier])


def test_open_checkpoint_refuses_a_truncated_signature() -> None:
    signer = generate_signer(ORIGIN)
    _, message = signed_checkpoint(signer)
    note = parse_note(message)
    [sig] = note.signatures
    short = type(sig)(sig.name, sig.key_id, sig.signature[:-1])
    with pytest.raises(CheckError, match="bad signature"):
        open_checkpoint(type(note)(note.text, (short,)).message(), [signer.verifier])
    with pytest.raises(CheckError):
        open_checkpoint(message[:-3] + "\n", [signer.verifier])
    with pytest.raises(CheckError):
        open_checkpoint(message[:-1], [signer.verifier])


def test_a_bad_signature_by_a_known_key_refuses_the_note() -> None:
    signer, witness = generate_signer(ORIGIN), generate_signer("witness.example/w1")
    checkpoint, message = signed_checkpoint(signer)
    cosigned = message + parse_note(witness.sign(checkpoint)).signatures[0].line()
    # A signature by a key not given is ignored; both given, both checked.
    assert open_checkpoint(cosigned, [signer.verifier]) == checkpoint
    assert len(open_note(cosigned, [signer.verifier, witness.verifier]).signatures) == 2
    [own] = parse_note(message).signatures
    forged = type(own)(own.name, own.key_id, bytes(64))
    with pytest.raises(CheckError, match="bad signature"):
        open_note(cosigned + forged.line(), [signer.verifier])


@pytest.mark.parametrize(
    "message",
    [
        "a\n",  # no signatures
        "a\n\n",  # no signature lines
        "a\n\n\u2014 name AAAAAAA=",  # no final newline
        "a\n\n- name AAAAAAA=\n",  # a hyphen, not an em dash
        "a\n\n\u2014 name AAAAAAA\n",  # bad base64
        "a\n\n\u2014 name AAAA\n",  # fewer than 5 bytes
        "a\n\n\u2014 na+me AAAAAAA=\n",  # a plus in the name
        "a\n\n\u2014 nameAAAAAAA=\n",  # no space
        "a\tb\n\n\u2014 name AAAAAAA=\n",  # a control character
        "a\n\n" + "\u2014 name AAAAAAA=\n" * 101,  # too many signatures
    ],
)
def test_parse_note_refuses_malformed_notes(message: str) -> None:
    with pytest.raises(CheckError):
        parse_note(message)


@pytest.mark.parametrize(
    "text",
    [
        "",
        f"{ORIGIN}\n1\n",
        f"{ORIGIN}\n01\n{base64.b64encode(bytes(32)).decode()}\n",
        f"{ORIGIN}\n+1\n{base64.b64encode(bytes(32)).decode()}\n",
        f"{ORIGIN}\n 1\n{base64.b64encode(bytes(32)).decode()}\n",
        f"{ORIGIN}\n-1\n{base64.b64encode(bytes(32)).decode()}\n",
        f"{ORIGIN}\n1\n{base64.b64encode(bytes(31)).decode()}\n",
        f"{ORIGIN}\n1\n{base64.b64encode(bytes(32)).decode().rstrip('=')}\n",
        f"{ORIGIN}\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=\n",  # non-canonical
        f"\n1\n{base64.b64encode(bytes(32)).decode()}\n",
        f"{ORIGIN}\n1\n{base64.b64encode(bytes(32)).decode()}",
        f"{ORIGIN}\n1\n{base64.b64encode(bytes(32)).decode()}\n\n",
        f"{ORIGIN}\n1\n{base64.b64encode(bytes(32)).decode()}\next\n\n",
    ],
)
def test_parse_checkpoint_is_strict(text: str) -> None:
    with pytest.raises(CheckError):
        parse_checkpoint(text)


def test_parse_checkpoint_accepts_the_c2sp_example() -> None:
    checkpoint = parse_checkpoint(
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )
    assert (checkpoint.origin, checkpoint.tree_size) == ("example.com/behind-the-sofa", 20852163)
    assert parse_checkpoint("o\n0\n" + base64.b64encode(EMPTY_ROOT).decode() + "\n").tree_size == 0


def test_verifier_key_parse_refuses_wrong_key_ids_and_manglings() -> None:
    VerifierKey.parse(GO_VERIFIER_KEY)
    name, key_id, key = GO_VERIFIER_KEY.split("+", 2)
    with pytest.raises(CheckError, match="does not match"):
        VerifierKey.parse(f"{name}+c74f20a4+{key}")
    with pytest.raises(CheckError, match="does not match"):
        VerifierKey.parse(f"Peter+{key_id}+{key}")
    # As Go's TestNewVerifier: every substring and every one-character change is refused.
    for i in range(len(GO_VERIFIER_KEY)):
        for j in range(i + 1, len(GO_VERIFIER_KEY) + 1):
            if (i, j) != (0, len(GO_VERIFIER_KEY)) and GO_VERIFIER_KEY[i:j].strip() != (
                GO_VERIFIER_KEY
            ):
                with pytest.raises(CheckError):
                    VerifierKey.parse(GO_VERIFIER_KEY[i:j])
        changed = GO_VERIFIER_KEY[:i] + chr(ord(GO_VERIFIER_KEY[i]) + 1) + GO_VERIFIER_KEY[i + 1 :]
        with pytest.raises(CheckError):
            VerifierKey.parse(changed)
    # Go's own bad keys: a wrong-length key and an unknown algorithm, each with a fitting key id.
    with pytest.raises(CheckError):
        VerifierKey.parse(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        )
    with pytest.raises(CheckError, match="not an Ed25519 key"):
        VerifierKey.parse("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


def test_two_different_keys_with_one_name_and_id_are_ambiguous() -> None:
    real = VerifierKey.parse(GO_VERIFIER_KEY)
    fake = object.__new__(VerifierKey)
    object.__setattr__(fake, "name", real.name)
    object.__setattr__(fake, "key_id", real.key_id)
    object.__setattr__(fake, "public_key", bytes(32))
    with pytest.raises(CheckError, match="two different verifier keys"):
        open_note(GO_NOTE, [real, fake])


# --- proof files ----------------------------------------------------------------------------------


def proofs(signer: CheckpointSigner) -> tuple[InclusionProof, ConsistencyProof]:
    datas = [b"event %d" % i for i in range(20)]
    store = store_of([leaf_hash(d) for d in datas], cuts=[7])
    old, new = 12, 20
    old_cp = signer.sign(Checkpoint(ORIGIN, old, merkle.tree_hash(old, store.read)))
    new_cp = signer.sign(Checkpoint(ORIGIN, new, merkle.tree_hash(new, store.read)))
    inclusion = InclusionProof(
        leaf_index=5,
        tree_size=new,
        leaf_data=datas[5],
        audit_path=tuple(merkle.prove_inclusion(new, 5, store.read)),
        checkpoint=new_cp,
    )
    consistency = ConsistencyProof(
        old_size=old,
        new_size=new,
        proof=tuple(merkle.prove_consistency(new, old, store.read)),
        old_checkpoint=old_cp,
        new_checkpoint=new_cp,
    )
    return inclusion, consistency


def test_proof_files_round_trip_and_check() -> None:
    signer = generate_signer(ORIGIN)
    inclusion, consistency = proofs(signer)
    assert InclusionProof.from_json(inclusion.to_json()) == inclusion
    assert ConsistencyProof.from_json(consistency.to_json().encode()) == consistency
    assert check_inclusion(inclusion, [signer.verifier]).tree_size == 20
    old, new = check_consistency(consistency, [signer.verifier])
    assert (old.tree_size, new.tree_size) == (12, 20)


def test_proof_files_that_do_not_fit_are_refused() -> None:
    signer = generate_signer(ORIGIN)
    inclusion, consistency = proofs(signer)
    other_log = generate_signer("other.example/log")
    with pytest.raises(CheckError, match="tree size 19"):
        check_inclusion(
            InclusionProof(5, 19, inclusion.leaf_data, inclusion.audit_path, inclusion.checkpoint),
            [signer.verifier],
        )
    with pytest.raises(CheckError, match="does not lead to the root"):
        check_inclusion(
            InclusionProof(5, 20, b"event 6", inclusion.audit_path, inclusion.checkpoint),
            [signer.verifier],
        )
    foreign = other_log.sign(parse_checkpoint(parse_note(consistency.new_checkpoint).text))
    with pytest.raises(CheckError, match="no signature by a known key"):
        check_consistency(
            ConsistencyProof(12, 20, consistency.proof, consistency.old_checkpoint, foreign),
            [signer.verifier],
        )
    renamed = signer.sign(
        Checkpoint("other.example/log", 20, parse_checkpoint(parse_note(foreign).text).root_hash)
    )
    with pytest.raises(CheckError, match="two logs"):
        check_consistency(
            ConsistencyProof(12, 20, consistency.proof, consistency.old_checkpoint, renamed),
            [signer.verifier],
        )
    with pytest.raises(CheckError, match="old size is 11"):
        check_consistency(
            ConsistencyProof(
                11, 20, consistency.proof, consistency.old_checkpoint, consistency.new_checkpoint
            ),
            [signer.verifier],
        )


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"kind": "consistency"}',
        '{"kind": "inclusion", "leaf_index": 0, "tree_size": 1, "leaf_data": "",'
        ' "audit_path": [], "checkpoint": "x", "extra": 1}',
        '{"kind": "inclusion", "leaf_index": 0.5, "tree_size": 1, "leaf_data": "",'
        ' "audit_path": [], "checkpoint": "x"}',
        '{"kind": "inclusion", "leaf_index": 0, "tree_size": 1, "leaf_data": "!",'
        ' "audit_path": [], "checkpoint": "x"}',
        '{"kind": "inclusion", "leaf_index": 0, "tree_size": 1, "leaf_data": "",'
        ' "audit_path": ["AAAA"], "checkpoint": "x"}',
        "not json",
    ],
)
def test_malformed_inclusion_proof_files_are_refused(text: str) -> None:
    with pytest.raises(CheckError):
        InclusionProof.from_json(text)


# --- the checker stays a file an auditor can copy out ---------------------------------------------


def test_tlog_check_imports_only_the_standard_library_and_cryptography() -> None:
    tree = ast.parse(Path(tlog_check.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            assert node.module is not None
            imported.add(node.module.split(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"cryptography"}


def write_files(tmp_path: Path, signer: CheckpointSigner) -> dict[str, Path]:
    inclusion, consistency = proofs(signer)
    files = {
        "checkpoint": tmp_path / "checkpoint.txt",
        "inclusion": tmp_path / "inclusion.json",
        "consistency": tmp_path / "consistency.json",
        "keys": tmp_path / "keys.txt",
    }
    files["checkpoint"].write_text(inclusion.checkpoint, encoding="utf-8")
    files["inclusion"].write_text(inclusion.to_json(), encoding="utf-8")
    files["consistency"].write_text(consistency.to_json(), encoding="utf-8")
    files["keys"].write_text(f"# the log's keys\n\n{signer.verifier}\n", encoding="utf-8")
    return files


def test_main_accepts_good_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    signer = generate_signer(ORIGIN)
    files = write_files(tmp_path, signer)
    key = str(signer.verifier)

    assert tlog_check.main(["checkpoint", str(files["checkpoint"]), "--key", key]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"checkpoint {ORIGIN}: tree size 20, root ")
    assert f"signed by {ORIGIN}+{signer.verifier.key_id:08x}" in out
    assert (
        tlog_check.main(["inclusion", str(files["inclusion"]), "--key-file", str(files["keys"])])
        == 0
    )
    assert "inclusion: leaf 5 " in capsys.readouterr().out
    assert tlog_check.main(["consistency", str(files["consistency"]), "--key", key]) == 0
    assert "at tree size 12" in capsys.readouterr().out


def test_main_refuses_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    signer = generate_signer(ORIGIN)
    files = write_files(tmp_path, signer)
    stranger = str(generate_signer(ORIGIN).verifier)
    tampered = tmp_path / "tampered.txt"
    tampered.write_text(files["checkpoint"].read_text().replace("\n20\n", "\n21\n"))

    cases = [
        ["checkpoint", str(files["checkpoint"]), "--key", stranger],
        ["checkpoint", str(tampered), "--key", str(signer.verifier)],
        ["checkpoint", str(files["checkpoint"])],
        ["checkpoint", str(tmp_path / "missing.txt"), "--key", str(signer.verifier)],
        ["inclusion", str(files["consistency"]), "--key", str(signer.verifier)],
        ["inclusion", str(files["inclusion"]), "--key", "not a key"],
        ["consistency", str(files["consistency"]), "--key", stranger],
    ]
    for argv in cases:
        assert tlog_check.main(argv) == 1, argv
        captured = capsys.readouterr()
        assert captured.err.startswith("refused: "), argv
        assert captured.out == ""
    assert tlog_check.main(["nonsense"]) == 2
    capsys.readouterr()


def test_the_checker_runs_as_a_copied_out_script(tmp_path: Path) -> None:
    signer = generate_signer(ORIGIN)
    files = write_files(tmp_path, signer)
    script = tmp_path / "tlog_check.py"
    script.write_text(Path(tlog_check.__file__).read_text())
    # -I: isolated, so nothing of this project is importable, only what an auditor would have.
    run = subprocess.run(
        [
            sys.executable,
            "-I",
            str(script),
            "inclusion",
            str(files["inclusion"]),
            "--key",
            str(signer.verifier),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("inclusion: leaf 5 ")
    refused = subprocess.run(
        [
            sys.executable,
            "-I",
            str(script),
            "checkpoint",
            str(files["checkpoint"]),
            "--key",
            str(generate_signer(ORIGIN).verifier),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert refused.returncode == 1
    assert refused.stderr.startswith("refused: no signature by a known key")


# --- the signing key file -------------------------------------------------------------------------


def test_key_file_is_created_0600_in_a_0700_directory(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "log.key"
    signer = load_or_create_signing_key(path, ORIGIN)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    text = path.read_text()
    assert text.startswith(f"PRIVATE+KEY+{ORIGIN}+{signer.verifier.key_id:08x}+")
    assert signer_from_text(text).verifier == signer.verifier
    assert load_or_create_signing_key(path, ORIGIN).verifier == signer.verifier


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    load_or_create_signing_key(path, ORIGIN)
    os.chmod(path, 0o644)
    with pytest.raises(SigningKeyError, match="chmod 600") as refused:
        load_or_create_signing_key(path, ORIGIN)
    assert path.read_text().strip() not in str(refused.value)
    os.chmod(path, 0o600)
    load_or_create_signing_key(path, ORIGIN)


def test_a_key_file_for_another_log_or_malformed_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    load_or_create_signing_key(path, ORIGIN)
    with pytest.raises(SigningKeyError, match="is for the log"):
        load_or_create_signing_key(path, "another.example/log")
    secret = GO_SIGNER_KEY.rsplit("+", 1)[1]
    for bad in [
        GO_SIGNER_KEY.replace("c74f20a3", "c74f20a4"),
        GO_SIGNER_KEY.replace("PRIVATE+KEY", "PUBLIC+KEY"),
        GO_SIGNER_KEY[:-4],
        GO_VERIFIER_KEY,
    ]:
        with pytest.raises(SigningKeyError) as refused:
            signer_from_text(bad)
        assert secret not in str(refused.value)


def test_rotation_keeps_old_checkpoints_checkable(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    first = load_or_create_signing_key(path, ORIGIN)
    _, old_message = signed_checkpoint(first, 3)

    second, old_verifier = rotate_signing_key(path, ORIGIN)
    assert old_verifier == first.verifier
    assert second.verifier != first.verifier
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_signing_key(path, ORIGIN).verifier == second.verifier
    assert verifiers_path(path).read_text() == f"{first.verifier}\n"
    _, new_message = signed_checkpoint(second, 5)

    third, _ = rotate_signing_key(path, ORIGIN)
    verifiers = known_verifiers(path, third)
    assert verifiers == [third.verifier, first.verifier, second.verifier]
    assert open_checkpoint(old_message, verifiers).tree_size == 3
    assert open_checkpoint(new_message, verifiers).tree_size == 5
    with pytest.raises(CheckError):
        open_checkpoint(old_message, [third.verifier])


def test_signer_from_a_key_given_in_the_environment() -> None:
    key = Ed25519PrivateKey.generate()
    signer = CheckpointSigner(ORIGIN, key)
    again = signer_from_text(f"  {signer.key_text()}\n")
    assert again.verifier == signer.verifier
    checkpoint, message = signed_checkpoint(again)
    assert open_checkpoint(message, [signer.verifier]) == checkpoint
