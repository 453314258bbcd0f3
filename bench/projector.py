"""Projector benchmark: how fast `okr.events` is applied to the read store, next to a raw read.

Produces, on topics of its own (unique prefix), the events of `--objectives` objectives (each
created with `--key-results` key results and activated) and `--events` `KpiProgressRecorded`
spread over them at random (a key result at random, a new value each time, versions in order per
objective), shaped as the relay publishes them (keyed by objective id, chain hash included).
Then, in one run:

(a) raw read: aiokafka `getmany` of the whole topic, no group, no parsing (the ceiling);
(b) projector: `run_projector_service` (as `okr serve` runs it) on an empty read store until its
    positions reach the topic's end. Reported: messages per busy second (messages over the time
    its batches spent in decode + apply + save, from its `okr_stage_*{job="projector"}`
    histograms), and messages per wall second from the end of its first batch to its last;
(c) rebuild: `--rebuild-events` more progress events (1,000,000 by default) on a second topic,
    read raw once (a') and replayed by `rebuild_read_store`, what `okr projections rebuild` runs
    (a fresh store each, so the rebuild starts from empty tables like the command).

Each run gets its own topics and stores (a temporary directory, or a fresh PostgreSQL database
dropped afterwards: `--store postgresql://...`); `--repeat` runs (3), a row per run and the
medians, the load average before and after each run; `--json PATH` writes them.

    .venv/bin/python -m bench.projector --bootstrap 127.0.0.1:9092 --json var/bench/projector.json
    .venv/bin/python -m bench.projector --store postgresql://postgres@127.0.0.1:55432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
from aiokafka import AIOKafkaProducer

from bench.kpi_scoring import delete_topics, from_the_start, machine, store_kind, stores
from bench.stages import aligned, snapshot, summary
from events import okr, topics
from events.commands import KeyResultDefinition
from projections.job_health import JobBoard, context_reporting_to
from projections.views import ReadStore
from services.kafka.admin import ensure_topics
from services.projector_service import open_read_store, rebuild_read_store, run_projector_service
from services.settings import Settings
from services.tasks import running

START = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)
PERIOD_START, PERIOD_END = date(2026, 7, 1), date(2026, 9, 30)
BUSY_STAGES = ("decode", "apply", "save")
"""The projector's stages that work on a batch (fetch waits for Kafka, commit tells Kafka)."""
DEADLINE_S = 3_600.0
TARGET_MSGS_PER_BUSY_S = 10_000


@dataclass(frozen=True)
class Objective:
    objective_id: UUID
    key_results: tuple[UUID, ...]


def objective_events(objective: Objective, number: int) -> Iterator[okr.OkrPayload]:
    """Its creation (key results of every kind a live stream moves: plain increases) and its
    activation."""
    yield okr.ObjectiveCreated(
        title=f"Benchmark objective {number}",
        owner="bench@example.com",
        team="bench",
        period_start=PERIOD_START,
        period_end=PERIOD_END,
        key_results=[
            okr.KeyResult(
                key_result_id=key_result_id,
                **KeyResultDefinition(
                    title=f"Move bench.kpi.{number:05d}.{index} to its target",
                    metric="units",
                    baseline=0,
                    target=1e6,
                    deadline=PERIOD_END,
                ).model_dump(),
            )
            for index, key_result_id in enumerate(objective.key_results)
        ],
    )
    yield okr.ObjectiveActivated()


