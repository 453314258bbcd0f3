"""KPI scoring benchmark: how close the scorer gets to the broker's ceiling, and how fast a KPI
event shows in the read models.

Streams N KPI events (default 200,000 over 1,000 KPIs, each bound to one key result) through the
real broker and measures, in one run:

(a) ceiling: raw aiokafka `getmany` of the same messages with pydantic parsing (no group, no store);
(b) scorer: `run_scorer` + the bindings follower (as `okr scorer` runs them), from the moment the
    consumer holds its partitions until every key result's stored value equals its final value,
    computed here from the stream with `domain.kpi_series` (checked against the event store too);
(c) latency: the whole pipeline minus HTTP, as `docker-compose.yml` deploys it: a scorer process
    (`okr scorer`'s jobs: scorer, bindings follower) and a process with `okr serve`'s other jobs
    (command consumer, outbox relay, projector), `bench.pipeline_process`; `--single-process`
    runs them all here instead. KPI events offered at a fixed rate; per event, from the
    producer's `send` to the first poll of the read store (the tables the read API serves) that
    shows it. What each stage of the scorer, the relay and the projector did meanwhile comes from
    their `okr_stage_*` histograms (`bench.stages`): scraped from the two processes' metrics
    endpoints, or read from this process's job board, when the offer starts and when it ends.
    Each latency event is the next value of a `latest`-bound KPI, increasing per KPI, so "shown"
    means: the key result's `current` in the read store is at least that value. The read store is
    polled directly (one query every `POLL_S`), not through HTTP: the API adds a constant per
    request, and polling 200 objectives over HTTP every few ms would load the 2 cores measured.

    .venv/bin/python -m bench.kpi_scoring --json var/bench/kpi_scoring.json
    .venv/bin/python -m bench.kpi_scoring --store postgresql://postgres@127.0.0.1:55432/postgres

All of it is repeated `--repeat` times (3), each run on its own topics (unique prefix) and its own
stores (a temporary directory, `TMPDIR`, or a fresh PostgreSQL database dropped afterwards): one
run's (a) and (b) last a few seconds each, and a shared 2-core machine moves either by a quarter
between runs. Prints a row per run and the median; `--json PATH` writes the medians
(ceiling_msgs_per_s, scorer_msgs_per_s, ratio: the median of the runs' ratios, p50_ms, p99_ms),
every run's figures and the context of the last (cores, versions, store, N, stages).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import platform
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.stages import (
    Snapshot,
    aligned,
    merged,
    percentile,
    scrape,
    since,
    snapshot,
    summary,
    table_lines,
)
from domain.kpi_series import Observation, aggregate, epoch_us
from domain.objective_events import Aggregation
from events import commands as wire
from events import topics
from events.kpi import KpiEvent
from projections.job_health import JobBoard, context_reporting_to
from projections.topic_scan import kafka_admin
from projections.views import ReadStore
from services.commands.application import OkrApplication
from services.kafka.admin import ensure_topics, topic_specs
from services.projector_service import open_read_store, run_projector_service
from services.relay.publisher import run_relay
from services.scoring.bindings import follow_bindings, run_bindings_follower
from services.scoring.scorer import MAX_RECORDS, KpiScorer, kpi_reader, run_scorer
from services.settings import Settings
from services.stores import is_postgres, postgres_location
from services.tasks import running

ACTOR = "bench@example.com"
PERIOD_START = date(2026, 7, 1)
PERIOD_END = date(2026, 9, 30)
STREAM_START = datetime(2026, 7, 1, tzinfo=UTC)
LATENCY_START = datetime(2026, 9, 1, tzinfo=UTC)
"""Latency events come after every stream event, so each one moves its `latest` key result."""
AGGREGATIONS: tuple[wire.Aggregation, ...] = ("latest", "sum", "count", "avg", "min", "max")
POLL_S = 0.01
DEADLINE_S = 600.0
TARGET_RATIO = 0.5
TARGET_P99_MS = ((2_000, 250.0), (10_000, 500.0))
"""Issue 17's p99 targets: at most 250 ms up to 2,000 events/s, 500 ms up to 10,000."""


