"""Microseconds the projector's reducer spends per `KpiProgressRecorded`, without Kafka or a store.

The latency run (`bench.kpi_scoring`, (c)) sends one progress event per moved key result per
scorer batch through the relay and the projector, so this per-event cost, times the events a
second, is most of the projector's load. One objective with five key results, each event moving
one of them to a new value (every score a new one, as a live stream makes it):

    .venv/bin/python -m bench.reduce_progress [EVENTS] [--profile]
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from events import okr
from events.commands import KeyResultDefinition
from projections.reducer import reduce_event
from projections.views import ProjectedObjective

START = datetime(2026, 7, 1, tzinfo=UTC)


def messages(events: int) -> list[tuple[okr.OkrEventEnvelope, okr.OkrPayload]]:
    objective_id = uuid.uuid4()
    key_results = [
        okr.KeyResult(
            key_result_id=uuid.uuid4(),
            **KeyResultDefinition(
                title=f"Key result {index}",
                metric="units",
                baseline=0,
                target=1e4,
                deadline=date(2026, 9, 30),
            ).model_dump(),
        )
        for index in range(5)
    ]
    payloads: list[okr.OkrPayload] = [
        okr.ObjectiveCreated(
            title="Benchmark objective",
            owner="bench@example.com",
            team="bench",
            period_start=date(2026, 7, 1),
            period_end=date(2026, 9, 30),
            key_results=key_results,
        ),
        okr.ObjectiveActivated(),
    ]
    payloads += [
        okr.KpiProgressRecorded(
            key_result_id=key_results[index % 5].key_result_id,
            value=float(index),
            kpi_key="bench.kpi.00000",
            observations=3,
            last_kpi_event_id=f"bench-{index:08d}",
            last_offset=index,
        )
        for index in range(events)
    ]
    parsed = []
    for version, payload in enumerate(payloads, start=1):
        header = okr.EventHeader(
            objective_id=objective_id,
            version=version,
            occurred_at=START + timedelta(seconds=version),
            actor="okr-scorer",
            command_id=f"bench-{version}",
        )
        envelope = okr.okr_event(payload, header)
        parsed.append(okr.parse_okr_event(envelope.to_bytes()))
    return parsed


def reduce_all(parsed: Sequence[tuple[okr.OkrEventEnvelope, okr.OkrPayload]]) -> None:
    state: ProjectedObjective | None = None
    for envelope, payload in parsed:
        state = reduce_event(state, envelope, payload).projected


def main(argv: Sequence[str]) -> int:
    events = int(argv[0]) if argv and not argv[0].startswith("-") else 5_000
    parsed = messages(events)
    started = time.perf_counter()
    reduce_all(parsed)
    elapsed = time.perf_counter() - started
    print(f"reduce: {elapsed / len(parsed) * 1e6:.1f} µs per event ({len(parsed):,} events)")
    if "--profile" in argv:
        profile = cProfile.Profile()
        profile.runcall(reduce_all, parsed)
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
