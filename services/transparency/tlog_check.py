"""Offline checker for the ledger's transparency log: signed checkpoints and Merkle proofs.

This one file is all an auditor needs. It imports only the Python standard library and the
`cryptography` package (for Ed25519), never anything else of this project, so it can be copied out
of the repository and run on its own (`python tlog_check.py --help`): whoever checks the log must
not have to trust, install or even read the code that wrote it. Keep it that way; a test holds it.

The log is the Merkle tree of RFC 6962 / RFC 9162 over the events in store order (leaf `i` is the
canonical bytes of event `i`):

- a leaf hashes as SHA-256(0x00 || data), an interior node as SHA-256(0x01 || left || right), and
  a tree of n > 1 leaves splits at k, the largest power of two below n: MTH(D[0:n]) =
  SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])); the empty tree's hash is SHA-256 of nothing;
- an inclusion proof ("audit path") and a consistency proof are checked with the algorithms of
  RFC 9162 sections 2.1.3.2 and 2.1.4.2 (`verify_inclusion`, `verify_consistency`).

The log publishes its tree head as a checkpoint (https://c2sp.org/tlog-checkpoint): the text

    <origin>\\n<tree size, decimal>\\n<root hash, base64>\\n[extension lines, each ending \\n]

signed as a signed note (https://c2sp.org/signed-note): the text, a blank line, then one line per
signature, "<U+2014 em dash> <key name> <base64(4-byte key id || Ed25519 signature)>". A verifier
key, given to the auditor out of band, is the text "<name>+<8 hex digits key id>+<base64(0x01 ||
32-byte Ed25519 public key)>", where the key id is the first four bytes (big-endian) of
SHA-256(name || 0x0A || 0x01 || public key). These are the formats of Go's
golang.org/x/mod/sumdb/note and /tlog, so Go's verifiers check our checkpoints and proofs too.

A note is accepted when at least one of its signatures is by a known key (same name and same key
id) and verifies; a signature by a known key that does not verify refuses the whole note.
Signatures by unknown keys are ignored (a witness's cosignature, a key not given).

Proof files are UTF-8 JSON objects:

    {"kind": "inclusion", "leaf_index": 4, "tree_size": 12,
     "leaf_data": "<base64 of the event's canonical bytes>",
     "audit_path": ["<base64 hash>", ...],
     "checkpoint": "<the signed checkpoint note the proof was made against>"}

    {"kind": "consistency", "old_size": 12, "new_size": 20,
     "proof": ["<base64 hash>", ...],
     "old_checkpoint": "<signed note of size 12>", "new_checkpoint": "<signed note of size 20>"}

Usage (exit status 0 when everything checks, 1 with "refused: <reason>" on stderr otherwise):

    python tlog_check.py checkpoint CHECKPOINT_FILE --key VERIFIER_KEY
    python tlog_check.py inclusion PROOF_FILE --key-file KEYS_FILE
    python tlog_check.py consistency PROOF_FILE --key VERIFIER_KEY --key OLD_VERIFIER_KEY

`--key` and `--key-file` (one verifier key per line; blank lines and lines starting with `#` are
skipped) can be repeated; an old key stays useful for the checkpoints it signed before a rotation.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The hash of the tree of no leaves (RFC 6962 section 2.1)."""

ED25519_ALGORITHM = 0x01
"""The signature type byte of Ed25519 in a signed-note key (C2SP signed-note)."""

SIGNATURE_DASH = "\u2014"
"""U+2014 EM DASH, which starts every signature line of a signed note."""

MAX_SIGNATURES = 100
"""More signature lines than this and a note is refused (Go's note.Open has the same limit)."""

MAX_TREE_SIZE = 2**63 - 1
"""Sizes and indexes fit a signed 64-bit integer, as in Go's tlog."""


class CheckError(Exception):
    """A refusal: a proof, a checkpoint, a note or a key did not check. The message says what."""


# --- the Merkle tree (RFC 6962 section 2.1, RFC 9162 section 2.1) ---------------------------------