def target_p99_ms(rate: int) -> float:
    """The p99 target at an offered `rate` (the highest one's above it)."""
    return next((ms for up_to, ms in TARGET_P99_MS if rate <= up_to), TARGET_P99_MS[-1][1])


@dataclass(frozen=True)
class BoundKpi:
    kpi_key: str
    aggregation: wire.Aggregation
    objective_id: UUID
    key_result_id: UUID


@dataclass
class Results:
    ceiling_msgs_per_s: float = 0.0
    scorer_msgs_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.scorer_msgs_per_s / self.ceiling_msgs_per_s if self.ceiling_msgs_per_s else 0.0

    def figures(self) -> dict[str, Any]:
        """What a row of the table shows (and the JSON keeps of every run)."""
        return {
            "ceiling_msgs_per_s": round(self.ceiling_msgs_per_s),
            "scorer_msgs_per_s": round(self.scorer_msgs_per_s),
            "ratio": round(self.ratio, 3),
            "p50_ms": round(self.p50_ms, 1),
            "p99_ms": round(self.p99_ms, 1),
            "scored_p50_ms": self.context["scored_p50_ms"],
            "scored_p99_ms": self.context["scored_p99_ms"],
        }


def medians(runs: Sequence[Results]) -> dict[str, Any]:
    """Each figure's median over the runs; the ratio is the median of the runs' own ratios (a
    run's (a) and (b) are measured seconds apart, so their quotient carries less of the noise)."""
    rows = [run.figures() for run in runs]
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]}


# --- set-up ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def stores(store: str) -> Iterator[tuple[str, str]]:
    """(event store URL, read store URL): SQLite files in a temporary directory, or a fresh
    PostgreSQL database for both (dropped afterwards)."""
    with tempfile.TemporaryDirectory(prefix="okr-bench-") as directory:
        if store == "sqlite":
            yield f"sqlite:///{directory}/events.sqlite", f"sqlite:///{directory}/read.sqlite"
            return
        if not is_postgres(store):
            raise SystemExit("--store is 'sqlite' or a postgresql:// URL")
        name = f"okr_bench_{uuid.uuid4().hex[:10]}"
        admin = postgres_location(store).conninfo
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        base, _, _ = store.rpartition("/")
        try:
            yield f"{base}/{name}", f"{base}/{name}"
        finally:
            with psycopg.connect(admin, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def handle(application: OkrApplication, body: wire.CommandBody, objective_id: UUID | None) -> None:
    result = application.handle(
        wire.Command(
            command_id=str(uuid.uuid4()), objective_id=objective_id, actor=ACTOR, body=body
        )
    )
    if result.status != "accepted":
        raise RuntimeError(f"set-up command refused: {result}")


def create_bound_key_results(
    application: OkrApplication, kpis: int, per_objective: int
) -> list[BoundKpi]:
    """`kpis` key results, one per KPI, `per_objective` to an active objective; aggregations
    cycle through all six. Through the application's commands, as a user would."""
    bound: list[BoundKpi] = []
    for first in range(0, kpis, per_objective):
        objective_id = uuid.uuid4()
        keys = [
            f"bench.kpi.{index:05d}" for index in range(first, min(kpis, first + per_objective))
        ]
        handle(
            application,
            wire.CreateObjective(
                objective_id=objective_id,
                title=f"Benchmark objective {first // per_objective}",
                owner=ACTOR,
                team="bench",
                period_start=PERIOD_START,
                period_end=PERIOD_END,
                key_results=[
                    wire.KeyResultDefinition(
                        title=f"Move {key} to its target",
                        metric="units",
                        baseline=0,
                        target=1e12,
                        deadline=PERIOD_END,
                    )
                    for key in keys
                ],
            ),
            None,
        )
        handle(application, wire.ActivateObjective(), objective_id)
        objective = application.get_objective(objective_id)
        assert objective is not None
        for index, (key, key_result) in enumerate(
            zip(keys, objective.key_results, strict=True), start=first
        ):
            aggregation = AGGREGATIONS[index % len(AGGREGATIONS)]
            handle(
                application,
                wire.BindKpi(
                    key_result_id=key_result.key_result_id, kpi_key=key, aggregation=aggregation
                ),
                objective_id,
            )
            bound.append(BoundKpi(key, aggregation, objective_id, key_result.key_result_id))
    follow_bindings(application)
    return bound


def build_stream(bound: Sequence[BoundKpi], events: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "event_id": f"bench-{index:08d}",
            "kpi_key": rng.choice(bound).kpi_key,
            "value": round(rng.uniform(-100, 1000), 2),
            "observed_at": (STREAM_START + timedelta(seconds=index)).isoformat(),
            "source": "bench",
        }
        for index in range(events)
    ]


