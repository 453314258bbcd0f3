"""KPI events, as other services publish them on `kpi.events`: one measurement per message.

Any service can publish with any Kafka client: the value is this JSON object (UTF-8), the key is
the `kpi_key` (so one KPI's events share a partition and are scored in order). `event_id` is the
deduplication key: an event resent with the same id changes nothing, so producers may retry
freely. A message that does not follow this contract is dead-lettered on `okr.dlq` with the reason.
These models import nothing of the service: other teams can vendor this package.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, Field

from events.commands import NO_NUL, Contract, KpiKey, MetricText, ShortText, refuse_nul

SCHEMA_VERSION: Literal[1] = 1
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)
"""Bounds that keep every accepted time representable once converted to UTC."""

# No schema pattern on the key: pydantic would render it as `patternProperties`.
DimensionName = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(refuse_nul)]
DimensionValue = Annotated[
    str, Field(max_length=200, json_schema_extra=NO_NUL), AfterValidator(refuse_nul)
]


class KpiEvent(Contract):
    """One observation of a KPI; the value on `kpi.events` (key = `kpi_key`)."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Version of this contract.")
    event_id: ShortText = Field(
        description="Unique id of this observation, chosen by the producer; the dedupe key."
    )
    kpi_key: KpiKey
    value: float = Field(
        strict=True, description="The measured value: a finite JSON number (not a string)."
    )
    observed_at: AwareDatetime = Field(
        strict=True,  # a JSON number would be read as Unix seconds or milliseconds, by guessing
        ge=EARLIEST,
        le=LATEST,
        description="When it was measured: ISO 8601 with a UTC offset, e.g. 2026-07-14T09:30:00Z.",
    )
    source: ShortText = Field(description="Who measured it.")
    unit: MetricText | None = Field(None, description="Unit of `value`, e.g. 'units'.")
    dimensions: dict[DimensionName, DimensionValue] = Field(
        default_factory=dict,
        max_length=50,
        description="Free labels (region, channel...); stored with the observation, not scored.",
    )

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @property
    def key(self) -> bytes:
        """The Kafka key to publish it with."""
        return self.kpi_key.encode()
