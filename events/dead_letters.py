"""Dead letters, as published on `okr.dlq`: a message no consumer can ever process, and its origin.

A dead letter keeps the original bytes exactly (text when they are UTF-8, base64 otherwise) and
where they came from (topic, partition, offset), so an operator can read why it failed, fix the
sender, and replay the very same message. Consumers are at-least-once: after a crash the same
message may be dead-lettered twice; (origin_topic, origin_partition, origin_offset) identifies it.
These models import nothing of the service: other teams can vendor this package.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION: Literal[1] = 1

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

ByteEncoding = Literal["utf-8", "base64"]


class Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RawBytes(Contract):
    """Bytes as JSON can carry them: readable text when possible, base64 when not."""

    data: str = Field(description="The bytes, decoded as UTF-8 text or encoded as base64.")
    encoding: ByteEncoding = Field(description="How `data` maps back to the original bytes.")

    @model_validator(mode="after")
    def _base64_is_valid(self) -> RawBytes:
        if self.encoding == "base64":
            try:
                base64.b64decode(self.data, validate=True)
            except binascii.Error as error:
                raise ValueError(f"data is not valid base64: {error}") from None
        return self

    @classmethod
    def of(cls, raw: bytes) -> RawBytes:
        try:
            return cls(data=raw.decode("utf-8"), encoding="utf-8")
        except UnicodeDecodeError:
            return cls(data=base64.b64encode(raw).decode("ascii"), encoding="base64")

    def to_bytes(self) -> bytes:
        """The original bytes, e.g. to replay the message once its sender is fixed."""
        if self.encoding == "base64":
            return base64.b64decode(self.data, validate=True)
        return self.data.encode("utf-8")


class DeadLetterHeader(Contract):
    name: str
    value: RawBytes | None = Field(description="None when the Kafka header had a null value.")


class DeadLetter(Contract):
    """The value on `okr.dlq` (key = the original message's key, so it lands beside its kin)."""

    schema_version: Literal[1] = SCHEMA_VERSION
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
    failed_at: datetime = Field(description="When the consumer dead-lettered it (UTC).")