def expected_values(
    bound: Sequence[BoundKpi], stream: Sequence[dict[str, Any]]
) -> dict[UUID, float | None]:
    """Each key result's final value, computed from the stream alone (exact aggregates)."""
    series: dict[str, list[Observation]] = {b.kpi_key: [] for b in bound}
    for event in stream:
        moment = datetime.fromisoformat(event["observed_at"])
        series[event["kpi_key"]].append(
            Observation(event["event_id"], event["value"], epoch_us(moment))
        )
    return {
        b.key_result_id: aggregate(series[b.kpi_key]).value(Aggregation(b.aggregation))
        for b in bound
    }


def producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **settings.kafka_client_options(),
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
    )


async def produce_all(settings: Settings, stream: Sequence[dict[str, Any]]) -> float:
    """Publish the stream keyed by KPI; returns the seconds it took."""
    topic = settings.topic(topics.KPI_EVENTS)
    started = time.perf_counter()
    sender = producer(settings)
    await sender.start()
    try:
        pending = [
            await sender.send(topic, key=e["kpi_key"].encode(), value=orjson.dumps(e))
            for e in stream
        ]
        await asyncio.gather(*pending)
    finally:
        await sender.stop()
    return time.perf_counter() - started


class CpuBusy:
    """The share of the machine's cores busy (any process: broker, scorer, its worker) while
    the block runs, from /proc/stat (None elsewhere). The scorer prepares big batches in a
    worker process, so it can use more than the one core the ceiling's consumer can: this
    says how much it did."""

    def __init__(self) -> None:
        self.share: float | None = None

    @staticmethod
    def _ticks() -> tuple[int, int] | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        except (OSError, ValueError):
            return None
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    def __enter__(self) -> CpuBusy:
        self._start = self._ticks()
        return self

    def __exit__(self, *_: object) -> None:
        end = self._ticks()
        if self._start is not None and end is not None and end[0] > self._start[0]:
            self.share = 1 - (end[1] - self._start[1]) / (end[0] - self._start[0])


