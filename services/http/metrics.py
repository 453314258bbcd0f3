"""`GET /metrics`: dependencies, consumer lag, relay backlog, jobs and their stages' timings, in
the Prometheus format.

Rendered from memory, never measured per scrape: the lag, the backlog and the dependencies come
from the health monitor's last round (`services.operations.health_monitor`, every
`OKR_HEALTH_INTERVAL_S`), whose age is `okr_health_checked_age_seconds`; the jobs and the batch
size and duration of each of their stages from the app's job board (`projections.job_health`,
`services.operations.job_metrics`). Each app has its own registry and its own board: two apps in
one process (tests, or later a second API) never share or double-register series, and nothing
leaks into prometheus_client's global registry. A source the last round could not read (Kafka
down, event store down) is reported as `okr_lag_source_up{source=...} 0` and its series are left
out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.datastructures import State

from projections.job_health import JobBoard
from services.operations.health_monitor import Probe
from services.operations.job_metrics import board_families

router = APIRouter(tags=["operations"])

PARTITION_LABELS = ("group", "topic", "partition")
AS_OF = " As of the health monitor's last probe (okr_health_checked_age_seconds)."


class AppCollector(Collector):
    """Renders the app's health monitor's last probe and its job board, when scraped."""

    def __init__(self, state: State) -> None:
        self.state = state

    def describe(self) -> Iterator[Metric]:
        return iter((*_probe_families(None), *board_families(JobBoard())))

    def collect(self) -> Iterator[Metric]:
        monitor = getattr(self.state, "health", None)
        probe: Probe | None = monitor.last if monitor is not None else None
        board: JobBoard = getattr(self.state, "jobs", None) or JobBoard()
        return iter((*_probe_families(probe), *board_families(board)))


def _probe_families(probe: Probe | None) -> tuple[Metric, ...]:
    age = GaugeMetricFamily(
        "okr_health_checked_age_seconds",
        "Seconds since the health monitor's last probe, which every okr_consumer_*, "
        "okr_relay_*, okr_event_store_* and okr_*_up series shows (absent before the first).",
    )
    check_up = GaugeMetricFamily(
        "okr_dependency_up",
        "1 when the dependency (kafka, event_store, read_store) answered the last probe, else 0."
        + AS_OF,
        labels=("dependency",),
    )
    committed = GaugeMetricFamily(
        "okr_consumer_committed_offset",
        "Next offset the consumer group will read (committed), per partition." + AS_OF,
        labels=PARTITION_LABELS,
    )
    end = GaugeMetricFamily(
        "okr_consumer_end_offset",
        "Offset the next message on the partition will get." + AS_OF,
        labels=PARTITION_LABELS,
    )
    lag = GaugeMetricFamily(
        "okr_consumer_lag",
        "Messages on the partition the consumer group has not committed yet." + AS_OF,
        labels=PARTITION_LABELS,
    )
    up = GaugeMetricFamily(
        "okr_lag_source_up",
        "1 when the last probe could read the source (kafka, event_store), else 0." + AS_OF,
        labels=("source",),
    )
    position = GaugeMetricFamily(
        "okr_relay_position",
        "Last event store notification id the relay saw acknowledged on okr.events." + AS_OF,
    )
    stored = GaugeMetricFamily(
        "okr_event_store_notifications",
        "Last notification id in the event store (events stored so far)." + AS_OF,
    )
    pending = GaugeMetricFamily(
        "okr_relay_pending_events",
        "Stored events not yet acknowledged on okr.events by the relay." + AS_OF,
    )
    if probe is not None:
        age.add_metric([], probe.age_s())
        for name, problem in probe.problems.items():
            check_up.add_metric([name], 0 if problem else 1)
        kafka, relay = probe.kafka, probe.relay
        for entry in kafka.partitions:
            labels = [entry.group_id, entry.topic, str(entry.partition)]
            if entry.committed is not None:
                committed.add_metric(labels, entry.committed)
            end.add_metric(labels, entry.end_offset)
            lag.add_metric(labels, entry.lag)
        up.add_metric(["kafka"], 0 if kafka.error else 1)
        if relay is not None:
            up.add_metric(["event_store"], 1)
            position.add_metric([], relay.position)
            stored.add_metric([], relay.stored)
            pending.add_metric([], relay.pending)
        elif probe.relay_error is not None:
            up.add_metric(["event_store"], 0)
    return (age, check_up, committed, end, lag, up, position, stored, pending)


class AppMetrics:
    """One per app: its registry and the collector registered in it."""

    def __init__(self, state: State) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(AppCollector(state))


async def get_metrics(request: Request) -> AppMetrics:
    """Async: FastAPI would run a plain function in a worker thread, once per scrape."""
    metrics: AppMetrics | None = getattr(request.app.state, "metrics", None)
    if metrics is None:
        metrics = AppMetrics(request.app.state)
        request.app.state.metrics = metrics
    return metrics


@router.get(
    "/metrics",
    summary="Dependencies, consumer lag, relay backlog (as of the health monitor's last probe), "
    "background jobs and their stages' timings, in the Prometheus text format",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(app_metrics: Annotated[AppMetrics, Depends(get_metrics)]) -> Response:
    return Response(generate_latest(app_metrics.registry), media_type=CONTENT_TYPE_LATEST)
