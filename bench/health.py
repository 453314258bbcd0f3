"""`GET /health` under load: what an anonymous flood costs, next to a read, and to the writes.

Starts a real `okr serve` (a process, configured through the environment as deployed) against a
broker, with its own scratch directory, stores (SQLite files, or a fresh PostgreSQL database),
topics and admin key; creates an objective and activates it; then measures, in one run:

(a) a cached read, `GET /objectives/{id}` (the read store), by `--concurrency` callers at once,
    each on a keep-alive connection of its own, asking again as soon as answered;
(b) `GET /health`, anonymous, by as many callers at once;
(c) check-ins (`POST .../check-ins`) one after another, nothing else running: the baseline;
(d) the same check-ins while a second process hammers `GET /health` with `--concurrency`
    anonymous callers (so the two load generators do not share an event loop).

Each series is bounded: `--requests` requests for (a) and (b), `--checkins` for (c) and (d), and
`--time-limit` seconds each. The targets: /health p99 within 2x the read's p99, and the check-in
p99 unchanged while /health is hammered (here: (d) within 1.5x (c), the run-to-run noise of one
series on a shared two-core machine). `--repeat` runs (3), each with its own service; prints a
row per run and the medians, with the load average; `--json PATH` writes them.

    .venv/bin/python -m bench.health --bootstrap 127.0.0.1:9092 --json var/bench/health.json
    .venv/bin/python -m bench.health --health-max-per-s 500 --repeat 1  # the service's pacing
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from bench.kpi_scoring import delete_topics, stores
from bench.stages import percentile
from services.access.keys import add_key
from services.access.principals import Role
from services.settings import Settings
from tests import seed
from tests.e2e.conftest import environment_for, free_port

ROOT = Path(__file__).resolve().parents[1]
STARTUP_S = 60.0
TARGET_HEALTH_OVER_READ = 2.0
TARGET_CHECKIN_UNDER_HEALTH = 1.5


@dataclass
class Series:
    """Latencies of one series (seconds) and the answers that were not the expected status."""

    latencies: list[float] = field(default_factory=list)
    unexpected: int = 0
    seconds: float = 0.0

    def ms(self, share: float) -> float:
        return round(1000 * percentile(self.latencies, share), 1) if self.latencies else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "requests": len(self.latencies),
            "unexpected": self.unexpected,
            "p50_ms": self.ms(0.50),
            "p99_ms": self.ms(0.99),
            "per_s": round(len(self.latencies) / self.seconds) if self.seconds else 0,
        }


class Caller:
    """One keep-alive HTTP/1.1 connection sending one GET after the other: a few microseconds
    of client work per request (httpx spends a millisecond and more), so the series measure the
    service, not the load generator, which shares the machine's cores."""

    def __init__(self, url: str, path: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self) -> int:
        """The answer's status code (its body is read and dropped)."""
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(self.request)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


async def hammer(
    url: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    concurrency: int,
    requests: int,
    time_limit_s: float,
    stop: asyncio.Event | None = None,
    ready: Callable[[], None] = lambda: None,
) -> Series:
    """`concurrency` callers, each on its own connection, each sending its next request when
    its last one is answered, until `requests` were sent, `time_limit_s` passed or `stop` is
    set. Each caller first sends two requests unmeasured (then `ready()` is called): every
    connection is open, and the service has answered the path before, when the clock starts."""
    callers = [Caller(url, path, headers or {}) for _ in range(concurrency)]
    series = Series()
    try:
        for _ in range(2):
            await asyncio.gather(*(caller.get() for caller in callers))
        ready()
        remaining = requests
        began = time.perf_counter()
        deadline = began + time_limit_s

        async def call(caller: Caller) -> None:
            nonlocal remaining
            while remaining > 0 and time.perf_counter() < deadline:
                if stop is not None and stop.is_set():
                    return
                remaining -= 1
                sent = time.perf_counter()
                status = await caller.get()
                series.latencies.append(time.perf_counter() - sent)
                series.unexpected += status != HTTPStatus.OK

        await asyncio.gather(*(call(caller) for caller in callers))
        series.seconds = time.perf_counter() - began
    finally:
        await asyncio.gather(*(caller.close() for caller in callers))
    return series


# --- the service ----------------------------------------------------------------------------------


@dataclass
class Service:
    url: str
    admin_key: str
    settings: Settings
    log: Path


@contextlib.contextmanager
def serve(
    bootstrap: str, store: str, directory: Path, health_max_per_s: float | None = None
) -> Iterator[Service]:
    """`okr serve` on a free port, in `directory` (its keys file and log), with an admin key."""
    with stores(store) as (event_store_url, read_store_url):
        settings = Settings(
            kafka_bootstrap_servers=bootstrap,
            topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
            event_store_url=event_store_url,
            read_store_url=read_store_url,
            api_keys_file=directory / "api-keys.json",
        )
        admin = add_key(settings.api_keys_file, "bench-admin", Role.ADMIN)
        port = free_port()
        environment = environment_for(settings, port) | {"PYTHONPATH": str(ROOT)}
        if health_max_per_s is not None:
            environment["OKR_HEALTH_MAX_PER_S"] = str(health_max_per_s)
        log = directory / "serve.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.cli.main", "serve"],
                cwd=directory,
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            yield Service(f"http://127.0.0.1:{port}", admin.key, settings, log)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            asyncio.run(delete_topics(settings))