# --- (a) the ceiling ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def from_the_start(
    settings: Settings, topic: str, **options: Any
) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer of no group assigned every partition of `topic`, at its first offsets."""
    consumer = AIOKafkaConsumer(
        **settings.kafka_client_options(), group_id=None, enable_auto_commit=False, **options
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        yield consumer
    finally:
        await consumer.stop()


async def measure_ceiling(settings: Settings, events: int) -> float:
    """Raw aiokafka consumption of the stream with pydantic parsing, as the scorer fetches it."""
    async with from_the_start(
        settings,
        settings.topic(topics.KPI_EVENTS),
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    ) as consumer:
        parsed = 0
        started = time.perf_counter()
        while parsed < events:
            fetched = await consumer.getmany(timeout_ms=500, max_records=MAX_RECORDS)
            for records in fetched.values():
                for record in records:
                    KpiEvent.model_validate_json(record.value)
                    parsed += 1
        return parsed / (time.perf_counter() - started)


# --- (b) the scorer -------------------------------------------------------------------------------


async def wait_until(condition: Any, what: str, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(interval_s)


async def measure_scorer(
    settings: Settings,
    application: OkrApplication,
    events: int,
    expected: dict[UUID, float | None],
) -> tuple[float, float]:
    """(events/s from partitions held to every stored value final, seconds to join the group)."""
    scorer = KpiScorer(application)
    reader = kpi_reader(application)
    topic = settings.topic(topics.KPI_EVENTS)
    launched = time.perf_counter()
    async with running(
        run_scorer(settings, application, scorer=scorer),
        run_bindings_follower(settings, application),
    ):

        async def holding_all() -> bool:
            return len(scorer.assigned) == settings.topic_partitions

        await wait_until(holding_all, "the scorer to hold every partition", interval_s=0.005)
        started = time.perf_counter()
        finished = started

        def positions_now() -> tuple[dict[int, int], float]:
            """The stored positions, and when the query returned (taken in the polling thread:
            a moment taken back on the event loop would add whatever held it)."""
            return reader.positions(topic), time.perf_counter()

        async def final() -> bool:
            nonlocal finished
            positions, read_at = await asyncio.to_thread(positions_now)
            if sum(positions.values()) < events:
                return False
            bindings = await asyncio.to_thread(reader.all_bindings)
            if not all(b.value == expected[b.key_result_id] for b in bindings):
                return False
            # Positions move in the transaction that stores the values: when they showed
            # complete, the values were final. Reading and checking every binding after that
            # takes tens of milliseconds that are not the scorer's.
            finished = read_at
            return True

        await wait_until(final, "every key result's final value", interval_s=0.01)
        elapsed = finished - started
    for objective_id in {b.objective_id for b in await asyncio.to_thread(reader.all_bindings)}:
        objective = application.get_objective(objective_id)
        assert objective is not None
        for key_result in objective.key_results:
            if key_result.current != expected[key_result.key_result_id]:
                raise AssertionError(f"event store disagrees on {key_result.key_result_id}")
    return events / elapsed, started - launched


# --- (c) latency through the whole pipeline -------------------------------------------------------


class ReadStorePoll:
    """A value per latency key result, in one query: `current` in the read store's `key_results`
    (what the read API serves), or `value` in the event store's `kpi_bindings` (the scorer's
    commit, to split the latency between the scorer and relay + projector).

    One connection for all the polls (opened at the first): connecting for each of a hundred
    polls a second loaded the cores that the measured pipeline runs on."""

    def __init__(
        self,
        url: str,
        key_results: Sequence[UUID],
        table: str = "key_results",
        column: str = "current",
    ) -> None:
        self.url = url
        self.key_results = [str(k) for k in key_results]
        self.table = table
        self.column = column
        self._postgres: psycopg.Connection[Any] | None = None
        self._sqlite: sqlite3.Connection | None = None

    def currents(self) -> tuple[dict[str, float | None], float]:
        """The values shown now, and when (`perf_counter`, taken in the polling thread as the
        query returns: a moment taken back on the event loop would add whatever held the loop,
        such as the producer's last deliveries)."""
        if is_postgres(self.url):
            if self._postgres is None:
                self._postgres = psycopg.connect(
                    postgres_location(self.url).conninfo, autocommit=True
                )
            rows = self._postgres.execute(
                f"SELECT key_result_id::text, {self.column} FROM {self.table} "
                "WHERE key_result_id::text = ANY(%s)",
                [self.key_results],
            ).fetchall()
        else:
            if self._sqlite is None:
                path = self.url.removeprefix("sqlite:///")
                self._sqlite = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            marks = ",".join("?" for _ in self.key_results)
            rows = self._sqlite.execute(
                f"SELECT key_result_id, {self.column} FROM {self.table} "
                f"WHERE key_result_id IN ({marks})",
                self.key_results,
            ).fetchall()
        return {str(UUID(str(k))): v for k, v in rows}, time.perf_counter()

    def close(self) -> None:
        for connection in (self._postgres, self._sqlite):
            if connection is not None:
                connection.close()


async def measure_latency(
    settings: Settings,
    application: OkrApplication,
    bound: Sequence[BoundKpi],
    expected: dict[UUID, float | None],
    rate: int,
    seconds: float,
    *,
    processes: bool = True,
    profile_dir: Path | None = None,
) -> tuple[Latencies, int, dict[str, dict[str, dict[str, float]]]]:
    """Latencies (ms) of events offered at `rate`/s for `seconds`, how many were never seen in
    the read store, and what each stage did meanwhile (`bench.stages.summary`).

    `processes`: the scorer runs as `okr scorer` does, in its own process, and the relay and the
    projector in another (`okr serve` without its scorer), as the README's deployment runs them;
    else all of them share this process (and its GIL) with the benchmark's producer and polls.
    """
    latest = [b for b in bound if b.aggregation == "latest"]
    key_results = [b.key_result_id for b in latest]
    poll = ReadStorePoll(settings.read_store_url, key_results)
    scored = ReadStorePoll(settings.event_store_url, key_results, "kpi_bindings", "value")
    read_store = await asyncio.to_thread(open_read_store, settings)  # creates the tables polled
    try:
        async with pipeline(settings, application, read_store, processes, profile_dir) as stages:
            # First the backlog: the read store shows the final values of (b).
            async def caught_up() -> bool:
                currents, _ = await asyncio.to_thread(poll.currents)
                return all(
                    currents.get(str(b.key_result_id)) == expected[b.key_result_id] for b in latest
                )

            await wait_until(caught_up, "the read store to show the scorer's values")
            await through_the_pipeline(settings, [poll, scored], latest[0])
            before = await stages()
            latencies, unseen = await offer_and_watch(
                settings, {"read_store": poll, "event_store": scored}, latest, rate, seconds
            )
            offered = since(before, await stages())
    finally:
        await asyncio.to_thread(read_store.close)
        poll.close()
        scored.close()
    return latencies, unseen, summary(offered)


async def through_the_pipeline(
    settings: Settings, polls: Sequence[ReadStorePoll], target: BoundKpi
) -> None:
    """One event offered and shown before the measured ones. The read store can show the backlog
    while the scorer process is still joining its group (a group that (b) left empty waits for
    the broker's initial rebalance delay): events offered meanwhile waited for it, ~500 ms at
    the start of about half the full runs, which was their p99."""
    value = 1e6 - 1  # above the stream's values, below the offered ones
    sender = producer(settings)
    await sender.start()
    try:
        event = {
            "event_id": "latency-warm-up",
            "kpi_key": target.kpi_key,
            "value": value,
            "observed_at": (LATENCY_START - timedelta(milliseconds=1)).isoformat(),
            "source": "bench",
        }
        await sender.send_and_wait(
            settings.topic(topics.KPI_EVENTS),
            key=target.kpi_key.encode(),
            value=orjson.dumps(event),
        )
    finally:
        await sender.stop()

    async def shown() -> bool:
        for poll in polls:
            currents, _ = await asyncio.to_thread(poll.currents)
            if (currents.get(str(target.key_result_id)) or float("-inf")) < value:
                return False
        return True

    await wait_until(shown, "a first event through the pipeline")


StageReader = Callable[[], Awaitable[Snapshot]]
"""Reads the pipeline's stage histograms as they are now."""


ROLES = ("scorer", "pipeline")
"""The processes of (c): `bench.pipeline_process`'s roles."""


def free_port() -> int:
    """A port nothing listens on now, for a child's metrics endpoint."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def pipeline(
    settings: Settings,
    application: OkrApplication,
    read_store: ReadStore,
    processes: bool,
    profile_dir: Path | None = None,
) -> AsyncIterator[StageReader]:
    """The scorer, the bindings follower, the relay and the projector running, and how to read
    their stage histograms: on a job board of their own here, or from each process's metrics
    endpoint."""
    if not processes:
        board = JobBoard()
        async with running(
            run_scorer(settings, application),
            run_bindings_follower(settings, application),
            run_relay(settings, application),
            run_projector_service(settings, read_store),
            context=context_reporting_to(board),
        ):

            async def on_the_board() -> Snapshot:
                return snapshot(board.stages.collect())

            yield on_the_board
        return
    ports = [free_port() for _ in ROLES]
    with tempfile.TemporaryDirectory(prefix="okr-bench-processes-") as directory:
        children = [
            start_process(settings, role, port, Path(directory), profile_dir)
            for role, port in zip(ROLES, ports, strict=True)
        ]

        async def scraped() -> Snapshot:
            return merged(*[await scrape(f"http://127.0.0.1:{port}/metrics") for port in ports])

        try:
            yield scraped
        finally:
            for child in children:
                child.send_signal(signal.SIGTERM)
            for child in children:
                await asyncio.to_thread(stop, child)


def stop(child: subprocess.Popen[bytes]) -> None:
    try:
        child.wait(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def start_process(
    settings: Settings,
    role: str,
    metrics_port: int,
    directory: Path,
    profile_dir: Path | None = None,
) -> subprocess.Popen[bytes]:
    """`python -m bench.pipeline_process ROLE METRICS_PORT`, configured like this run (a child
    that dies leaves its log, and the wait for the read store times out naming it)."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("OKR_")}
    environment |= {
        "OKR_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "OKR_TOPIC_PREFIX": settings.topic_prefix,
        "OKR_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "OKR_EVENT_STORE_URL": settings.event_store_url,
        "OKR_READ_STORE_URL": settings.read_store_url,
        "OKR_SCORER_WINDOW_MS": str(settings.scorer_window_ms),
        "OKR_SCORER_WORKER_FROM": str(settings.scorer_worker_from),
        "OKR_SCORER_WORKERS": str(settings.scorer_workers),
    }
    log = directory / f"{role}.log"
    with log.open("ab") as output:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.pipeline_process",
                role,
                str(metrics_port),
                *([str(profile_dir)] if profile_dir else []),
            ],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