def leaf_hash(data: bytes) -> bytes:
    """The hash of a leaf: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """k, the largest power of two smaller than n (n >= 2): where RFC 6962 splits a tree of n."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle tree hash (RFC 6962 MTH) of the tree whose leaves hash to `leaf_hashes`."""
    for position, h in enumerate(leaf_hashes):
        _check_hash(h, f"leaf hash {position}")
    if not leaf_hashes:
        return EMPTY_ROOT

    def mth(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return leaf_hashes[lo]
        k = _largest_power_of_two_below(hi - lo)
        return node_hash(mth(lo, lo + k), mth(lo + k, hi))

    return mth(0, len(leaf_hashes))


def _check_hash(value: object, what: str) -> None:
    if not isinstance(value, bytes | bytearray):
        raise CheckError(f"{what} is not bytes")
    if len(value) != HASH_SIZE:
        raise CheckError(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def _check_count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckError(f"{what} is not an integer")
    if value < 0:
        raise CheckError(f"{what} is negative ({value})")
    if value > MAX_TREE_SIZE:
        raise CheckError(f"{what} is too large ({value})")
    return value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def inclusion_proof_length(leaf_index: int, tree_size: int) -> int:
    """How many hashes the inclusion proof of leaf `leaf_index` in a tree of `tree_size` has."""
    # Below the level where the paths to the leaf and to the last leaf part, every level gives
    # one sibling; above it, only the levels where the leaf's subtree is a right child do.
    inner = (leaf_index ^ (tree_size - 1)).bit_length()
    return inner + (leaf_index >> inner).bit_count()


def consistency_proof_length(old_size: int, new_size: int) -> int:
    """How many hashes the consistency proof from `old_size` to `new_size` (0 < old < new) has."""
    # The shape of RFC 9162's SUBPROOF, walked down to where the old tree ends.
    lo, hi, length = 0, new_size, 0
    while old_size != hi:
        k = _largest_power_of_two_below(hi - lo)
        if old_size <= lo + k:
            hi = lo + k
        else:
            lo += k
        length += 1
    return length + (0 if lo == 0 else 1)


def verify_inclusion(
    leaf_index: int, tree_size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that the leaf whose HASH is `leaf` is at `leaf_index` in the tree of `root`.

    RFC 9162 section 2.1.3.2. Raises `CheckError` saying what did not fit.
    """
    leaf_index = _check_count(leaf_index, "leaf index")
    tree_size = _check_count(tree_size, "tree size")
    _check_hash(leaf, "leaf hash")
    _check_hash(root, "root hash")
    for position, h in enumerate(proof):
        _check_hash(h, f"inclusion proof hash {position}")
    if leaf_index >= tree_size:
        raise CheckError(f"leaf index {leaf_index} is not inside a tree of size {tree_size}")
    expected = inclusion_proof_length(leaf_index, tree_size)
    if len(proof) != expected:
        raise CheckError(
            f"inclusion proof has {len(proof)} hashes; leaf {leaf_index} of a tree of size "
            f"{tree_size} needs {expected}"
        )
    fn, sn = leaf_index, tree_size - 1
    r = bytes(leaf)
    for p in proof:
        if sn == 0:
            raise CheckError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise CheckError("inclusion proof is shorter than the path to the root")
    if r != root:
        raise CheckError(
            f"inclusion proof of leaf {leaf_index} does not lead to the root: it computes "
            f"{_b64(r)}, the tree of size {tree_size} has {_b64(root)}"
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of `old_size` leaves and `old_root` is a prefix of the newer tree.

    RFC 9162 section 2.1.4.2, plus its edge cases: equal sizes need an empty proof and equal
    roots; the empty tree (old size 0, whose root is SHA-256 of nothing) is a prefix of every tree
    and needs an empty proof. Raises `CheckError` saying what did not fit.
    """
    old_size = _check_count(old_size, "old tree size")
    new_size = _check_count(new_size, "new tree size")
    _check_hash(old_root, "old root hash")
    _check_hash(new_root, "new root hash")
    for position, h in enumerate(proof):
        _check_hash(h, f"consistency proof hash {position}")
    if old_size > new_size:
        raise CheckError(f"old tree size {old_size} is larger than new tree size {new_size}")
    if old_size == new_size:
        if proof:
            raise CheckError(
                f"both trees have size {old_size}: the proof must be empty, it has "
                f"{len(proof)} hashes"
            )
        if old_root != new_root:
            raise CheckError(
                f"both trees have size {old_size} but different roots: {_b64(old_root)} and "
                f"{_b64(new_root)}"
            )
        return
    if old_size == 0:
        if proof:
            raise CheckError(
                f"the old tree is empty: the proof must be empty, it has {len(proof)} hashes"
            )
        if old_root != EMPTY_ROOT:
            raise CheckError(
                f"the old tree is empty but its root is {_b64(old_root)}, not the empty tree's "
                f"{_b64(EMPTY_ROOT)}"
            )
        return
    expected = consistency_proof_length(old_size, new_size)
    if len(proof) != expected:
        raise CheckError(
            f"consistency proof has {len(proof)} hashes; from tree size {old_size} to "
            f"{new_size} it needs {expected}"
        )
    path = [bytes(h) for h in proof]
    if old_size & (old_size - 1) == 0:
        path.insert(0, bytes(old_root))
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise CheckError("consistency proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise CheckError("consistency proof is shorter than the path to the root")
    if fr != old_root:
        raise CheckError(
            f"consistency proof does not match the old tree: it computes {_b64(fr)} for size "
            f"{old_size}, the old root is {_b64(old_root)}"
        )
    if sr != new_root:
        raise CheckError(
            f"consistency proof does not lead to the new root: it computes {_b64(sr)} for size "
            f"{new_size}, the new root is {_b64(new_root)}"
        )


# --- checkpoints (C2SP tlog-checkpoint) -----------------------------------------------------------


def _decode_base64(text: str, what: str) -> bytes:
    """Standard base64 with padding, canonical only (one text per byte string)."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise CheckError(f"{what} is not valid base64") from None
    if _b64(data) != text:
        raise CheckError(f"{what} is not canonical base64")
    return data


def _has_control_characters(text: str) -> bool:
    return any(ord(ch) < 0x20 and ch != "\n" for ch in text)


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: who (origin), how many leaves, and the root hash."""

    origin: str
    tree_size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        """The checkpoint's note text (C2SP tlog-checkpoint), every line ending in a newline."""
        if not self.origin or "\n" in self.origin or _has_control_characters(self.origin):
            raise CheckError(f"checkpoint origin {self.origin!r} is empty or has a control char")
        _check_count(self.tree_size, "checkpoint tree size")
        _check_hash(self.root_hash, "checkpoint root hash")
        for line in self.extensions:
            if not line or "\n" in line or _has_control_characters(line):
                raise CheckError(f"checkpoint extension line {line!r} is empty or multi-line")
        lines = [self.origin, str(self.tree_size), _b64(self.root_hash), *self.extensions]
        return "".join(f"{line}\n" for line in lines)


def _parse_decimal(text: str, what: str) -> int:
    if not text or not text.isascii() or not text.isdigit():
        raise CheckError(f"{what} {text!r} is not a decimal number")
    if text != "0" and text.startswith("0"):
        raise CheckError(f"{what} {text!r} has a leading zero")
    return _check_count(int(text), what)


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint's note text, strictly per C2SP tlog-checkpoint."""
    if not text.endswith("\n"):
        raise CheckError("checkpoint text does not end with a newline")
    if _has_control_characters(text):
        raise CheckError("checkpoint text has a control character")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckError(f"checkpoint has {len(lines)} lines, not at least 3")
    for number, line in enumerate(lines, start=1):
        if not line:
            raise CheckError(f"checkpoint line {number} is empty")
    origin, size_line, root_line, *extensions = lines
    tree_size = _parse_decimal(size_line, "checkpoint tree size")
    root_hash = _decode_base64(root_line, "checkpoint root hash")
    if len(root_hash) != HASH_SIZE:
        raise CheckError(f"checkpoint root hash is {len(root_hash)} bytes, not {HASH_SIZE}")
    return Checkpoint(origin, tree_size, root_hash, tuple(extensions))


# --- signed notes and keys (C2SP signed-note, Go's golang.org/x/mod/sumdb/note) -------------------


def valid_key_name(name: str) -> bool:
    """A key name is non-empty and has no space (Unicode), no plus and no control character."""
    return (
        bool(name)
        and "+" not in name
        and not any(ch.isspace() or ord(ch) < 0x20 for ch in name)
        and _is_utf8(name)
    )


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def note_key_id(name: str, algorithm_and_key: bytes) -> int:
    """The key id: SHA-256(name || 0x0A || algorithm byte || public key), first 4 bytes, big end."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + algorithm_and_key).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True)
class VerifierKey:
    """An Ed25519 public key with its name and key id, as a signed-note verifier key."""

    name: str
    key_id: int
    public_key: bytes

    def __post_init__(self) -> None:
        if not valid_key_name(self.name):
            raise CheckError(f"key name {self.name!r} is empty or has a space, plus or control")
        if len(self.public_key) != 32:
            raise CheckError(f"Ed25519 public key is {len(self.public_key)} bytes, not 32")
        computed = note_key_id(self.name, bytes([ED25519_ALGORITHM]) + self.public_key)
        if self.key_id != computed:
            raise CheckError(
                f"verifier key {self.name}: key id {self.key_id:08x} does not match the key "
                f"(its id is {computed:08x})"
            )

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        """Parse "<name>+<hex8 key id>+<base64(0x01 || public key)>" (Go's note.NewVerifier)."""
        text = text.strip()
        name, sep1, rest = text.partition("+")
        id_hex, sep2, key_b64 = rest.partition("+")
        if not sep1 or not sep2:
            raise CheckError(f"verifier key {text!r} is not <name>+<key id>+<key>")
        if not valid_key_name(name):
            raise CheckError(f"verifier key name {name!r} is empty or has a space or control")
        if len(id_hex) != 8 or any(ch not in "0123456789abcdefABCDEF" for ch in id_hex):
            raise CheckError(f"verifier key {name}: key id {id_hex!r} is not 8 hex digits")
        key = _decode_base64(key_b64, f"verifier key {name}")
        if not key or key[0] != ED25519_ALGORITHM:
            raise CheckError(f"verifier key {name} is not an Ed25519 key (algorithm byte 0x01)")
        if len(key) != 33:
            raise CheckError(f"verifier key {name}: Ed25519 key is {len(key) - 1} bytes, not 32")
        return cls(name, int(id_hex, 16), key[1:])

    def __str__(self) -> str:
        encoded = _b64(bytes([ED25519_ALGORITHM]) + self.public_key)
        return f"{self.name}+{self.key_id:08x}+{encoded}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether `signature` is this key's Ed25519 signature of `message`."""
        if len(signature) != 64:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a note: the key's name and id and the signature bytes."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        """The signature line, newline included."""
        encoded = _b64(self.key_id.to_bytes(4, "big") + self.signature)
        return f"{SIGNATURE_DASH} {self.name} {encoded}\n"


@dataclass(frozen=True)
class SignedNote:
    """A note's text (final newline included) and its signatures."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def message(self) -> str:
        """The signed note as sent: text, a blank line, the signature lines."""
        return self.text + "\n" + "".join(sig.line() for sig in self.signatures)


def parse_note(message: str) -> SignedNote:
    """Split a signed note into its text and signatures, strictly per C2SP signed-note.

    Nothing is verified here (see `open_note`).
    """
    if not _is_utf8(message):
        raise CheckError("note is not valid UTF-8")
    if _has_control_characters(message):
        raise CheckError("note has a control character other than newline")
    split = message.rfind("\n\n")
    if split < 0:
        raise CheckError("note has no blank line before its signatures")
    text, block = message[: split + 1], message[split + 2 :]
    if not block:
        raise CheckError("note has no signature lines")
    if not block.endswith("\n"):
        raise CheckError("note's last signature line does not end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise CheckError(f"note has {len(lines)} signatures, more than {MAX_SIGNATURES}")
    signatures = []
    prefix = SIGNATURE_DASH + " "
    for number, line in enumerate(lines, start=1):
        if not line.startswith(prefix):
            raise CheckError(f"note signature line {number} does not start with an em dash")
        name, sep, encoded = line[len(prefix) :].partition(" ")
        if not sep or not encoded:
            raise CheckError(f"note signature line {number} is not '<name> <signature>'")
        if not valid_key_name(name):
            raise CheckError(f"note signature line {number}: key name {name!r} is not valid")
        raw = _decode_base64(encoded, f"note signature line {number}")
        if len(raw) < 5:
            raise CheckError(f"note signature line {number} is too short ({len(raw)} bytes)")
        signatures.append(NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    return SignedNote(text, tuple(signatures))


def _verifier_table(verifiers: Iterable[VerifierKey]) -> dict[tuple[str, int], VerifierKey]:
    table: dict[tuple[str, int], VerifierKey] = {}
    for verifier in verifiers:
        known = table.setdefault((verifier.name, verifier.key_id), verifier)
        if known.public_key != verifier.public_key:
            raise CheckError(
                f"two different verifier keys are named {verifier.name}+{verifier.key_id:08x}"
            )
    return table


def open_note(message: str, verifiers: Iterable[VerifierKey]) -> SignedNote:
    """Parse a signed note and verify it: the note with only its verified signatures.

    At least one signature must be by a known key (same name and key id) and verify; a signature
    by a known key that does not verify refuses the note, whatever the other signatures.
    """
    note = parse_note(message)
    table = _verifier_table(verifiers)
    text = note.text.encode("utf-8")
    verified: list[NoteSignature] = []
    for sig in note.signatures:
        verifier = table.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        if not verifier.verify(text, sig.signature):
            raise CheckError(f"bad signature by {sig.name}+{sig.key_id:08x}")
        if sig not in verified:
            verified.append(sig)
    if not verified:
        signers = ", ".join(f"{s.name}+{s.key_id:08x}" for s in note.signatures)
        known = ", ".join(f"{name}+{kid:08x}" for name, kid in table) or "none"
        raise CheckError(f"no signature by a known key: signed by {signers}; known keys: {known}")
    return SignedNote(note.text, tuple(verified))


def open_checkpoint(message: str, verifiers: Iterable[VerifierKey]) -> Checkpoint:
    """Verify a signed checkpoint note (`open_note`) and parse its text (`parse_checkpoint`)."""
    return parse_checkpoint(open_note(message, verifiers).text)


# --- proof files ----------------------------------------------------------------------------------


def _load_object(data: str | bytes, kind: str, keys: set[str]) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError) as error:
        raise CheckError(f"{kind} proof is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise CheckError(f"{kind} proof is not a JSON object")
    if value.get("kind") != kind:
        raise CheckError(f"proof kind is {value.get('kind')!r}, not {kind!r}")
    missing = sorted(keys - value.keys())
    if missing:
        raise CheckError(f"{kind} proof lacks {', '.join(missing)}")
    unknown = sorted(value.keys() - keys - {"kind"})
    if unknown:
        raise CheckError(f"{kind} proof has unknown fields: {', '.join(unknown)}")
    return value


def _json_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise CheckError(f"{what} is not a string")
    return value


def _json_hashes(value: Any, what: str) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise CheckError(f"{what} is not a list")
    hashes = []
    for position, item in enumerate(value):
        h = _decode_base64(_json_text(item, f"{what} {position}"), f"{what} {position}")
        _check_hash(h, f"{what} {position}")
        hashes.append(h)
    return tuple(hashes)


def _dump(value: dict[str, Any]) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class InclusionProof:
    """Leaf `leaf_index` (an event's canonical bytes) is in the tree of a signed checkpoint."""

    leaf_index: int
    tree_size: int
    leaf_data: bytes
    audit_path: tuple[bytes, ...]
    checkpoint: str
    """The signed checkpoint note the proof was made against."""

    def to_json(self) -> str:
        return _dump(
            {
                "kind": "inclusion",
                "leaf_index": self.leaf_index,
                "tree_size": self.tree_size,
                "leaf_data": _b64(self.leaf_data),
                "audit_path": [_b64(h) for h in self.audit_path],
                "checkpoint": self.checkpoint,
            }
        )

    @classmethod
    def from_json(cls, data: str | bytes) -> InclusionProof:
        value = _load_object(
            data, "inclusion", {"leaf_index", "tree_size", "leaf_data", "audit_path", "checkpoint"}
        )
        return cls(
            leaf_index=_check_count(value["leaf_index"], "leaf_index"),
            tree_size=_check_count(value["tree_size"], "tree_size"),
            leaf_data=_decode_base64(_json_text(value["leaf_data"], "leaf_data"), "leaf_data"),
            audit_path=_json_hashes(value["audit_path"], "audit_path hash"),
            checkpoint=_json_text(value["checkpoint"], "checkpoint"),
        )


@dataclass(frozen=True)
class ConsistencyProof:
    """The tree of the old signed checkpoint is a prefix of the tree of the new one."""

    old_size: int
    new_size: int
    proof: tuple[bytes, ...]
    old_checkpoint: str
    new_checkpoint: str

    def to_json(self) -> str:
        return _dump(
            {
                "kind": "consistency",
                "old_size": self.old_size,
                "new_size": self.new_size,
                "proof": [_b64(h) for h in self.proof],
                "old_checkpoint": self.old_checkpoint,
                "new_checkpoint": self.new_checkpoint,
            }
        )

    @classmethod
    def from_json(cls, data: str | bytes) -> ConsistencyProof:
        value = _load_object(
            data,
            "consistency",
            {"old_size", "new_size", "proof", "old_checkpoint", "new_checkpoint"},
        )
        return cls(
            old_size=_check_count(value["old_size"], "old_size"),
            new_size=_check_count(value["new_size"], "new_size"),
            proof=_json_hashes(value["proof"], "proof hash"),
            old_checkpoint=_json_text(value["old_checkpoint"], "old_checkpoint"),
            new_checkpoint=_json_text(value["new_checkpoint"], "new_checkpoint"),
        )


def check_inclusion(proof: InclusionProof, verifiers: Iterable[VerifierKey]) -> Checkpoint:
    """Verify the proof's checkpoint, that its size is the proof's, and the leaf's inclusion."""
    checkpoint = open_checkpoint(proof.checkpoint, verifiers)
    if checkpoint.tree_size != proof.tree_size:
        raise CheckError(
            f"the proof is for tree size {proof.tree_size} but its checkpoint has size "
            f"{checkpoint.tree_size}"
        )
    verify_inclusion(
        proof.leaf_index,
        proof.tree_size,
        leaf_hash(proof.leaf_data),
        proof.audit_path,
        checkpoint.root_hash,
    )
    return checkpoint


def check_consistency(
    proof: ConsistencyProof, verifiers: Iterable[VerifierKey]
) -> tuple[Checkpoint, Checkpoint]:
    """Verify both checkpoints (same log, the proof's sizes) and that the old is a prefix."""
    keys = list(verifiers)
    old = open_checkpoint(proof.old_checkpoint, keys)
    new = open_checkpoint(proof.new_checkpoint, keys)
    if old.origin != new.origin:
        raise CheckError(f"the checkpoints are of two logs: {old.origin!r} and {new.origin!r}")
    if old.tree_size != proof.old_size:
        raise CheckError(
            f"the proof's old size is {proof.old_size} but the old checkpoint has size "
            f"{old.tree_size}"
        )
    if new.tree_size != proof.new_size:
        raise CheckError(
            f"the proof's new size is {proof.new_size} but the new checkpoint has size "
            f"{new.tree_size}"
        )
    verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof.proof)
    return old, new


# --- command line ---------------------------------------------------------------------------------


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise CheckError(f"cannot read {what} {path}: {error.strerror or error}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckError(f"{what} {path} is not UTF-8") from None


def parse_verifier_keys(text: str, where: object) -> list[VerifierKey]:
    """A key file's verifier keys, one a line; blank lines and `#` comments are skipped. A bad
    line fails as `<where>:<line number>: ...`, so the auditor and the operator find it."""
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(VerifierKey.parse(line))
        except CheckError as error:
            raise CheckError(f"{where}:{number}: {error}") from None
    return keys


def _verifiers_from(args: argparse.Namespace) -> list[VerifierKey]:
    keys = [VerifierKey.parse(text) for text in args.key]
    for path in args.key_file:
        keys.extend(parse_verifier_keys(_read_text(path, "key file"), path))
    if not keys:
        raise CheckError("no verifier key given (--key or --key-file)")
    return keys


def _signers(note: SignedNote) -> str:
    return ", ".join(f"{sig.name}+{sig.key_id:08x}" for sig in note.signatures)


def _run(args: argparse.Namespace) -> str:
    verifiers = _verifiers_from(args)
    if args.command == "checkpoint":
        message = _read_text(args.file, "checkpoint")
        note = open_note(message, verifiers)
        cp = parse_checkpoint(note.text)
        return (
            f"checkpoint {cp.origin}: tree size {cp.tree_size}, root {_b64(cp.root_hash)}, "
            f"signed by {_signers(note)}"
        )
    if args.command == "inclusion":
        proof = InclusionProof.from_json(_read_text(args.file, "proof file"))
        cp = check_inclusion(proof, verifiers)
        note = open_note(proof.checkpoint, verifiers)
        return (
            f"inclusion: leaf {proof.leaf_index} (leaf hash {_b64(leaf_hash(proof.leaf_data))}) "
            f"is in {cp.origin} at tree size {cp.tree_size}, root {_b64(cp.root_hash)}, "
            f"signed by {_signers(note)}"
        )
    consistency = ConsistencyProof.from_json(_read_text(args.file, "proof file"))
    old, new = check_consistency(consistency, verifiers)
    old_note = open_note(consistency.old_checkpoint, verifiers)
    new_note = open_note(consistency.new_checkpoint, verifiers)
    return (
        f"consistency: {old.origin} at tree size {old.tree_size} (root {_b64(old.root_hash)}, "
        f"signed by {_signers(old_note)}) is a prefix of tree size {new.tree_size} "
        f"(root {_b64(new.root_hash)}, signed by {_signers(new_note)})"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlog_check.py",
        description="Check the ledger's signed checkpoints and Merkle proofs, offline.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    helps = {
        "checkpoint": ("FILE", "a signed checkpoint note"),
        "inclusion": ("PROOF_FILE", "an inclusion proof (JSON)"),
        "consistency": ("PROOF_FILE", "a consistency proof (JSON)"),
    }
    for command, (metavar, what) in helps.items():
        sub = commands.add_parser(command, help=f"check {what}")
        sub.add_argument("file", metavar=metavar, help=what)
        sub.add_argument(
            "--key",
            action="append",
            default=[],
            metavar="VERIFIER_KEY",
            help="a trusted verifier key, name+keyid+base64 (repeatable)",
        )
        sub.add_argument(
            "--key-file",
            action="append",
            default=[],
            metavar="FILE",
            help="a file of trusted verifier keys, one per line (repeatable)",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checker: 0 and what was proven on stdout, or 1 and "refused: ..." on stderr."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        print(_run(args))
    except CheckError as error:
        print(f"refused: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
