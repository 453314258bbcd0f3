"""How long a stored event takes to reach `okr.events`, written in the relay's process and in
another process on the same event store (as `okr scorer` writes for `okr serve`'s relay).

One process here runs the outbox relay (`run_relay`, as `okr serve` does) on its application and
a consumer of `okr.events`. It then creates `--writes` objectives one after the other, every
`--interval-ms`:

- `same process`: through the relay's own application (as an HTTP command does);
- `other process`: from a child process with an application of its own on the same store.

Per write: from the moment its `handle` is called to the moment the consumer here reads the
event (the clocks of one machine). The write itself (a commit, fsynced on SQLite) is part of it;
its median is printed beside, and the latency from the moment `handle` returned (what the
relay adds, whatever the write costs).

    .venv/bin/python -m bench.relay_latency --kafka 127.0.0.1:9092
    .venv/bin/python -m bench.relay_latency --store postgresql://postgres@127.0.0.1:55432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any
from uuid import UUID

REPOSITORY = Path(__file__).resolve().parents[1]
DEADLINE_S = 60.0


def create(objective_id: UUID) -> Any:
    from events import commands as wire

    return wire.Command(
        command_id=str(uuid.uuid4()),
        actor="bench@example.com",
        body=wire.CreateObjective(
            objective_id=objective_id,
            title="Latency",
            owner="bench@example.com",
            team="bench",
            period_start=date(2026, 7, 1),
            period_end=date(2026, 9, 30),
            key_results=[
                wire.KeyResultDefinition(
                    title="Raise NPS to 80",
                    metric="NPS points",
                    baseline=62,
                    target=80,
                    deadline=date(2026, 9, 30),
                )
            ],
        ),
    )


def write_here(writes: int, interval_s: float) -> None:
    """The other process: write, printing each write's id, start and duration."""
    from services.commands.application import OkrApplication
    from services.settings import Settings

    application = OkrApplication(Settings())
    try:
        print("ready", flush=True)
        sys.stdin.readline()
        for _ in range(writes):
            objective_id = uuid.uuid4()
            started = time.time()
            application.handle(create(objective_id))
            took = time.time() - started
            print(json.dumps([str(objective_id), started, took]), flush=True)
            time.sleep(interval_s)
    finally:
        application.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def summary(latencies: list[float], durations: list[float]) -> dict[str, float]:
    ms = [1000 * value for value in latencies]
    after_write = [1000 * (value - took) for value, took in zip(latencies, durations, strict=True)]
    return {
        "writes": len(ms),
        "p50_ms": round(percentile(ms, 0.5), 1),
        "p90_ms": round(percentile(ms, 0.9), 1),
        "p99_ms": round(percentile(ms, 0.99), 1),
        "max_ms": round(max(ms), 1),
        "mean_ms": round(statistics.fmean(ms), 1),
        "write_p50_ms": round(1000 * statistics.median(durations), 1),
        "after_write_p50_ms": round(percentile(after_write, 0.5), 1),
        "after_write_p99_ms": round(percentile(after_write, 0.99), 1),
    }


