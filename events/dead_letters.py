"""Dead letters, as published on `okr.dlq`: a message no consumer can ever process, and its origin.

A dead letter keeps the original bytes (text when they are UTF-8, base64 otherwise) and where they
came from (topic, partition, offset), so an operator can read why it failed, fix the sender, and
replay the very same message. A message too large for that (a dead letter must itself fit on
`okr.dlq`) keeps a bounded prefix of each part instead, with the part's size and SHA-256: enough
to find the original on its topic and to prove which one it was. Consumers are at-least-once:
after a crash the same message may be dead-lettered twice; (origin_topic, origin_partition,
origin_offset) identifies it. These models import nothing of the service: other teams can vendor
this package.

Schema version 2 added `size`, `sha256` and `truncated` to the bytes and `headers_dropped` to the
letter; a letter of version 1 reads as one whose parts are all whole.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION: Literal[2] = 2

DeadLetterReason = Literal[
    "empty",
    "not_json",
    "not_an_object",
    "unsupported_schema_version",
    "unknown_type",
    "missing_id",
    "schema_violation",
    "processing_failed",
]
"""Why a message was dead-lettered:

- `empty`: no value at all (a tombstone or zero bytes).
- `not_json`: the value is not UTF-8 JSON.
- `not_an_object`: JSON, but not an object.
- `unsupported_schema_version`: an envelope version this consumer does not read.
- `unknown_type`: the message's `type` is missing or not one the contract defines.
- `missing_id`: no usable id (command id, event id) to answer to or to deduplicate on.
- `schema_violation`: fields violate the contract and there is nobody to send a rejection to.
- `processing_failed`: valid, but processing raised an error that retrying cannot cure (a bug).
"""

EVENT_STORE_ORIGIN = "okr-event-store"
"""`origin_topic` of a stored event that a follower of the event store's notification log (the
scorer's bindings follower) could not process: the partition is 0 and the offset is the event's
notification id; the key is the objective id and the value the stored event's state."""

ByteEncoding = Literal["utf-8", "base64"]


class Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TruncatedBytesError(ValueError):
    """Only a prefix of the original bytes was kept: they cannot be rebuilt from the letter."""


class RawBytes(Contract):
    """Bytes as JSON can carry them: readable text when possible, base64 when not; whole, or a
    bounded prefix with the size and digest of the whole."""

    data: str = Field(description="The bytes (or their first bytes), as UTF-8 text or base64.")
    encoding: ByteEncoding = Field(description="How `data` maps back to the original bytes.")
    truncated: bool = Field(False, description="True when `data` holds only a prefix.")
    size: int | None = Field(None, ge=0, description="Length of the original bytes.")
    sha256: str | None = Field(
        None, pattern="^[0-9a-f]{64}$", description="SHA-256 of the original bytes, hex."
    )

    @model_validator(mode="after")
    def _base64_is_valid(self) -> RawBytes:
        if self.encoding == "base64":
            try:
                base64.b64decode(self.data, validate=True)
            except binascii.Error as error:
                raise ValueError(f"data is not valid base64: {error}") from None
        return self

    @classmethod
    def of(cls, raw: bytes, *, keep: int | None = None) -> RawBytes:
        """`raw` whole, or (when longer than `keep` bytes) its first `keep` bytes at most."""
        digest = {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
        if keep is None or len(raw) <= keep:
            return cls(**_readable(raw), **digest)
        return cls(**_readable(_utf8_prefix(raw, keep)), truncated=True, **digest)

    def to_bytes(self) -> bytes:
        """The original bytes, e.g. to replay the message once its sender is fixed."""
        if self.truncated:
            raise TruncatedBytesError(
                f"only the first bytes of {self.size} were kept (sha256 {self.sha256})"
            )
        if self.encoding == "base64":
            return base64.b64decode(self.data, validate=True)
        return self.data.encode("utf-8")


def _readable(raw: bytes) -> dict[str, str]:
    try:
        return {"data": raw.decode("utf-8"), "encoding": "utf-8"}
    except UnicodeDecodeError:
        return {"data": base64.b64encode(raw).decode("ascii"), "encoding": "base64"}


def _utf8_prefix(raw: bytes, keep: int) -> bytes:
    """At most `keep` bytes, cut before a split UTF-8 character so text stays text."""
    prefix = raw[:keep]
    for cut in range(4):
        candidate = prefix[: len(prefix) - cut]
        try:
            candidate.decode("utf-8")
        except UnicodeDecodeError:
            continue
        return candidate
    return prefix


class DeadLetterHeader(Contract):
    name: str
    value: RawBytes | None = Field(description="None when the Kafka header had a null value.")


class DeadLetter(Contract):
    """The value on `okr.dlq` (key = the original message's key, so it lands beside its kin)."""

    schema_version: Literal[1, 2] = SCHEMA_VERSION
    reason: DeadLetterReason = Field(description="Machine-readable class of failure.")
    error: str = Field(description="What exactly was wrong, for the person fixing the sender.")
    consumer_group: str | None = Field(None, description="The consumer that gave up on it.")
    origin_topic: str
    origin_partition: int = Field(ge=0)
    origin_offset: int = Field(ge=0)
    origin_timestamp: datetime | None = Field(
        None, description="The original message's Kafka timestamp."
    )
    key: RawBytes | None = Field(description="The original key; None when it had none.")
    value: RawBytes | None = Field(description="The original value; None for a tombstone.")
    headers: list[DeadLetterHeader] = Field(default_factory=list)
    headers_dropped: int = Field(
        0, ge=0, description="Headers left out (after the kept ones) to keep the letter small."
    )
    failed_at: datetime = Field(description="When the consumer dead-lettered it (UTC).")