Latencies = dict[str, list[float]]
"""Milliseconds from send to shown, per place watched ("read_store", "event_store")."""


async def offer_and_watch(
    settings: Settings,
    polls: dict[str, ReadStorePoll],
    latest: Sequence[BoundKpi],
    rate: int,
    seconds: float,
) -> tuple[Latencies, int]:
    """Offer `rate` events/s for `seconds`; per poll, when each event's value was first shown."""
    topic = settings.topic(topics.KPI_EVENTS)
    total = int(rate * seconds)
    rng = random.Random(7)
    sent: dict[str, list[tuple[float, float]]] = {str(b.key_result_id): [] for b in latest}
    """Per key result: (value, time sent), values increasing."""
    seen_at: dict[str, dict[tuple[str, float], float]] = {name: {} for name in polls}
    done = asyncio.Event()

    async def watch(name: str, poll: ReadStorePoll) -> None:
        seen = seen_at[name]
        while True:
            currents, now = await asyncio.to_thread(poll.currents)
            for key_result, values in sent.items():
                shown = currents.get(key_result)
                if shown is None:
                    continue
                for value, _ in reversed(values):
                    if (key_result, value) in seen:
                        break  # and every earlier value too
                    if value <= shown:
                        seen[(key_result, value)] = now
            if done.is_set() and len(seen) >= total:
                return
            await asyncio.sleep(POLL_S)

    sender = producer(settings)
    await sender.start()
    watchers = [asyncio.create_task(watch(name, poll)) for name, poll in polls.items()]
    try:
        started = time.perf_counter()
        pending = []
        for index in range(total):
            due = started + index / rate
            delay = due - time.perf_counter()
            if delay > 0.002:
                await asyncio.sleep(delay)
            target = rng.choice(latest)
            value = 1e6 + index  # above any stream value, increasing: each one moves `latest`
            event = {
                "event_id": f"latency-{index:08d}",
                "kpi_key": target.kpi_key,
                "value": value,
                "observed_at": (LATENCY_START + timedelta(milliseconds=index)).isoformat(),
                "source": "bench",
            }
            sent[str(target.key_result_id)].append((value, time.perf_counter()))
            pending.append(
                await sender.send(topic, key=target.kpi_key.encode(), value=orjson.dumps(event))
            )
        # Not `gather` over every delivery: its callbacks held the loop for hundreds of ms
        # just as the last events were being shown.
        await sender.flush()
        failed = next((f.exception() for f in pending if not f.done() or f.exception()), None)
        if failed is not None or not all(f.done() for f in pending):
            raise RuntimeError(f"a latency event was not delivered: {failed!r}")
        done.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(60):
                await asyncio.gather(*(asyncio.shield(w) for w in watchers))
    finally:
        for watcher in watchers:
            watcher.cancel()
        for watcher in watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await sender.stop()
    latencies: Latencies = {
        name: [
            (seen[(key_result, value)] - at) * 1000
            for key_result, values in sent.items()
            for value, at in values
            if (key_result, value) in seen
        ]
        for name, seen in seen_at.items()
    }
    return latencies, total - len(latencies["read_store"])


