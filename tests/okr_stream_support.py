"""One objective's messages on `okr.events` as the relay publishes them, for the projector's tests.

Envelopes numbered by version, one second apart, with a chain hash; the objective's key results
are kept so that later events can name them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from uuid import UUID, uuid4

from events import okr
from events.commands import KeyResultDefinition

START = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)
TOPIC = "okr.events"


def definition(index: int = 0, **fields: object) -> KeyResultDefinition:
    """A plain increase from 0 to 100, unless `fields` say otherwise."""
    return KeyResultDefinition.model_validate(
        {"title": f"Key result {index}", "metric": "units", "baseline": 0, "target": 100} | fields
    )


@dataclass
class ObjectiveStream:
    objective_id: UUID = field(default_factory=uuid4)
    partition: int = 0
    key_results: list[UUID] = field(default_factory=list)
    version: int = 0
    published: list[bytes] = field(default_factory=list)

    def publish(
        self, payload: okr.OkrPayload, *, actor: str = "okr-scorer", reason: str | None = None
    ) -> bytes:
        self.version += 1
        header = okr.EventHeader(
            objective_id=self.objective_id,
            version=self.version,
            occurred_at=START + timedelta(seconds=self.version, microseconds=self.version * 7),
            actor=actor,
            command_id=f"command-{self.objective_id}-{self.version}",
            reason=reason,
            chain_hash=f"{self.version:064x}",
        )
        value = okr.okr_event(payload, header).to_bytes()
        self.published.append(value)
        return value

    def created(
        self,
        definitions: Sequence[KeyResultDefinition],
        key_result_ids: Sequence[UUID] | None = None,
    ) -> bytes:
        self.key_results = list(key_result_ids or [uuid4() for _ in definitions])
        return self.publish(
            okr.ObjectiveCreated(
                title="Grow",
                owner="alice@example.com",
                team="growth",
                period_start=date(2026, 7, 1),
                period_end=date(2026, 9, 30),
                key_results=[
                    okr.KeyResult(key_result_id=key_result_id, **spec.model_dump())
                    for key_result_id, spec in zip(self.key_results, definitions, strict=True)
                ],
            )
        )

    def progress(
        self,
        key_result_id: UUID,
        value: float,
        *,
        observations: int = 1,
        last_offset: int | None = None,
    ) -> bytes:
        return self.publish(
            okr.KpiProgressRecorded(
                key_result_id=key_result_id,
                value=value,
                kpi_key="sales.units",
                observations=observations,
                last_kpi_event_id=f"kpi-{self.version + 1}",
                last_offset=last_offset,
            )
        )
