"""API keys: generated, stored only as SHA-256 digests, looked up per request, rotated live.

Keys come from two places: the keys file (`OKR_API_KEYS_FILE`, a JSON list of
`{"principal", "role", "sha256"}`), re-read whenever it changes so a key is added or revoked
without a restart, and the inline setting `OKR_API_KEYS` (`principal:role:sha256hex,...`), fixed
for the process's life. Why a plain SHA-256 and not bcrypt: docs/decisions/0010-api-keys.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from services.access.principals import Principal, Role, check_principal_name

log = logging.getLogger(__name__)


class KeySettings(Protocol):
    """What `ApiKeys.from_settings` reads of `services.settings.Settings`: said here rather than
    imported, because the settings validate `OKR_API_KEYS` with this package's parser, so
    importing them back would make `access` and `settings` a cycle."""

    @property
    def api_keys_file(self) -> Path: ...

    @property
    def api_keys(self) -> str: ...


KEY_PREFIX = "okr_"
"""Makes a leaked key recognisable (secret scanners, logs) and tells it apart from other tokens."""
KEY_BYTES = 32
"""256 bits of randomness: no dictionary or brute force reaches it, which is why a fast hash
suffices (docs/decisions/0010-api-keys.md)."""
MAX_KEY_LENGTH = 512
"""Longer presented keys are refused unhashed; ours are 47 characters."""

PrincipalName = Annotated[str, AfterValidator(check_principal_name)]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the key, hex.")]


class ApiKeysError(Exception):
    """The keys file or the inline keys cannot be read; the message names where and why."""


class ApiKeyEntry(BaseModel):
    """One key as stored: who it authenticates, with which role, and the digest of the key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    principal: PrincipalName
    role: Role
    sha256: Sha256Hex
    created_at: datetime | None = Field(None, description="When `okr keys add` made it.")


ENTRIES = TypeAdapter(list[ApiKeyEntry])


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    """A new key: the prefix and 32 random bytes, URL-safe (fits any header or shell)."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


# --- reading --------------------------------------------------------------------------------------


def parse_keys_file(path: Path) -> list[ApiKeyEntry]:
    """The file's entries; a missing file has none; anything else wrong is an `ApiKeysError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise ApiKeysError(f"API keys file {path}: cannot read it: {error}") from None
    return parse_keys_json(text, str(path))


def parse_keys_json(text: str, origin: str) -> list[ApiKeyEntry]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ApiKeysError(f"API keys file {origin}: not JSON: {error}") from None
    try:
        entries = ENTRIES.validate_python(data)
    except ValidationError as error:
        problems = "; ".join(
            f"entry {'.'.join(str(part) for part in problem['loc']) or '(root)'}: {problem['msg']}"
            for problem in error.errors(include_url=False)
        )
        raise ApiKeysError(
            f"API keys file {origin}: expected a JSON list of "
            f'{{"principal", "role", "sha256"}} objects: {problems}'
        ) from None
    _refuse_duplicate_digests(entries, origin)
    return entries


def parse_inline_keys(text: str) -> list[ApiKeyEntry]:
    """`principal:role:sha256hex,...`, the `OKR_API_KEYS` form; empty means none."""
    entries = []
    for position, item in enumerate(part.strip() for part in text.split(",")):
        if not item:
            continue
        fields = item.split(":")
        if len(fields) != 3:
            raise ApiKeysError(f"API key #{position + 1} {item!r} is not principal:role:sha256hex")
        principal, role, digest = fields
        try:
            entries.append(
                ApiKeyEntry.model_validate({"principal": principal, "role": role, "sha256": digest})
            )
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}"
                for problem in error.errors(include_url=False)
            )
            raise ApiKeysError(f"API key #{position + 1} of {principal!r}: {problems}") from None
    _refuse_duplicate_digests(entries, "inline keys")
    return entries


def _refuse_duplicate_digests(entries: Sequence[ApiKeyEntry], origin: str) -> None:
    """One key, two principals: which one acts would be arbitrary, so neither is accepted."""
    seen: dict[str, str] = {}
    for entry in entries:
        other = seen.setdefault(entry.sha256, entry.principal)
        if other != entry.principal:
            raise ApiKeysError(
                f"{origin}: the same key is given to {other!r} and {entry.principal!r}"
            )