# --- the run --------------------------------------------------------------------------------------


async def run(arguments: argparse.Namespace) -> Results:
    results = Results()
    with stores(arguments.store) as (event_store_url, read_store_url):
        settings = Settings(
            kafka_bootstrap_servers=arguments.bootstrap,
            topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
            event_store_url=event_store_url,
            read_store_url=read_store_url,
        )
        await ensure_topics(settings)
        application = await asyncio.to_thread(OkrApplication, settings)
        try:
            step = time.perf_counter()
            bound = await asyncio.to_thread(
                create_bound_key_results, application, arguments.kpis, arguments.per_objective
            )
            setup_s = time.perf_counter() - step
            stream = build_stream(bound, arguments.events, arguments.seed)
            expected = expected_values(bound, stream)
            produce_s = await produce_all(settings, stream)
            join_s = 0.0
            ceiling_cpu, scorer_cpu = CpuBusy(), CpuBusy()
            if not arguments.latency_only:
                with ceiling_cpu:
                    results.ceiling_msgs_per_s = await measure_ceiling(settings, arguments.events)
                with scorer_cpu:
                    results.scorer_msgs_per_s, join_s = await measure_scorer(
                        settings, application, arguments.events, expected
                    )
            latencies, unseen, stages = await measure_latency(
                settings,
                application,
                bound,
                expected,
                arguments.rate,
                arguments.latency_seconds,
                processes=not arguments.single_process,
                profile_dir=arguments.profile_dir,
            )
            results.p50_ms = percentile(latencies["read_store"], 0.50)
            results.p99_ms = percentile(latencies["read_store"], 0.99)
            results.context = {
                **machine("aiokafka", "pydantic", "eventsourcing", "orjson", "psycopg"),
                "store": store_kind(arguments.store),
                "events": arguments.events,
                "kpis": arguments.kpis,
                "key_results_per_objective": arguments.per_objective,
                "partitions": settings.topic_partitions,
                "scorer_max_records": MAX_RECORDS,
                "offered_rate_per_s": arguments.rate,
                "latency_seconds": arguments.latency_seconds,
                "latency_pipeline": "one process"
                if arguments.single_process
                else "scorer process + relay/projector process (bench.pipeline_process)",
                "latency_events": len(latencies["read_store"]) + unseen,
                "scored_p50_ms": round(percentile(latencies["event_store"], 0.50), 1),
                "scored_p99_ms": round(percentile(latencies["event_store"], 0.99), 1),
                "latency_events_unseen": unseen,
                "latency_read": "read store polled directly every 10 ms (key_results table); "
                "scored_* = the same, polling the scorer's kpi_bindings in the event store",
                "setup_s": round(setup_s, 2),
                "produce_s": round(produce_s, 2),
                "scorer_join_s": round(join_s, 2),
                "cpu_busy_share": {
                    "ceiling": ceiling_cpu.share and round(ceiling_cpu.share, 2),
                    "scorer": scorer_cpu.share and round(scorer_cpu.share, 2),
                    "note": "share of all cores busy (/proc/stat) during (a) and during (b) "
                    "including the scorer's start; the scorer prepares batches of "
                    f"{settings.scorer_worker_from}+ records in {settings.scorer_workers} "
                    "worker process(es)",
                },
                "progress_events": application.last_notification_id(),
                "stages": stages,
            }
        finally:
            application.close()
            await delete_topics(settings)
    return results


