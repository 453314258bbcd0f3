"""The transparency log's signing key: signs checkpoints as C2SP signed notes, Ed25519.

The key file holds one line, Go's note signer key text (golang.org/x/mod/sumdb/note NewSigner):

    PRIVATE+KEY+<name>+<8 hex digits key id>+<base64(0x01 || 32-byte Ed25519 seed)>

so the same file works with Go's tools. It is created 0600 (with O_EXCL, never overwriting),
in a directory made 0700 if new, and a key file that group or others may read or write is refused
rather than used: whoever can read it can sign checkpoints in the log's name.

A rotation writes a new key at the same path and appends the old key's verifier key to
`<path>.verifiers`, one per line, kept forever: checkpoints signed before the rotation still check
against `known_verifiers`. Error messages never contain the private key.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .tlog_check import (
    ED25519_ALGORITHM,
    CheckError,
    Checkpoint,
    NoteSignature,
    SignedNote,
    VerifierKey,
    note_key_id,
    parse_verifier_keys,
    valid_key_name,
)

PRIVATE_KEY_PREFIX = "PRIVATE+KEY+"


class SigningKeyError(Exception):
    """The signing key cannot be used: missing, malformed, or readable by others."""


class CheckpointSigner:
    """Signs checkpoints with one named Ed25519 key, byte for byte as Go's note.Sign does."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        if not valid_key_name(name):
            raise SigningKeyError(
                f"key name {name!r} must be non-empty, without spaces, plus signs or controls"
            )
        self._name = name
        self._private_key = private_key
        public = private_key.public_key().public_bytes_raw()
        self._verifier = VerifierKey(
            name, note_key_id(name, bytes([ED25519_ALGORITHM]) + public), public
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def verifier(self) -> VerifierKey:
        """The public half, as a verifier key (its `str` is what auditors are given)."""
        return self._verifier

    def sign_note(self, text: str) -> str:
        """The signed note of `text` (ending with a newline): text, blank line, signature line."""
        if not text.endswith("\n"):
            raise ValueError("a note's text must end with a newline")
        signature = self._private_key.sign(text.encode("utf-8"))
        line = NoteSignature(self._name, self._verifier.key_id, signature)
        return SignedNote(text, (line,)).message()

    def sign(self, checkpoint: Checkpoint) -> str:
        """The signed checkpoint note: its text, a blank line, this key's signature line."""
        return self.sign_note(checkpoint.text())

    def key_text(self) -> str:
        """The private key as Go's note signer key text. Secret: for the key file only."""
        seed = self._private_key.private_bytes_raw()
        encoded = base64.b64encode(bytes([ED25519_ALGORITHM]) + seed).decode("ascii")
        return f"{PRIVATE_KEY_PREFIX}{self._name}+{self._verifier.key_id:08x}+{encoded}"

    def __repr__(self) -> str:
        return f"CheckpointSigner({self._verifier})"


def generate_signer(name: str) -> CheckpointSigner:
    """A signer with a fresh random key."""
    return CheckpointSigner(name, Ed25519PrivateKey.generate())


def signer_from_text(text: str) -> CheckpointSigner:
    """The signer of a key text "PRIVATE+KEY+<name>+<hex8 key id>+<base64(0x01 || seed)>"."""
    text = text.strip()
    if not text.startswith(PRIVATE_KEY_PREFIX):
        raise SigningKeyError("signing key does not start with PRIVATE+KEY+")
    name, sep1, rest = text[len(PRIVATE_KEY_PREFIX) :].partition("+")
    id_hex, sep2, encoded = rest.partition("+")
    if not sep1 or not sep2:
        raise SigningKeyError("signing key is not PRIVATE+KEY+<name>+<key id>+<key>")
    if len(id_hex) != 8 or any(ch not in "0123456789abcdefABCDEF" for ch in id_hex):
        raise SigningKeyError(f"signing key {name}: key id is not 8 hex digits")
    try:
        raw = base64.b64decode(encoded.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise SigningKeyError(f"signing key {name}: the key is not valid base64") from None
    if not raw or raw[0] != ED25519_ALGORITHM:
        raise SigningKeyError(f"signing key {name} is not an Ed25519 key (algorithm byte 0x01)")
    if len(raw) != 33:
        raise SigningKeyError(f"signing key {name}: the Ed25519 seed is not 32 bytes")
    try:
        signer = CheckpointSigner(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
    except CheckError as error:
        raise SigningKeyError(f"signing key {name}: {error}") from None
    if signer.verifier.key_id != int(id_hex, 16):
        raise SigningKeyError(
            f"signing key {name}: key id {id_hex} does not match the key "
            f"(its id is {signer.verifier.key_id:08x})"
        )
    return signer


def _read_private(path: Path) -> str:
    """The key file's text, after checking on the open file that only its owner may read it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as error:
        raise SigningKeyError(f"cannot open signing key {path}: {error.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        mode = os.fstat(file.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise SigningKeyError(f"signing key {path} is not a regular file")
        if mode & 0o077:
            raise SigningKeyError(
                f"signing key {path} has mode {stat.S_IMODE(mode):04o}: group or others may "
                f"read or write it; run `chmod 600 {path}` (and make sure nobody copied it)"
            )
        data = file.read()
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise SigningKeyError(f"signing key {path} is not ASCII text") from None


def _load(path: Path, name: str) -> CheckpointSigner:
    try:
        signer = signer_from_text(_read_private(path))
    except SigningKeyError as error:
        raise SigningKeyError(f"{path}: {error}") from None
    if signer.name != name:
        raise SigningKeyError(f"signing key {path} is for the log {signer.name!r}, not {name!r}")
    return signer


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_private_directory(directory: Path) -> None:
    if directory.exists():
        return
    directory.mkdir(parents=True, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)


def _write_new(path: Path, text: str) -> None:
    """Write a new 0600 file; fails if it exists (O_EXCL)."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def load_or_create_signing_key(path: Path, name: str) -> CheckpointSigner:
    """The signer whose key is at `path`, creating the key (0600) if there is no file yet."""
    path = Path(path)
    if path.exists():
        return _load(path, name)
    _make_private_directory(path.parent)
    signer = generate_signer(name)
    try:
        _write_new(path, signer.key_text() + "\n")
    except FileExistsError:
        return _load(path, name)
    _fsync_directory(path.parent)
    return signer


def verifiers_path(path: Path) -> Path:
    """Where the verifier keys of the keys `path` held before are kept: `<path>.verifiers`."""
    path = Path(path)
    return path.with_name(path.name + ".verifiers")


def _read_verifiers(path: Path) -> list[VerifierKey]:
    file = verifiers_path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    try:
        return parse_verifier_keys(text, file)
    except CheckError as error:
        raise SigningKeyError(str(error)) from None


def rotate_signing_key(path: Path, name: str) -> tuple[CheckpointSigner, VerifierKey]:
    """Replace the key at `path` by a new one; keep the old verifier in `<path>.verifiers`.

    Returns (the new signer, the old key's verifier). The old verifier is appended (and synced)
    before the key file is replaced, so a crash in between loses no verifier.
    """
    path = Path(path)
    if not path.exists():
        raise SigningKeyError(f"no signing key at {path} to rotate")
    old = signer_from_text(_read_private(path))
    old_verifier = old.verifier
    if old_verifier not in _read_verifiers(path):
        file = verifiers_path(path)
        unterminated = file.exists() and not file.read_bytes().endswith(b"\n")
        line = ("\n" if unterminated and file.stat().st_size else "") + f"{old_verifier}\n"
        fd = os.open(file, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
    new = generate_signer(name)
    staging = path.with_name(path.name + ".new")
    staging.unlink(missing_ok=True)
    _write_new(staging, new.key_text() + "\n")
    os.replace(staging, path)
    _fsync_directory(path.parent)
    return new, old_verifier


def known_verifiers(path: Path, current: CheckpointSigner) -> list[VerifierKey]:
    """The current key's verifier, then every earlier key's (from `<path>.verifiers`)."""
    keys = [current.verifier]
    for key in _read_verifiers(path):
        if key not in keys:
            keys.append(key)
    return keys