async def wait_until_healthy(service: Service) -> None:
    deadline = time.monotonic() + STARTUP_S
    async with httpx.AsyncClient(base_url=service.url, timeout=2) as http:
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/health")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                tail = service.log.read_text(errors="replace")[-3000:]
                raise SystemExit(f"okr serve not healthy in {STARTUP_S:.0f}s:\n{tail}")
            await asyncio.sleep(0.2)


@dataclass(frozen=True)
class Objective:
    objective_id: str
    key_result_id: str


async def active_objective(http: httpx.AsyncClient) -> Objective:
    """Created, activated and projected (the read below is served from the read store)."""
    body = {
        "title": "Grow product X",
        "owner": "alice",
        "team": "sales",
        "period_start": seed.QUARTER_START.isoformat(),
        "period_end": seed.QUARTER_END.isoformat(),
        "key_results": [seed.SALES.as_json()],
    }
    created = await http.post("/objectives", json=body)
    created.raise_for_status()
    objective_id = created.json()["objective_id"]
    (await http.post(f"/objectives/{objective_id}/activate")).raise_for_status()
    view = await http.get(f"/objectives/{objective_id}", params={"min_version": 2, "wait": 30})
    view.raise_for_status()
    return Objective(objective_id, view.json()["key_results"][0]["key_result_id"])


async def check_ins(
    http: httpx.AsyncClient, objective: Objective, count: int, time_limit_s: float
) -> Series:
    """One caller, one check-in after the other (each a new value), as a team member does."""
    path = f"/objectives/{objective.objective_id}/key-results/{objective.key_result_id}/check-ins"
    series = Series()
    began = time.perf_counter()
    for value in range(1_001, 1_001 + count):
        if time.perf_counter() - began > time_limit_s:
            break
        sent = time.perf_counter()
        response = await http.post(path, json={"value": value})
        series.latencies.append(time.perf_counter() - sent)
        series.unexpected += response.status_code != HTTPStatus.OK
    series.seconds = time.perf_counter() - began
    return series


# --- (d): /health hammered by a second process ----------------------------------------------------


@contextlib.asynccontextmanager
async def health_hammered(url: str, concurrency: int, limit_s: float) -> AsyncIterator[Series]:
    """`python -m bench.health --hammer URL` for the block; the series it measured, after."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.health",
        "--hammer",
        url,
        "--concurrency",
        str(concurrency),
        "--time-limit",
        str(limit_s),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    measured = Series()
    try:
        if (await child.stdout.readline()).strip() != b"ready":
            raise SystemExit("the /health hammer process exited before it started")
        yield measured
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)
        output = await child.stdout.read()
        await child.wait()
    if output.strip():
        summary = orjson.loads(output)
        measured.latencies = summary.pop("latencies")
        measured.unexpected, measured.seconds = summary["unexpected"], summary["seconds"]


async def run_hammer(url: str, concurrency: int, time_limit_s: float) -> None:
    """The child of (d): anonymous /health callers until SIGTERM (or the time limit); says
    `ready` on stdout when it starts, and its latencies (JSON) when it stops."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    series = await hammer(
        url,
        "/health",
        concurrency=concurrency,
        requests=sys.maxsize,
        time_limit_s=time_limit_s,
        stop=stop,
        ready=lambda: print("ready", flush=True),
    )
    document = {
        "latencies": series.latencies,
        "unexpected": series.unexpected,
        "seconds": series.seconds,
    }
    print(orjson.dumps(document).decode(), flush=True)


# --- one run --------------------------------------------------------------------------------------


async def measure(service: Service, arguments: argparse.Namespace) -> dict[str, Any]:
    await wait_until_healthy(service)
    concurrency, requests, limit_s = arguments.concurrency, arguments.requests, arguments.time_limit
    admin = {"Authorization": f"Bearer {service.admin_key}"}
    load_before = os.getloadavg()
    async with httpx.AsyncClient(base_url=service.url, headers=admin, timeout=30) as http:
        objective = await active_objective(http)
        read = await hammer(
            service.url,
            f"/objectives/{objective.objective_id}",
            headers=admin,
            concurrency=concurrency,
            requests=requests,
            time_limit_s=limit_s,
        )
        health = await hammer(
            service.url,
            "/health",
            concurrency=concurrency,
            requests=requests,
            time_limit_s=limit_s,
        )
        alone = await check_ins(http, objective, arguments.checkins, limit_s)
        async with health_hammered(service.url, concurrency, limit_s + 30) as during:
            hammered = await check_ins(http, objective, arguments.checkins, limit_s)
    load_after = os.getloadavg()
    figures = {
        "read": read.summary(),
        "health": health.summary(),
        "checkin_alone": alone.summary(),
        "checkin_under_health": hammered.summary(),
        "health_during_checkins": during.summary(),
    }
    return {
        **figures,
        "health_p99_over_read_p99": ratio(health.ms(0.99), read.ms(0.99)),
        "checkin_p99_under_health_over_alone": ratio(hammered.ms(0.99), alone.ms(0.99)),
        "load_average_before": [round(load, 2) for load in load_before],
        "load_average_after": [round(load, 2) for load in load_after],
    }


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 2) if denominator else float("inf")