def machine(*packages: str) -> dict[str, Any]:
    """What a benchmark ran on: cores, architecture, Python and the packages' versions."""
    return {
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "versions": {name: importlib.metadata.version(name) for name in packages},
    }


def store_kind(store: str) -> str:
    return "sqlite" if store == "sqlite" else "postgres"


async def delete_topics(settings: Settings) -> None:
    """Each run makes its own topics (a million messages); a shared broker should not keep them."""
    try:
        async with kafka_admin(settings.kafka_client_options(), "okr-bench") as admin:
            await admin.delete_topics([spec.name for spec in topic_specs(settings)])
    except Exception as error:  # the run's results stand either way
        print(f"warning: the run's topics were not deleted: {error}", file=sys.stderr)


TABLE_COLUMNS = (
    ("ceiling_msgs_per_s", "(a) ceiling msg/s", "{:,.0f}"),
    ("scorer_msgs_per_s", "(b) scorer msg/s", "{:,.0f}"),
    ("ratio", "ratio", "{:.2f}"),
    ("p50_ms", "(c) p50 ms", "{:,.0f}"),
    ("p99_ms", "(c) p99 ms", "{:,.0f}"),
    ("scored_p50_ms", "scored p50 ms", "{:,.0f}"),
    ("scored_p99_ms", "scored p99 ms", "{:,.0f}"),
)


