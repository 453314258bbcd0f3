"""Exactly-once KPI scoring under SIGKILL: `okr scorer` killed at random points, restarted.

50,000 KPI events (with resent duplicates and observations outside the period) stream onto
`kpi.events` over several partitions while the scorer process is killed (SIGKILL: no clean-up, a
transaction cut anywhere) and restarted, again and again. The final key result values must equal
those of an undisturbed run over the same events, and no sum may count an event twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import signal
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from events import commands as wire
from events import topics
from projections.backoff import Backoff
from services.commands.application import OkrApplication
from services.kafka.admin import ensure_topics
from services.scoring.bindings import follow_bindings, run_bindings_follower
from services.scoring.scorer import KpiScorer, kpi_reader, run_scorer
from services.settings import Settings
from tests.kafka_support import eventually
from tests.kpi_support import (
    AGGREGATIONS,
    PERIOD_END,
    PERIOD_START,
    as_message,
    create_bound_objective,
    current_values,
    kpi_event,
    last_offsets,
    produce,
    progress_events,
)

pytestmark = [pytest.mark.fault, pytest.mark.slow]

EVENTS = 50_000
CHUNK = 1_000
KPIS = 40
OBJECTIVES = 20
KEY_RESULTS_PER_OBJECTIVE = 3
DUPLICATE_SHARE = 0.03
OUTSIDE_SHARE = 0.03
KILLS = 5
PACE_S = 0.2
"""Between chunks, so the stream flows while the scorer runs rather than all at once."""
SEED = 20260714
STARTUP_S = 60.0
SHUTDOWN_S = 30.0
"""Well above the scorer's bound (two Kafka clients closed within `CLOSE_TIMEOUT_S` each, plus
the batch in flight), so only a real hang fails, on a machine as loaded as a full-suite run."""


# --- the stream -----------------------------------------------------------------------------------


def build_stream(rng: random.Random, kpis: list[str]) -> list[dict[str, Any]]:
    """The events in the order they are sent: originals, with resent copies mixed in later."""
    start = datetime(PERIOD_START.year, PERIOD_START.month, PERIOD_START.day, tzinfo=UTC)
    span_s = (PERIOD_END - PERIOD_START).days * 86_400
    stream: list[dict[str, Any]] = []
    for index in range(EVENTS):
        if stream and rng.random() < DUPLICATE_SHARE:
            stream.append(rng.choice(stream[-2_000:]))  # resent, as a producer retry would
            continue
        offset_s = rng.uniform(0, span_s)
        if rng.random() < OUTSIDE_SHARE:
            offset_s = -offset_s if rng.random() < 0.5 else span_s + 86_400 + offset_s
        stream.append(
            kpi_event(
                rng.choice(kpis),
                round(rng.uniform(-50, 1_000), 3),
                event_id=f"evt-{index:06d}",
                observed_at=start + timedelta(seconds=offset_s),
            )
        )
    return stream


def in_period(event: dict[str, Any]) -> bool:
    observed = datetime.fromisoformat(event["observed_at"])
    start = datetime(PERIOD_START.year, PERIOD_START.month, PERIOD_START.day, tzinfo=UTC)
    return start <= observed < start + timedelta(days=(PERIOD_END - PERIOD_START).days + 1)


async def stream_in_chunks(
    settings: Settings, stream: list[dict[str, Any]]
) -> list[tuple[int, int]]:
    """Publish chunk by chunk, pausing between chunks, so the scorer is killed mid-stream."""
    written: list[tuple[int, int]] = []
    for first in range(0, len(stream), CHUNK):
        if first:
            await asyncio.sleep(PACE_S)
        written += await produce(settings, map(as_message, stream[first : first + CHUNK]))
    return written


# --- the scorer process ---------------------------------------------------------------------------


def scorer_environment(settings: Settings) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("OKR_")}
    return env | {
        "OKR_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "OKR_TOPIC_PREFIX": settings.topic_prefix,
        "OKR_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "OKR_EVENT_STORE_URL": settings.event_store_url,
        "OKR_READ_STORE_URL": settings.read_store_url,
        "PYTHONFAULTHANDLER": "1",  # SIGABRT dumps every thread's stack into the log
    }


def stop_gracefully(process: subprocess.Popen[bytes], log: Path) -> int:
    """SIGTERM, and the exit code. The scorer bounds its shutdown (`CLOSE_TIMEOUT_S` per Kafka
    client, one batch in flight); one that still hangs is a bug, so it fails the test, with the
    stacks of its threads (SIGABRT: faulthandler) and the end of its log."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=SHUTDOWN_S)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        process.wait(timeout=10)
        pytest.fail(f"okr scorer did not stop within {SHUTDOWN_S}s:\n{log.read_text()[-6000:]}")


