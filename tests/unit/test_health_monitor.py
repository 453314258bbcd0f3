"""The health monitor's log and verdicts, with its probes replaced: no broker, no store."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import pytest

from projections.job_health import JobBoard
from services import stores
from services.http.health import Pacer, report
from services.kafka import admin as kafka_admin
from services.kafka import lag
from services.kafka.lag import KafkaLag
from services.operations import health_monitor
from services.operations.health_monitor import JOB_NAME, HealthMonitor, Probe
from services.settings import Settings


@pytest.fixture
def kafka_answers(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """What each round's Kafka probe answers, in order (None: it answered); stores answer."""
    answers: list[str | None] = []

    async def probe_kafka(_: Settings, timeout_s: float = 3.0, held: object = None) -> str | None:
        return answers.pop(0)

    async def kafka_lag(_: Settings, **__: object) -> KafkaLag:
        return KafkaLag()

    monkeypatch.setattr(kafka_admin, "probe_kafka", probe_kafka)
    monkeypatch.setattr(lag, "kafka_lag", kafka_lag)
    monkeypatch.setattr(stores, "probe_store", lambda url, timeout_s=3.0: None)
    return answers


async def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    kafka_answers: list[str | None], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=health_monitor.__name__)
    kafka_answers += [None, "KafkaConnectionError: refused", "refused", "refused", None, None]
    monitor = HealthMonitor(Settings(), interval_s=5.0)
    for _ in range(len(kafka_answers)):
        await monitor.probe()
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("health: kafka unreachable: KafkaConnectionError: refused")
    assert lines[1].startswith("health: kafka reachable again after ")
    assert lines[1].endswith("(3 probe(s) failed)")


async def test_a_dependency_down_at_the_first_round_is_logged_and_reported(
    kafka_answers: list[str | None], caplog: pytest.LogCaptureFixture
) -> None:
    kafka_answers += ["refused", "refused"]
    monitor = HealthMonitor(Settings())
    first = await monitor.probe()
    await monitor.probe()
    assert len(caplog.records) == 1
    body = report(monitor, JobBoard())
    assert (body["status"], body["down"]) == ("degraded", ["kafka"])
    kafka = body["checks"]["kafka"]
    assert (kafka["error"], kafka["failed_probes"]) == ("refused", 2)
    assert kafka["since"] == first.checked_at.isoformat()


def test_a_round_too_old_means_the_monitor_is_down() -> None:
    monitor = HealthMonitor(Settings(), interval_s=5.0)
    now = time.monotonic()
    problems: dict[str, str | None] = dict.fromkeys(("kafka", "event_store", "read_store"))
    monitor.last = Probe(datetime.now(UTC), now, problems, KafkaLag())
    assert report(monitor, JobBoard())["status"] == "ok"
    old = now - monitor.stale_after_s - 1
    monitor.last = Probe(datetime.now(UTC), old, problems, KafkaLag())
    body = report(monitor, JobBoard())
    assert (body["status"], body["down"]) == ("degraded", [JOB_NAME])


def test_before_the_first_round_a_retrying_job_is_already_degraded() -> None:
    board = JobBoard()
    assert report(None, board)["status"] == "starting"
    with board.job("relay") as job:
        job.failed("OSError: no route")
        body = report(HealthMonitor(Settings()), board)
    assert (body["status"], body["down"]) == ("degraded", ["relay"])


def test_the_pacer_lets_a_burst_through_then_spaces_answers_and_refuses_past_its_wait() -> None:
    now = [0.0]
    pacer = Pacer(rate=10, burst=2, max_wait_s=0.25, clock=lambda: now[0])
    waits = [pacer.reserve() for _ in range(5)]
    assert waits == [0.0, 0.0, pytest.approx(0.1), pytest.approx(0.2), None]
    now[0] = 1.0
    assert pacer.reserve() == 0.0
