"""A job board in the Prometheus format: each job's state, dead letters and lock (the relay's), its
stages' timings.

`okr serve` renders it in `GET /metrics` next to the health monitor's last round
(`services.http.metrics`); `okr scorer`, which has no HTTP API, serves it alone on
`--metrics-port` (`serve_job_metrics`). Rendered from memory when scraped, like the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from projections.job_health import JobBoard

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer


def board_families(board: JobBoard) -> tuple[Metric, ...]:
    """Per job name (two entries of one name are summed; up only when both run, holding when
    either holds), then the `okr_stage_*` histograms of the board's jobs."""
    up = GaugeMetricFamily(
        "okr_job_up",
        "1 while the background job works, 0 while it is retrying (or not started yet).",
        labels=("job",),
    )
    failures = CounterMetricFamily(
        "okr_job_failures",
        "Failed attempts of the background job since the process started.",
        labels=("job",),
    )
    dead_letters = CounterMetricFamily(
        "okr_dead_letters",
        "Records the background job set aside on okr.dlq, by reason, since the process started.",
        labels=("job", "reason"),
    )
    lease_held = GaugeMetricFamily(
        "okr_job_lease_held",
        "1 while this process holds the lock of a job that one instance of a fleet runs at a "
        "time (the relay), else 0.",
        labels=("job",),
    )
    running: dict[str, bool] = {}
    holding: dict[str, bool] = {}
    failed: Counter[str] = Counter()
    set_aside: Counter[tuple[str, str]] = Counter()
    for job in board.jobs():
        entry = job.to_json()
        running[job.name] = running.get(job.name, True) and entry["state"] == "running"
        failed[job.name] += entry["failures_total"]
        for reason, count in entry["dead_letters"].items():
            set_aside[(job.name, reason)] += count
        if "lease" in entry:
            holding[job.name] = holding.get(job.name, False) or entry["lease"]["holding"]
    for name, works in running.items():
        up.add_metric([name], 1 if works else 0)
        failures.add_metric([name], failed[name])
    for (name, reason), count in sorted(set_aside.items()):
        dead_letters.add_metric([name, reason], count)
    for name, holds in holding.items():
        lease_held.add_metric([name], 1 if holds else 0)
    return (up, failures, dead_letters, lease_held, *board.stages.collect())


class JobBoardCollector(Collector):
    """Renders a board (the process's, for `okr scorer`) when scraped."""

    def __init__(self, board: JobBoard) -> None:
        self.board = board

    def describe(self) -> Iterator[Metric]:
        return iter(board_families(JobBoard()))

    def collect(self) -> Iterator[Metric]:
        return iter(board_families(self.board))


def serve_job_metrics(board: JobBoard, host: str, port: int) -> WSGIServer:
    """`GET /metrics` of `board` on host:port, from a daemon thread, until the process ends
    (no key asked: bind it where only the scraper can reach it)."""
    registry = CollectorRegistry()
    registry.register(JobBoardCollector(board))
    server, _ = start_http_server(port, host, registry)
    return server