@contextlib.contextmanager
def scorer_processes(
    settings: Settings, log: Path
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Starts `okr scorer` processes (one at a time); any still running at the end is killed."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.cli.main", "scorer"],
                env=scorer_environment(settings),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()


def scored_total(application: OkrApplication, settings: Settings) -> int:
    positions = kpi_reader(application).positions(settings.topic(topics.KPI_EVENTS))
    return sum(positions.values())


@contextlib.asynccontextmanager
async def undisturbed(settings: Settings, application: OkrApplication) -> AsyncIterator[None]:
    """The reference: a scorer and follower in this process, never interrupted, own group."""
    fast = Backoff(first_s=0.05, max_s=0.5)
    tasks = [
        asyncio.create_task(
            run_scorer(
                settings,
                application,
                group_id=f"reference-{uuid.uuid4().hex}",
                backoff=fast,
                scorer=KpiScorer(application),
            )
        ),
        asyncio.create_task(run_bindings_follower(settings, application, backoff=fast)),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def scored_up_to_offsets(
    application: OkrApplication, settings: Settings, offsets: dict[int, int]
) -> None:
    topic = settings.topic(topics.KPI_EVENTS)

    async def done() -> bool:
        stored = await asyncio.to_thread(kpi_reader(application).positions, topic)
        return all(stored.get(p, 0) > offset for p, offset in offsets.items())

    await eventually(done, f"scoring up to {offsets}", deadline_s=120)


# --- the test -------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def killed_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """The killed scorer's store: SQLite (a transaction cut by SIGKILL leaves a WAL tail) or
    PostgreSQL (the server rolls back the dead connection's transaction)."""
    update: dict[str, Any] = {"topic_partitions": 4}
    if request.param == "postgres":
        update["event_store_url"] = request.getfixturevalue("postgres_database")
    return settings.model_copy(update=update)


async def test_scorer_killed_at_random_points_ends_where_an_undisturbed_run_ends(
    killed_settings: Settings, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    reference_settings = killed_settings.model_copy(
        update={"event_store_url": f"sqlite:///{tmp_path / 'reference.sqlite'}"}
    )
    await ensure_topics(killed_settings)
    killed, reference = OkrApplication(killed_settings), OkrApplication(reference_settings)
    try:
        kpis = [f"kpi.{index:02d}.{uuid.uuid4().hex[:6]}" for index in range(KPIS)]
        bound_kpis = kpis[: KPIS - 4]  # a few KPIs nobody binds
        objective_ids = [uuid.uuid4() for _ in range(OBJECTIVES)]
        bindings: dict[UUID, list[tuple[str, wire.Aggregation]]] = {}
        for index, objective_id in enumerate(objective_ids):
            bindings[objective_id] = [
                (
                    bound_kpis[(index * KEY_RESULTS_PER_OBJECTIVE + k) % len(bound_kpis)],
                    AGGREGATIONS[(index + k) % len(AGGREGATIONS)],
                )
                for k in range(KEY_RESULTS_PER_OBJECTIVE)
            ]
            for application in (killed, reference):
                create_bound_objective(
                    application, bindings[objective_id], objective_id=objective_id
                )
        stream = build_stream(rng, kpis)
        # Bindings known before the stream starts, in both stores: `outside_period` and `unbound`
        # count against the bindings an observation met when it arrived (values do not depend on
        # that: a later binding back-fills), so only then are the counters comparable.
        for application in (killed, reference):
            await asyncio.to_thread(follow_bindings, application)

        # Each life of the scorer sees its share of the stream flow in, starts scoring it, and
        # is killed at a random moment; the last life gets the rest and finishes.
        share = -(-len(stream) // (KILLS + 1))
        shares = [stream[i * share : (i + 1) * share] for i in range(KILLS + 1)]
        written: list[tuple[int, int]] = []
        with scorer_processes(killed_settings, tmp_path / "scorer.log") as start_scorer:
            for life in range(KILLS):
                process = start_scorer()
                before = await asyncio.to_thread(scored_total, killed, killed_settings)
                streaming = asyncio.create_task(stream_in_chunks(killed_settings, shares[life]))

                async def scoring(
                    process: subprocess.Popen[bytes] = process, before: int = before
                ) -> bool:
                    assert process.poll() is None, (tmp_path / "scorer.log").read_text()[-3000:]
                    return await asyncio.to_thread(scored_total, killed, killed_settings) > before

                await eventually(scoring, "the scorer to score", deadline_s=STARTUP_S)
                await asyncio.sleep(rng.uniform(0, 0.4))  # then kill it wherever it is
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                written += await streaming
            last_life = start_scorer()
            written += await stream_in_chunks(killed_settings, shares[KILLS])
            await scored_up_to_offsets(killed, killed_settings, last_offsets(written))
            assert stop_gracefully(last_life, tmp_path / "scorer.log") == 0

        async with undisturbed(reference_settings, reference):
            await scored_up_to_offsets(reference, reference_settings, last_offsets(written))

        distinct = {event["event_id"]: event for event in stream}
        assert len(distinct) < len(stream)  # there were duplicates to ignore
        for objective_id in objective_ids:
            values = current_values(killed, objective_id)
            assert values == current_values(reference, objective_id)
            for (kpi, aggregation), value in zip(bindings[objective_id], values, strict=True):
                counted = [
                    e["value"] for e in distinct.values() if e["kpi_key"] == kpi and in_period(e)
                ]
                if aggregation == "sum":
                    assert value == math.fsum(counted), "a sum counted an event twice (or lost one)"
                elif aggregation == "count":
                    assert value == len(counted)
            # The history, too, covers every in-period event once per counting key result.
            covered: Counter[UUID] = Counter()
            for event in progress_events(killed, objective_id):
                covered[event.key_result_id] += event.observations
            objective = killed.get_objective(objective_id)
            assert objective is not None
            for key_result, (_, aggregation) in zip(
                objective.key_results, bindings[objective_id], strict=True
            ):
                if aggregation == "count":
                    assert covered[key_result.key_result_id] == key_result.current

        killed_stats = {s.kpi_key: s for s in kpi_reader(killed).all_stats()}
        reference_stats = {s.kpi_key: s for s in kpi_reader(reference).all_stats()}
        per_kpi: defaultdict[str, int] = defaultdict(int)
        for event in distinct.values():
            per_kpi[event["kpi_key"]] += 1
        for kpi, stats in reference_stats.items():
            ours = killed_stats[kpi]
            assert (
                ours.accepted,
                ours.duplicates,
                ours.outside_period,
                ours.stale,
                ours.unbound,
            ) == (
                stats.accepted,
                stats.duplicates,
                stats.outside_period,
                stats.stale,
                stats.unbound,
            )
            assert ours.accepted == per_kpi[kpi]
        assert kpi_reader(killed).observation_count() == len(distinct)
    finally:
        killed.close()
        reference.close()