def find_principal(entries: Sequence[ApiKeyEntry], key: str) -> Principal | None:
    """The principal whose digest matches, compared in constant time against every entry."""
    if not key or len(key) > MAX_KEY_LENGTH:
        return None
    digest = hash_key(key)
    found: ApiKeyEntry | None = None
    for entry in entries:
        if hmac.compare_digest(entry.sha256, digest):
            found = entry
    return Principal(found.principal, found.role) if found is not None else None


FileSignature = tuple[int, int, int]
"""(inode, size, mtime in ns): an atomic replace changes the inode even within one mtime tick."""


def _signature(path: Path) -> FileSignature | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


class ApiKeys:
    """The keys a process accepts: inline ones, and the file's, re-read when the file changes.

    A file that becomes unreadable while running keeps the last good keys (and logs once per
    change), like a server reload that refuses a broken configuration: a half-saved edit must not
    lock every client out. A file deleted on purpose revokes its keys.
    """

    def __init__(self, path: Path, inline: Sequence[ApiKeyEntry] = ()) -> None:
        self.path = path
        self.inline = tuple(inline)
        self._signature = _signature(path)
        self._from_file = tuple(parse_keys_file(path))
        _refuse_duplicate_digests([*self.inline, *self._from_file], f"{path} with the inline keys")

    @classmethod
    def from_settings(cls, settings: KeySettings) -> ApiKeys:
        """Raises `ApiKeysError` at start for a malformed file or inline entry."""
        return cls(settings.api_keys_file, parse_inline_keys(settings.api_keys))

    def entries(self) -> tuple[ApiKeyEntry, ...]:
        self._refresh()
        return self.inline + self._from_file

    def principal_for(self, key: str) -> Principal | None:
        return find_principal(self.entries(), key)

    def _refresh(self) -> None:
        signature = _signature(self.path)
        if signature == self._signature:
            return
        self._signature = signature
        try:
            entries = parse_keys_file(self.path)
            _refuse_duplicate_digests([*self.inline, *entries], f"{self.path} with the inline keys")
        except ApiKeysError as error:
            log.error("keeping the previous API keys: %s", error)
            return
        self._from_file = tuple(entries)
        log.info("API keys file %s reloaded: %d keys", self.path, len(entries))


# --- writing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedKey:
    """A key just created: the plaintext exists only here, to be shown once."""

    key: str
    entry: ApiKeyEntry


def add_key(
    path: Path, principal: str, role: Role, *, replace_principal: bool = False
) -> IssuedKey:
    """Append a new key for `principal` to the file (created if missing), atomically, mode 600.

    `replace_principal` first drops the principal's earlier keys: for a client that makes itself
    a key on every run (`okr demo`) and would otherwise pile them up.
    """
    key = generate_key()
    entry = ApiKeyEntry(
        principal=principal, role=role, sha256=hash_key(key), created_at=datetime.now(UTC)
    )
    with _locked(path):
        entries = parse_keys_file(path)
        if replace_principal:
            entries = [kept for kept in entries if kept.principal != principal]
        _write_atomically(path, [*entries, entry])
    return IssuedKey(key, entry)


def revoke_keys(path: Path, principal: str) -> int:
    """Drop every key of `principal` from the file; how many were dropped."""
    with _locked(path):
        entries = parse_keys_file(path)
        kept = [entry for entry in entries if entry.principal != principal]
        if len(kept) != len(entries):
            _write_atomically(path, kept)
    return len(entries) - len(kept)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Two writers (an admin and `okr demo`) must not lose each other's key: read-modify-write
    under an exclusive lock on a sibling file (the keys file itself is replaced, not locked)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _write_atomically(path: Path, entries: Sequence[ApiKeyEntry]) -> None:
    """A reader (the running service) sees the old file or the new one, never half of one."""
    text = json.dumps(
        [entry.model_dump(mode="json", exclude_none=True) for entry in entries], indent=2
    )
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(text + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def can_write(path: Path) -> bool:
    """Whether this process could add a key to the file (it exists writable, or can be made)."""
    if path.exists():
        return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    return os.access(parent, os.W_OK)