def table(runs: Sequence[Results], rate: int) -> str:
    """A row per run and the medians. (a) aiokafka getmany + pydantic; (b) the scorer until
    every key result shows its final value; (c) produce to visible in the read store at `rate`/s
    ("scored": to committed in the event store)."""
    rows = [(f"run {n}", run.figures()) for n, run in enumerate(runs, 1)]
    rows.append(("median", medians(runs)))
    cells = [["", *(title for _, title, _ in TABLE_COLUMNS)]] + [
        [name, *(form.format(figures[key]) for key, _, form in TABLE_COLUMNS)]
        for name, figures in rows
    ]
    lines = aligned(cells)
    median = rows[-1][1]
    ratio = f"ratio >= {TARGET_RATIO} (median {median['ratio']:.2f}), " if median["ratio"] else ""
    lines.append(
        f"targets: {ratio}p99 <= {target_p99_ms(rate):.0f} ms at {rate}/s "
        f"(median {median['p99_ms']:.0f} ms)"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--kpis", type=int, default=1_000)
    parser.add_argument("--per-objective", type=int, default=5, help="key results per objective")
    parser.add_argument("--rate", type=int, default=2_000, help="offered KPI events/s for (c)")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--store", default="sqlite", help="'sqlite' or a postgresql:// URL")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--seed", type=int, default=20260714)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--repeat", type=int, default=3, help="independent runs (medians shown)")
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="skip (a) and (b): the stream is only the backlog (c) starts from",
    )
    parser.add_argument(
        "--single-process",
        action="store_true",
        help="(c) with the scorer, relay and projector in this process (one GIL), instead of "
        "a scorer process and a relay + projector process as deployed",
    )
    parser.add_argument(
        "--profile-dir",
        type=Path,
        help="with the stage processes: write a cProfile of each stage's batches here",
    )
    arguments = parser.parse_args(argv)
    if arguments.profile_dir is not None:
        arguments.profile_dir.mkdir(parents=True, exist_ok=True)
    runs = [asyncio.run(run(arguments)) for _ in range(max(1, arguments.repeat))]
    print(table(runs, arguments.rate))
    context = runs[-1].context
    busy = [run.context["cpu_busy_share"] for run in runs]
    if all(b["ceiling"] is not None and b["scorer"] is not None for b in busy):
        print(
            "cores busy during (a): "
            + ", ".join(f"{b['ceiling']:.0%}" for b in busy)
            + "; during (b): "
            + ", ".join(f"{b['scorer']:.0%}" for b in busy)
            + " (the scorer prepares big batches in a second process)"
        )
    print(
        f"({context['events']:,} events, {context['kpis']} KPIs, store {context['store']}, "
        f"{context['cores']} cores; latency events unseen: "
        + ", ".join(str(run.context["latency_events_unseen"]) for run in runs)
        + f"); stages of run {len(runs)} while (c) offered events (okr_stage_* histograms):"
    )
    for line in table_lines(context["stages"]):
        print(f"  {line}")
    if arguments.json:
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        document = {
            **medians(runs),
            "targets": {"ratio": TARGET_RATIO, "p99_ms": target_p99_ms(arguments.rate)},
            "runs": [
                run.figures() | {"cpu_busy_share": run.context["cpu_busy_share"]} for run in runs
            ],
            "context": context,
        }
        arguments.json.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