async def measure(args: argparse.Namespace, store_url: str) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from events import topics
    from services.commands.application import OkrApplication
    from services.kafka.admin import ensure_topics
    from services.relay.publisher import run_relay
    from services.settings import Settings

    settings = Settings(
        kafka_bootstrap_servers=args.kafka,
        topic_prefix=f"lat-{uuid.uuid4().hex[:8]}.",
        event_store_url=store_url,
        read_store_url=store_url,
    )
    await ensure_topics(settings)
    application = await asyncio.to_thread(OkrApplication, settings)
    arrived: dict[str, float] = {}
    read = asyncio.Event()
    consumer = AIOKafkaConsumer(**settings.kafka_client_options(), group_id=None)
    await consumer.start()
    topic = settings.topic(topics.EVENTS)
    partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)

    async def consume() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=1000)
            now = time.time()
            for records in batch.values():
                for record in records:
                    assert record.key is not None
                    arrived.setdefault(record.key.decode(), now)
            read.set()

    async def all_arrived(ids: list[str]) -> None:
        async with asyncio.timeout(DEADLINE_S):
            while any(i not in arrived for i in ids):
                read.clear()
                await read.wait()

    poll = {} if args.relay_poll_s is None else {"idle_poll_s": args.relay_poll_s}
    relay = asyncio.create_task(run_relay(settings, application, **poll))
    reader = asyncio.create_task(consume())
    results: dict[str, Any] = {}
    try:
        # A first write, waited for: the relay's producer and the consumer are connected.
        warm = uuid.uuid4()
        await asyncio.to_thread(application.handle, create(warm))
        await all_arrived([str(warm)])

        started: dict[str, tuple[float, float]] = {}
        for _ in range(args.writes):
            objective_id = uuid.uuid4()
            begin = time.time()
            await asyncio.to_thread(application.handle, create(objective_id))
            started[str(objective_id)] = (begin, time.time() - begin)
            await asyncio.sleep(args.interval_ms / 1000)
        await all_arrived(list(started))
        results["same process"] = summary(
            [arrived[i] - begin for i, (begin, _) in started.items()],
            [took for _, took in started.values()],
        )

        env = {name: value for name, value in os.environ.items() if not name.startswith("OKR_")}
        env |= {
            "PYTHONPATH": str(REPOSITORY),
            "OKR_KAFKA_BOOTSTRAP_SERVERS": args.kafka,
            "OKR_TOPIC_PREFIX": settings.topic_prefix,
            "OKR_EVENT_STORE_URL": store_url,
            "OKR_READ_STORE_URL": store_url,
        }
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.relay_latency",
            "--write-here",
            str(args.writes),
            str(args.interval_ms / 1000),
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert child.stdin is not None and child.stdout is not None
        assert (await child.stdout.readline()).strip() == b"ready"
        await asyncio.sleep(2)  # the child's application is open; let this process settle
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        written: dict[str, tuple[float, float]] = {}
        async for line in child.stdout:
            objective_id, begin, took = json.loads(line)
            written[objective_id] = (begin, took)
        await child.wait()
        await all_arrived(list(written))
        results["other process"] = summary(
            [arrived[i] - begin for i, (begin, _) in written.items()],
            [took for _, took in written.values()],
        )
    finally:
        for task in (relay, reader):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await consumer.stop()
        await asyncio.to_thread(application.close)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--interval-ms", type=float, default=50.0)
    parser.add_argument(
        "--kafka", default=os.environ.get("OKR_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    parser.add_argument("--store", default=None, help="a PostgreSQL admin URL (default: SQLite)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--relay-poll-s", type=float, default=None, help="the relay's idle poll (experiments)"
    )
    parser.add_argument("--write-here", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_here:
        write_here(int(args.write_here[0]), float(args.write_here[1]))
        return 0

    import psycopg

    load_before = os.getloadavg()
    if args.store:
        name = f"okr_latency_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(args.store, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            results = asyncio.run(measure(args, f"{args.store.rpartition('/')[0]}/{name}"))
        finally:
            with psycopg.connect(args.store, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        with tempfile.TemporaryDirectory(prefix="okr-latency-") as scratch:
            results = asyncio.run(measure(args, f"sqlite:///{scratch}/events.sqlite"))
    load_after = os.getloadavg()
    print(
        f"{args.writes} writes every {args.interval_ms:g} ms, store "
        f"{'postgresql' if args.store else 'sqlite'}; load average before "
        f"{load_before[0]:.2f}, after {load_after[0]:.2f}"
    )
    header = (
        f"{'writer':<15} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'write p50':>9} {'after write p50':>15} {'p99':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, row in results.items():
        print(
            f"{name:<15} {row['p50_ms']:>7.1f} {row['p90_ms']:>7.1f} {row['p99_ms']:>7.1f} "
            f"{row['max_ms']:>7.1f} {row['write_p50_ms']:>9.1f} "
            f"{row['after_write_p50_ms']:>15.1f} {row['after_write_p99_ms']:>6.1f}"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"results": results, "load_before": load_before, "load_after": load_after}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