def stream(
    objectives: int, key_results: int, events: int, seed: int
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of every message: the objectives' creations, then `events` progress events
    on objectives and key results drawn at random, as the relay publishes them."""
    rng = random.Random(seed)
    made = [
        Objective(
            uuid.UUID(int=rng.getrandbits(128), version=4),
            tuple(uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(key_results)),
        )
        for _ in range(objectives)
    ]
    versions = dict.fromkeys((o.objective_id for o in made), 0)
    moments = itertools.count()

    def message(objective_id: UUID, payload: okr.OkrPayload) -> tuple[bytes, bytes]:
        versions[objective_id] += 1
        version = versions[objective_id]
        header = okr.EventHeader(
            objective_id=objective_id,
            version=version,
            occurred_at=START + timedelta(milliseconds=next(moments)),
            actor="okr-scorer",
            command_id=f"bench-{objective_id}-{version}",
            chain_hash=f"{rng.getrandbits(256):064x}",
        )
        envelope = okr.okr_event(payload, header)
        return str(objective_id).encode(), envelope.to_bytes()

    for number, objective in enumerate(made):
        for payload in objective_events(objective, number):
            yield message(objective.objective_id, payload)
    for index in range(events):
        objective = rng.choice(made)
        key_result_id = rng.choice(objective.key_results)
        yield message(
            objective.objective_id,
            okr.KpiProgressRecorded(
                key_result_id=key_result_id,
                value=round(rng.uniform(0, 1e6), 2),
                kpi_key=f"bench.kpi.{key_result_id.hex[:8]}",
                observations=rng.randint(1, 20),
                last_kpi_event_id=f"bench-{index:08d}",
                last_offset=index,
            ),
        )


async def produce(settings: Settings, messages: Iterator[tuple[bytes, bytes]]) -> int:
    """Publish on the run's `okr.events`; returns how many."""
    topic = settings.topic(topics.EVENTS)
    sender = AIOKafkaProducer(
        **settings.kafka_client_options(),
        enable_idempotence=True,
        acks="all",
        linger_ms=20,
        max_batch_size=512 * 1024,
    )
    await sender.start()
    count = 0
    try:
        pending = []
        for key, value in messages:
            pending.append(await sender.send(topic, key=key, value=value))
            count += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await sender.stop()
    return count


async def raw_read(settings: Settings, expected: int) -> float:
    """Messages per second of aiokafka `getmany` over the whole topic (no group, no parsing)."""
    async with from_the_start(settings, settings.topic(topics.EVENTS)) as consumer:
        read = 0
        started = time.perf_counter()
        while read < expected:
            fetched = await consumer.getmany(timeout_ms=500, max_records=1000)
            read += sum(len(records) for records in fetched.values())
        return read / (time.perf_counter() - started)


async def end_positions(settings: Settings) -> dict[tuple[str, int], int]:
    async with from_the_start(settings, settings.topic(topics.EVENTS)) as consumer:
        ends = await consumer.end_offsets(list(consumer.assignment()))
    return {(tp.topic, tp.partition): end for tp, end in ends.items() if end > 0}


@dataclass
class ProjectorRun:
    messages: int
    busy_s: float
    wall_msgs_per_s: float
    stages: dict[str, dict[str, dict[str, float]]]

    @property
    def busy_msgs_per_s(self) -> float:
        return self.messages / self.busy_s if self.busy_s else 0.0


async def project(settings: Settings, store: ReadStore, messages: int) -> ProjectorRun:
    """The projector as `okr serve` runs it, on its own job board, until it reaches the end."""
    ends = await end_positions(settings)
    board = JobBoard()
    batches: list[tuple[float, int]] = []
    async with running(
        run_projector_service(
            settings, store, on_batch=lambda r: batches.append((time.perf_counter(), r.messages))
        ),
        context=context_reporting_to(board),
    ):
        deadline = time.monotonic() + DEADLINE_S
        while True:
            positions = await asyncio.to_thread(store.positions)
            if all(positions.get(key, 0) >= end for key, end in ends.items()):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("the projector did not reach the topic's end")
            await asyncio.sleep(0.05)
    stages = summary(snapshot(board.stages.collect()))
    projector = stages.get("projector", {})
    busy_s = sum(projector.get(stage, {}).get("total_s", 0.0) for stage in BUSY_STAGES)
    applied = sum(size for _, size in batches)
    if applied != messages:
        raise AssertionError(f"the projector saw {applied} messages, {messages} were published")
    (first_end, first_size), (last_end, _) = batches[0], batches[-1]
    wall = (messages - first_size) / (last_end - first_end) if last_end > first_end else 0.0
    return ProjectorRun(messages, busy_s, wall, stages)


async def rebuild_rate(settings: Settings, store: ReadStore, messages: int) -> float:
    started = time.perf_counter()
    report = await rebuild_read_store(settings, store)
    elapsed = time.perf_counter() - started
    if report.events.messages != messages or report.events.applied != messages:
        raise AssertionError(f"rebuild replayed {report.events}, {messages} were published")
    return messages / elapsed


@dataclass
class Published:
    """A run's own topics and read store, with `messages` published on its `okr.events`."""

    settings: Settings
    store: ReadStore
    messages: int


@contextlib.asynccontextmanager
async def published(
    arguments: argparse.Namespace, events: int, seed: int
) -> AsyncIterator[Published]:
    """Fresh topics and an empty read store, the objectives' creations and `events` progress
    events published; the topics are deleted afterwards."""
    with stores(arguments.store) as (_, read_store_url):
        settings = Settings(
            kafka_bootstrap_servers=arguments.bootstrap,
            topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
            read_store_url=read_store_url,
        )
        await ensure_topics(settings)
        try:
            messages = await produce(
                settings, stream(arguments.objectives, arguments.key_results, events, seed)
            )
            store = await asyncio.to_thread(open_read_store, settings)
            try:
                yield Published(settings, store, messages)
            finally:
                await asyncio.to_thread(store.close)
        finally:
            await delete_topics(settings)


async def one_run(arguments: argparse.Namespace, number: int) -> dict[str, Any]:
    load_before = os.getloadavg()
    figures: dict[str, Any] = {}
    async with published(arguments, arguments.events, number) as run:
        figures["raw_msgs_per_s"] = await raw_read(run.settings, run.messages)
        projected = await project(run.settings, run.store, run.messages)
        figures |= {
            "messages": run.messages,
            "projector_msgs_per_busy_s": projected.busy_msgs_per_s,
            "projector_busy_s": projected.busy_s,
            "projector_msgs_per_wall_s": projected.wall_msgs_per_s,
            "projector_stages": projected.stages.get("projector", {}),
        }
    if arguments.rebuild_events:
        async with published(arguments, arguments.rebuild_events, 1000 + number) as run:
            figures["rebuild_messages"] = run.messages
            figures["rebuild_raw_msgs_per_s"] = await raw_read(run.settings, run.messages)
            figures["rebuild_msgs_per_s"] = await rebuild_rate(
                run.settings, run.store, run.messages
            )
    figures["load_average"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    return figures


COLUMNS = (
    ("raw_msgs_per_s", "(a) raw read msg/s", "{:,.0f}"),
    ("projector_msgs_per_busy_s", "(b) projector msg/busy s", "{:,.0f}"),
    ("projector_msgs_per_wall_s", "(b) msg/wall s", "{:,.0f}"),
    ("rebuild_raw_msgs_per_s", "(c) raw read msg/s", "{:,.0f}"),
    ("rebuild_msgs_per_s", "(c) rebuild msg/s", "{:,.0f}"),
)


def medians(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    return {
        key: statistics.median(run[key] for run in runs)
        for key, _, _ in COLUMNS
        if all(key in run for run in runs)
    }


def table(runs: Sequence[dict[str, Any]]) -> list[str]:
    middle = medians(runs)
    columns = [column for column in COLUMNS if column[0] in middle]
    rows = [(f"run {n}", run) for n, run in enumerate(runs, 1)] + [("median", middle)]
    cells = [["", *(title for _, title, _ in columns), "load before / after"]] + [
        [
            name,
            *(form.format(figures[key]) for key, _, form in columns),
            " / ".join(f"{value:.2f}" for value in figures.get("load_average", [])),
        ]
        for name, figures in rows
    ]
    return aligned(cells)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="progress events for (b)")
    parser.add_argument("--objectives", type=int, default=1_000)
    parser.add_argument("--key-results", type=int, default=5, help="per objective")
    parser.add_argument(
        "--rebuild-events", type=int, default=1_000_000, help="progress events for (c); 0: skip"
    )
    parser.add_argument("--store", default="sqlite", help="'sqlite' or a postgresql:// URL")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the runs and medians here")
    arguments = parser.parse_args(argv)
    runs = []
    for number in range(1, max(1, arguments.repeat) + 1):
        runs.append(asyncio.run(one_run(arguments, number)))
        figures = {key: round(runs[-1][key]) for key, _, _ in COLUMNS if key in runs[-1]}
        print(f"run {number}: {figures}, load {runs[-1]['load_average']}", file=sys.stderr)
    for line in table(runs):
        print(line)
    last = runs[-1]
    print(
        f"({last['messages']:,} messages for (b): {arguments.objectives:,} objectives x "
        f"{arguments.key_results} key results created and activated, then {arguments.events:,} "
        f"KpiProgressRecorded; (c) {arguments.rebuild_events:,} more; store "
        f"{store_kind(arguments.store)}, {os.cpu_count()} cores; "
        f"target >= {TARGET_MSGS_PER_BUSY_S:,} msg per busy s)"
    )
    print("projector stages of the last run (b):")
    for stage, row in last["projector_stages"].items():
        print(
            f"  {stage:<7} {row['count']:>6,} batches  {row['total_s']:>8.3f} s  "
            f"{row['mean_ms']:>8.2f} ms a batch  {row['mean_size']:>7.1f} messages a batch"
        )
    if arguments.json:
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        document = {
            **medians(runs),
            "target_msgs_per_busy_s": TARGET_MSGS_PER_BUSY_S,
            "runs": runs,
            "context": {
                **machine("aiokafka", "pydantic", "msgspec", "orjson", "psycopg"),
                "store": store_kind(arguments.store),
                "objectives": arguments.objectives,
                "key_results_per_objective": arguments.key_results,
                "events": arguments.events,
                "rebuild_events": arguments.rebuild_events,
                "busy": "decode + apply + save of the projector's batches "
                "(okr_stage_duration_seconds{job='projector'})",
            },
        }
        arguments.json.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
