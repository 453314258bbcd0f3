"""`GET /health`: answered from the health monitor's last round and the app's job board.

Anonymous callers get `{"status": ...}` alone; a reader gets each check, the lag and the jobs.
200 when Kafka and both stores answered and no job is retrying, 503 otherwise (`down` names
what); 503 `starting` before the monitor's first round. No request probes anything itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from projections.backoff import Backoff, keep_running
from projections.job_health import current_job
from services.commands.application import OkrApplication
from services.http.app import BackgroundJob, create_app
from services.projector_service import open_read_store
from services.settings import Settings
from tests.auth_support import auth_headers
from tests.health_support import READER, count_probes, serving
from tests.kafka_support import eventually

log = logging.getLogger(__name__)


async def test_anonymous_callers_get_the_status_alone(settings: Settings) -> None:
    async with serving(settings) as (_, client):
        response = await client.get("/health")
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "ok"}
        wrong_key = await client.get("/health", headers={"Authorization": "Bearer okr_not_a_key"})
        assert (wrong_key.status_code, wrong_key.json()) == (200, {"status": "ok"})


async def test_a_reader_gets_every_check_the_lag_and_the_jobs(settings: Settings) -> None:
    async with serving(settings) as (_, client):
        response = await client.get("/health", headers=READER)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["down"]) == ("ok", [])
    assert set(body["checks"]) == {"kafka", "event_store", "read_store"}
    for check in body["checks"].values():
        assert check["ok"] is True
        assert datetime.fromisoformat(check["checked_at"]) <= datetime.now(UTC)
    assert body["lag"]["ok"] is True
    assert body["lag"]["relay"] == {"ok": True, "position": 0, "stored": 0, "pending": 0}
    [monitor] = [job for job in body["jobs"] if job["name"] == "health monitor"]
    assert (monitor["state"], monitor["failures"]) == ("running", 0)


async def test_before_the_first_probe_it_says_starting(settings: Settings) -> None:
    """The app's lifespan has not started its monitor: nothing is known yet, so 503."""
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://okr") as client:
        anonymous = await client.get("/health")
        detailed = await client.get("/health", headers=READER)
    assert (anonymous.status_code, anonymous.json()) == (503, {"status": "starting"})
    assert anonymous.headers["Retry-After"] == "1"
    assert detailed.status_code == 503
    assert (detailed.json()["status"], detailed.json()["checks"]) == ("starting", {})


async def test_health_names_a_dead_broker_and_a_dead_database(settings: Settings) -> None:
    broken = settings.model_copy(
        update={
            "kafka_bootstrap_servers": "127.0.0.1:1",
            "read_store_url": "postgresql://nobody@127.0.0.1:1/none",
        }
    )
    store = open_read_store(settings)  # the app needs one to start; the monitor probes `broken`
    try:
        async with serving(broken, read_store=store) as (_, client):
            anonymous = await client.get("/health")
            response = await client.get("/health", headers=READER)
    finally:
        store.close()
    assert (anonymous.status_code, anonymous.json()) == (503, {"status": "degraded"})
    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["kafka", "read_store"]
    assert body["checks"]["event_store"]["ok"] is True
    kafka = body["checks"]["kafka"]
    assert kafka["ok"] is False and kafka["error"]
    assert kafka["failed_probes"] >= 1
    assert datetime.fromisoformat(kafka["since"]) <= datetime.fromisoformat(kafka["checked_at"])


async def test_health_is_ok_on_postgresql_stores(
    settings: Settings, postgres_database: str
) -> None:
    on_postgres = settings.model_copy(
        update={"event_store_url": postgres_database, "read_store_url": postgres_database}
    )
    async with serving(on_postgres) as (_, client):
        response = await client.get("/health", headers=READER)
    assert response.status_code == 200, response.text
    checks = response.json()["checks"]
    assert {name: check["ok"] for name, check in checks.items()} == {
        "kafka": True,
        "event_store": True,
        "read_store": True,
    }


def failing_job(name: str, broken: Callable[[], bool]) -> BackgroundJob:
    """A background job run as the service runs its own (`keep_running`), whose attempts fail
    while `broken()` says so, and which then works (waits for work) for good."""

    async def job(_: OkrApplication) -> None:
        async def attempt(succeeded: Callable[[], None]) -> None:
            if broken():
                raise RuntimeError("the broker said no")
            succeeded()
            await asyncio.Event().wait()  # connected, waiting for work that never comes

        await keep_running(
            name, attempt, backoff=Backoff(first_s=0.05, max_s=0.05), resuming="again", log=log
        )

    return job