def one_run(arguments: argparse.Namespace) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="okr-bench-health-") as directory,
        serve(
            arguments.bootstrap, arguments.store, Path(directory), arguments.health_max_per_s
        ) as service,
    ):
        return asyncio.run(measure(service, arguments))


# --- report ---------------------------------------------------------------------------------------

COLUMNS: tuple[tuple[str, str], ...] = (
    ("read.p50_ms", "(a) read p50"),
    ("read.p99_ms", "(a) read p99"),
    ("health.p50_ms", "(b) /health p50"),
    ("health.p99_ms", "(b) /health p99"),
    ("checkin_alone.p99_ms", "(c) check-in p99"),
    ("checkin_under_health.p99_ms", "(d) check-in p99"),
    ("health_during_checkins.per_s", "(d) /health req/s"),
    ("health_p99_over_read_p99", "(b)/(a) p99"),
    ("checkin_p99_under_health_over_alone", "(d)/(c) p99"),
)


def figure(run: dict[str, Any], key: str) -> float:
    value: Any = run
    for part in key.split("."):
        value = value[part]
    return float(value)


def medians(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    return {key: statistics.median(figure(run, key) for run in runs) for key, _ in COLUMNS}


def table(runs: Sequence[dict[str, Any]]) -> str:
    rows = [
        (f"run {n}", {key: figure(run, key) for key, _ in COLUMNS}) for n, run in enumerate(runs, 1)
    ]
    rows.append(("median", medians(runs)))
    cells = [["", *(title for _, title in COLUMNS)]]
    for name, values in rows:
        cells.append([name, *(f"{values[key]:,.2f}".rstrip("0").rstrip(".") for key, _ in COLUMNS)])
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    median = rows[-1][1]
    lines.append(
        f"targets: /health p99 <= {TARGET_HEALTH_OVER_READ:g}x the read's p99 (median "
        f"{median['health_p99_over_read_p99']:.2f}x); check-in p99 under /health <= "
        f"{TARGET_CHECKIN_UNDER_HEALTH:g}x alone (median "
        f"{median['checkin_p99_under_health_over_alone']:.2f}x); latencies in ms"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--store", default="sqlite", help="'sqlite' or a postgresql:// URL")
    parser.add_argument("--concurrency", type=int, default=50, help="callers at once, (a) (b) (d)")
    parser.add_argument("--requests", type=int, default=2_000, help="requests of (a) and of (b)")
    parser.add_argument("--checkins", type=int, default=300, help="check-ins of (c) and of (d)")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds, per series")
    parser.add_argument("--repeat", type=int, default=3, help="independent runs (medians shown)")
    parser.add_argument(
        "--health-max-per-s", type=float, help="OKR_HEALTH_MAX_PER_S of the service (its default)"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--hammer", metavar="URL", help=argparse.SUPPRESS)  # (d)'s child
    arguments = parser.parse_args(argv)
    if arguments.hammer:
        asyncio.run(run_hammer(arguments.hammer, arguments.concurrency, arguments.time_limit))
        return 0
    runs = [one_run(arguments) for _ in range(max(1, arguments.repeat))]
    print(table(runs))
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    print(
        f"({arguments.concurrency} callers, {arguments.requests:,} requests per series (a) (b), "
        f"{arguments.checkins} check-ins per series (c) (d), store {arguments.store}, "
        f"{os.cpu_count()} cores; load average before/after each run: "
        + "; ".join(
            f"{run['load_average_before'][0]:.2f}/{run['load_average_after'][0]:.2f}"
            for run in runs
        )
        + f")\nuptime: {uptime}"
    )
    if arguments.json:
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        document = {
            **medians(runs),
            "targets": {
                "health_p99_over_read_p99": TARGET_HEALTH_OVER_READ,
                "checkin_p99_under_health_over_alone": TARGET_CHECKIN_UNDER_HEALTH,
            },
            "runs": runs,
            "context": {
                "concurrency": arguments.concurrency,
                "requests": arguments.requests,
                "checkins": arguments.checkins,
                "store": arguments.store,
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "uptime": uptime,
            },
        }
        arguments.json.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
