"""`GET /metrics`: consumer lag and relay backlog in the Prometheus text format.

Measured when scraped (`services.lag`), so a number is never older than the scrape asking for it.
Each app has its own registry: two apps in one process (tests, or later a second API) never share
or double-register series, and nothing leaks into prometheus_client's global registry.
A source that cannot be read (Kafka down, event store down) is reported as
`okr_lag_source_up{source=...} 0` and its series are left out; the endpoint still answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from eventsourcing.persistence import PersistenceError
from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.api.health import SettingsDep
from services.application import OkrApplication
from services.lag import KafkaLag, RelayLag, kafka_lag, relay_lag
from services.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])

PARTITION_LABELS = ("group", "topic", "partition")


@dataclass(frozen=True)
class Measurement:
    kafka: KafkaLag
    relay: RelayLag | None = None
    """None when not measured: no application yet, or the event store failed (`relay_error`)."""
    relay_error: str | None = None


class LagCollector(Collector):
    """Renders the last measurement; `/metrics` measures right before rendering."""

    def __init__(self) -> None:
        self.measurement: Measurement | None = None

    def describe(self) -> Iterator[Metric]:
        return _families(None)

    def collect(self) -> Iterator[Metric]:
        return _families(self.measurement)


def _families(measurement: Measurement | None) -> Iterator[Metric]:
    committed = GaugeMetricFamily(
        "okr_consumer_committed_offset",
        "Next offset the consumer group will read (committed), per partition.",
        labels=PARTITION_LABELS,
    )
    end = GaugeMetricFamily(
        "okr_consumer_end_offset",
        "Offset the next message on the partition will get.",
        labels=PARTITION_LABELS,
    )
    lag = GaugeMetricFamily(
        "okr_consumer_lag",
        "Messages on the partition the consumer group has not committed yet.",
        labels=PARTITION_LABELS,
    )
    up = GaugeMetricFamily(
        "okr_lag_source_up",
        "1 when this scrape could read the source (kafka, event_store), else 0.",
        labels=("source",),
    )
    position = GaugeMetricFamily(
        "okr_relay_position",
        "Last event store notification id the relay saw acknowledged on okr.events.",
    )
    stored = GaugeMetricFamily(
        "okr_event_store_notifications",
        "Last notification id in the event store (events stored so far).",
    )
    pending = GaugeMetricFamily(
        "okr_relay_pending_events",
        "Stored events not yet acknowledged on okr.events by the relay.",
    )
    if measurement is not None:
        kafka, relay = measurement.kafka, measurement.relay
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
        elif measurement.relay_error is not None:
            up.add_metric(["event_store"], 0)
    return iter((committed, end, lag, up, position, stored, pending))


class AppMetrics:
    """One per app: its registry and the lag collector registered in it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.lag = LagCollector()
        self.registry.register(self.lag)


def get_metrics(request: Request) -> AppMetrics:
    metrics: AppMetrics | None = getattr(request.app.state, "metrics", None)
    if metrics is None:
        metrics = AppMetrics()
        request.app.state.metrics = metrics
    return metrics


async def measure(settings: Settings, application: OkrApplication | None) -> Measurement:
    """Kafka and the event store are read concurrently; neither's outage hides the other."""

    async def relay() -> tuple[RelayLag | None, str | None]:
        if application is None:
            return None, None  # the app's lifespan has not opened the event store yet
        try:
            return await asyncio.to_thread(relay_lag, application), None
        except PersistenceError as error:
            log.warning("relay backlog not measured: %s: %s", type(error).__name__, error)
            return None, f"{type(error).__name__}: {error}"

    kafka, (relay_measured, relay_error) = await asyncio.gather(kafka_lag(settings), relay())
    return Measurement(kafka, relay_measured, relay_error)


@router.get(
    "/metrics",
    summary="Consumer lag per group and partition, relay backlog (Prometheus text format)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(
    request: Request,
    settings: SettingsDep,
    app_metrics: Annotated[AppMetrics, Depends(get_metrics)],
) -> Response:
    application = getattr(request.app.state, "application", None)
    app_metrics.lag.measurement = await measure(settings, application)
    return Response(generate_latest(app_metrics.registry), media_type=CONTENT_TYPE_LATEST)