async def test_a_job_that_keeps_failing_makes_the_service_degraded(settings: Settings) -> None:
    broken = True
    started = datetime.now(UTC)
    job = failing_job("doomed job", lambda: broken)
    async with serving(settings, background=[job]) as (_, client):

        async def retrying() -> bool:
            return "doomed job" in (await client.get("/health", headers=READER)).json()["down"]

        await eventually(retrying, "the failing job is named in /health", deadline_s=20)
        anonymous = await client.get("/health")
        response = await client.get("/health", headers=READER)
        assert (anonymous.status_code, anonymous.json()) == (503, {"status": "degraded"})
        assert response.status_code == 503
        body = response.json()
        assert (body["status"], body["down"]) == ("degraded", ["doomed job"])
        [entry] = [entry for entry in body["jobs"] if entry["name"] == "doomed job"]
        assert entry["state"] == "retrying"
        assert started <= datetime.fromisoformat(entry["since"]) <= datetime.now(UTC)
        assert entry["failures"] >= 1
        assert entry["last_error"] == "RuntimeError: the broker said no"

        broken = False

        async def working_again() -> bool:
            return (await client.get("/health")).status_code == 200

        await eventually(working_again, "the job works again", deadline_s=20)
        body = (await client.get("/health", headers=READER)).json()
        [entry] = [entry for entry in body["jobs"] if entry["name"] == "doomed job"]
        assert (entry["state"], entry["failures"]) == ("running", 0)
        assert entry["failures_total"] >= 1


async def test_dead_letters_are_counted_on_the_job_that_set_them_aside(
    settings: Settings,
) -> None:
    """Each job's task reports to its own entry, even when jobs start together."""

    def dead_lettering(name: str, reason: str, count: int) -> BackgroundJob:
        async def job(_: OkrApplication) -> None:
            async def attempt(succeeded: Callable[[], None]) -> None:
                await asyncio.sleep(0.1)  # every job has started: each still has its own entry
                entry = current_job()
                assert entry is not None
                entry.dead_lettered(reason, count)
                succeeded()
                await asyncio.Event().wait()

            await keep_running(name, attempt, backoff=Backoff(), resuming="again", log=log)

        return job

    jobs = [dead_lettering("first", "bad_json", 2), dead_lettering("second", "schema", 1)]
    async with serving(settings, background=jobs) as (_, client):

        async def both_set_aside() -> bool:
            body = (await client.get("/health", headers=READER)).json()
            return all(entry["state"] == "running" for entry in body["jobs"])

        await eventually(both_set_aside, "both jobs set their records aside", deadline_s=20)
        body = (await client.get("/health", headers=READER)).json()
    letters = {entry["name"]: entry["dead_letters"] for entry in body["jobs"]}
    assert letters["first"] == {"bad_json": 2}
    assert letters["second"] == {"schema": 1}


async def test_health_does_no_io_per_call(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    interval_s = 30.0
    slow = settings.model_copy(update={"health_interval_s": interval_s})
    async with serving(slow) as (_, client):
        probes = count_probes(monkeypatch)
        began = time.monotonic()
        for n in range(20):
            headers = auth_headers("reader") if n % 2 else {}
            assert (await client.get("/health", headers=headers)).status_code == 200
        elapsed = time.monotonic() - began
    rounds = 1 + int(elapsed / interval_s)  # the monitor's own, at most (one may be under way)
    assert probes.calls["probe_kafka"] <= rounds, probes.calls
    assert probes.calls["probe_store"] <= 2 * rounds, probes.calls  # both stores, each round
    assert probes.calls["kafka_lag"] <= rounds, probes.calls
    assert probes.calls["relay_lag"] <= rounds, probes.calls


async def test_a_flood_is_paced_and_refused_past_the_longest_wait(settings: Settings) -> None:
    """At one answer a second, four callers at once: one answered at once, two held (1 s, 2 s),
    the fourth would wait 3 s, past the 2 s the pacer holds an answer: 429 at once."""
    paced = settings.model_copy(update={"health_max_per_s": 1.0})
    async with serving(paced) as (_, client):
        answers = await asyncio.gather(*(client.get("/health") for _ in range(4)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200, 200, 200, 429]
    [refused] = [answer for answer in answers if answer.status_code == 429]
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["error"] == "too_many_requests"
