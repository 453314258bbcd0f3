"""Idle cost: how much CPU `okr serve` and `okr scorer` use when nothing arrives.

Starts, side by side and each in a scratch directory of its own (its `var/`, its topic prefix),
against the real broker:

- `sleep`: `python -c 'import time; time.sleep(...)'`, the floor;
- `aiokafka consumer`: a bare aiokafka consumer holding a group on an empty topic, polling as
  our consumers do (`getmany(timeout_ms=500)`): what any Kafka consumer costs here;
- `okr serve`: the whole service, scorer included (the default);
- `okr serve (no scorer)` and `okr scorer`: the deployment of docs/decisions/0012, two
  processes on one pair of stores (`OKR_SERVE_RUNS_SCORER=false`).

It waits until each is healthy (`GET /health` answers 200; `okr scorer` has no HTTP: until it
holds its partitions, said in its log), then `--settle` seconds more, then reads each process's
CPU time (utime + stime of the process and its children, from /proc/PID/stat) and voluntary
context switches (how often its threads went to sleep: wake-ups) over `--seconds`, and prints a
table, the machine's load (`uptime`) before and after, and `--json PATH` writes it all.

    .venv/bin/python -m bench.idle_cpu --json var/bench/idle_cpu.json
    .venv/bin/python -m bench.idle_cpu --store postgresql://postgres@127.0.0.1:55432/postgres

Kafka: `--kafka` (default `OKR_KAFKA_BOOTSTRAP_SERVERS`, else 127.0.0.1:9092). Linux only
(/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

REPOSITORY = Path(__file__).resolve().parents[1]
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
STARTUP_S = 90.0
SCORER_READY = "KPI scorer consuming"
"""What `okr scorer` logs once it holds its partitions."""


# --- reading /proc ---------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """The process and every process below it (the scorer's preparation workers)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    queue.extend(int(child) for child in (task / "children").read_text().split())
    return found


def cpu_ticks(pid: int) -> int:
    """utime + stime of the process (all its threads), + those of its waited-for children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command name: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    return sum(int(value) for value in fields[11:15])


def voluntary_switches(pid: int) -> int:
    """Voluntary context switches of all the process's threads: each is a sleep, so a wake-up."""
    total = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Reading:
    at: float
    ticks: dict[int, int]
    switches: dict[int, int]

    @classmethod
    def of(cls, pid: int) -> Reading:
        ticks, switches = {}, {}
        for each in descendants(pid):
            with contextlib.suppress(OSError, ValueError):
                ticks[each] = cpu_ticks(each)
                switches[each] = voluntary_switches(each)
        return cls(time.monotonic(), ticks, switches)


def spent(before: Reading, after: Reading) -> tuple[float, float, float]:
    """(CPU seconds of the whole tree, of the main process alone, voluntary switches)."""
    main = next(iter(before.ticks))  # `descendants` lists the root first
    tree = sum(after.ticks[p] - before.ticks.get(p, 0) for p in after.ticks) / TICKS_PER_S
    alone = (after.ticks.get(main, 0) - before.ticks.get(main, 0)) / TICKS_PER_S
    switches = sum(after.switches[p] - before.switches.get(p, 0) for p in after.switches)
    return tree, alone, switches


# --- the processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Measured:
    name: str
    command: list[str]
    env: dict[str, str]
    cwd: Path
    health_url: str | None = None
    ready_line: str | None = None
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    before: Reading | None = None
    result: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        self.log = self.cwd / f"{self.name.replace(' ', '_').strip('()')}.log"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT
            )

    def ready(self) -> bool:
        assert self.process is not None and self.log is not None
        if self.process.poll() is not None:
            raise SystemExit(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
        if self.health_url is not None:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(self.health_url, timeout=2).status_code == 200
            return False
        if self.ready_line is not None:
            return self.ready_line in self.log.read_text(errors="replace")
        return True

    def log_lines(self) -> int:
        assert self.log is not None
        return len(self.log.read_bytes().splitlines())

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


SERVICE_ENV: dict[str, str] = {}
"""`--service-env NAME=VALUE`: more settings for the service processes (experiments)."""


def service_env(kafka: str, prefix: str, store: str | None, **more: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("OKR_")}
    env |= SERVICE_ENV
    env |= {
        "PYTHONPATH": str(REPOSITORY),
        "OKR_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "OKR_TOPIC_PREFIX": prefix,
        "OKR_HTTP_HOST": "127.0.0.1",
    }
    if store is not None:
        env |= {"OKR_EVENT_STORE_URL": store, "OKR_READ_STORE_URL": store}
    return env | more


@contextlib.contextmanager
def fresh_database(admin_url: str | None) -> Iterator[str | None]:
    """A new PostgreSQL database for one scenario (None: the SQLite default in `var/`)."""
    if admin_url is None:
        yield None
        return
    name = f"okr_idle_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


CONSUMER_BASELINE = """
import asyncio, sys
from aiokafka import AIOKafkaConsumer

async def main(bootstrap: str, topic: str, group: str) -> None:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    print("consumer holding", consumer.assignment(), flush=True)
    try:
        while True:
            await consumer.getmany(timeout_ms=500)
    finally:
        await consumer.stop()

asyncio.run(main(*sys.argv[1:4]))
"""


async def create_topic(kafka: str, topic: str) -> int:
    """Create the baseline's topic; returns how many topics the broker has (every client that
    starts reads all their metadata, so a crowded shared broker costs more)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])
        return len(await admin.list_topics())
    finally:
        await admin.close()


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + STARTUP_S
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not ready within {STARTUP_S:.0f}s")
        time.sleep(0.25)


def run(args: argparse.Namespace) -> dict[str, Any]:
    python = sys.executable
    scratch = Path(tempfile.mkdtemp(prefix="okr-idle-"))
    run_id = uuid.uuid4().hex[:8]
    baseline_topic = f"idle-{run_id}.baseline"
    broker_topics = asyncio.run(create_topic(args.kafka, baseline_topic))
    with (
        fresh_database(args.store) as alone_store,
        fresh_database(args.store) as pair_store,
    ):
        for name in ("sleep", "consumer", "serve", "pair"):
            (scratch / name).mkdir()
        serve_port, pair_port = free_port(), free_port()
        processes = [
            Measured(
                "sleep (baseline)",
                [python, "-c", "import time; time.sleep(86400)"],
                dict(os.environ),
                scratch / "sleep",
            ),
            Measured(
                "aiokafka consumer (baseline)",
                [python, "-c", CONSUMER_BASELINE, args.kafka, baseline_topic, baseline_topic],
                dict(os.environ),
                scratch / "consumer",
                ready_line="consumer holding",
            ),
            Measured(
                "okr serve",
                [python, "-m", "services.cli.main", "serve"],
                service_env(
                    args.kafka, f"idle-{run_id}-a.", alone_store, OKR_HTTP_PORT=str(serve_port)
                ),
                scratch / "serve",
                health_url=f"http://127.0.0.1:{serve_port}/health",
            ),
            Measured(
                "okr serve (no scorer)",
                [python, "-m", "services.cli.main", "serve"],
                service_env(
                    args.kafka,
                    f"idle-{run_id}-b.",
                    pair_store,
                    OKR_HTTP_PORT=str(pair_port),
                    OKR_SERVE_RUNS_SCORER="false",
                ),
                scratch / "pair",
                health_url=f"http://127.0.0.1:{pair_port}/health",
            ),
        ]
        scorer = Measured(
            "okr scorer",
            [python, "-m", "services.cli.main", "scorer"],
            service_env(args.kafka, f"idle-{run_id}-b.", pair_store),
            scratch / "pair",
            ready_line=SCORER_READY,
        )
        try:
            for each in processes:
                each.start()
            for each in processes:
                wait_until(each.ready, each.name)
            scorer.start()  # after its `okr serve`, which made the stores and topics
            wait_until(scorer.ready, scorer.name)
            processes.append(scorer)
            time.sleep(args.settle)

            load_before = uptime()
            lines_before = {each.name: each.log_lines() for each in processes}
            for each in processes:
                assert each.process is not None
                each.before = Reading.of(each.process.pid)
            time.sleep(args.seconds)
            for each in processes:
                assert each.process is not None and each.before is not None
                after = Reading.of(each.process.pid)
                tree, alone, switches = spent(each.before, after)
                elapsed = after.at - each.before.at
                each.result = {
                    "cpu_percent": round(100 * tree / elapsed, 3),
                    "cpu_percent_main_process": round(100 * alone / elapsed, 3),
                    "cpu_s": round(tree, 2),
                    "processes": len(after.ticks),
                    "wakeups_per_s": round(switches / elapsed, 1),
                    "rss_mb": round(rss_mb(each.process.pid), 1),
                    "log_lines_while_measured": each.log_lines() - lines_before[each.name],
                    "seconds": round(elapsed, 1),
                }
            load_after = uptime()
        finally:
            for each in reversed([*processes, scorer]):
                each.stop()
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "processes": {each.name: each.result for each in processes},
        "context": {
            "seconds": args.seconds,
            "settle_s": args.settle,
            "store": "postgresql" if args.store else "sqlite",
            "service_env": dict(SERVICE_ENV),
            "kafka": args.kafka,
            "broker_topics": broker_topics,
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "machine": platform.platform(),
            "load_before": load_before,
            "load_after": load_after,
            "scratch": str(scratch) if args.keep else None,
        },
    }


def print_table(report: dict[str, Any]) -> None:
    context = report["context"]
    print(
        f"idle for {context['seconds']} s after {context['settle_s']} s settling; "
        f"store {context['store']}; {context['cores']} cores; "
        f"{context['broker_topics']} topics on the broker"
    )
    if context["service_env"]:
        print(f"service settings: {context['service_env']}")
    print(f"load before: {context['load_before']}")
    print(f"load after:  {context['load_after']}")
    header = (
        f"{'process':<30} {'CPU % of a core':>15} {'main process':>13} "
        f"{'wake-ups/s':>11} {'procs':>6} {'RSS MB':>7} {'log lines':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, row in report["processes"].items():
        print(
            f"{name:<30} {row['cpu_percent']:>15.2f} {row['cpu_percent_main_process']:>13.2f} "
            f"{row['wakeups_per_s']:>11.1f} {row['processes']:>6} {row['rss_mb']:>7.1f} "
            f"{row['log_lines_while_measured']:>9}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured idle time")
    parser.add_argument("--settle", type=float, default=20.0, help="wait after ready")
    parser.add_argument(
        "--kafka", default=os.environ.get("OKR_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    parser.add_argument(
        "--store", default=None, help="a PostgreSQL admin URL (default: SQLite files in var/)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directories")
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the okr processes, e.g. OKR_HEALTH_INTERVAL_S=60 (repeatable)",
    )
    args = parser.parse_args()
    SERVICE_ENV.update(setting.split("=", 1) for setting in args.service_env)
    if not sys.platform.startswith("linux"):
        raise SystemExit("reads /proc: Linux only")
    report = run(args)
    print_table(report)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
