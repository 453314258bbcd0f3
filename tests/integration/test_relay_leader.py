"""One relay publishes at a time, however many processes share the event store.

Two relays on one store, in two processes or in one (each with a lock of its own: a PostgreSQL
connection, an open file description): only the holder of the store's relay lock publishes, the
other stands by and says who holds it. When the holder dies (SIGKILL, its task cancelled, its
PostgreSQL connection cut) while writes go on, the other takes over within seconds, and every
stored event reaches `okr.events`: duplicates allowed, never a missing one, never a gap in an
objective's versions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from projections.backoff import Backoff
from projections.job_health import JobBoard, context_reporting_to
from projections.stage_timings import RELAY
from services.commands.application import OkrApplication
from services.kafka.admin import ensure_topics
from services.relay.leadership import FileRelayLock
from services.relay.publisher import JOB_NAME, relay_position, run_relay
from services.settings import Settings
from services.tasks import running
from tests.health_support import READER, serving
from tests.integration.test_idle_followers import REPOSITORY, writer_environment
from tests.integration.test_relay import (
    assert_complete_and_ordered,
    read_events,
    stored_keys,
    write_history,
)
from tests.kafka_support import eventually
from tests.store_support import execute

FAST = Backoff(first_s=0.05, max_s=0.2)
TAKEOVER_S = 5.0
"""A standby tries every second; the lock is free as soon as its holder's process or
connection is gone."""

RELAY_PROCESS = """
import asyncio

from projections.backoff import Backoff
from services.commands.application import OkrApplication
from services.relay.publisher import run_relay
from services.settings import Settings


async def main() -> None:
    settings = Settings()
    application = OkrApplication(settings)
    await run_relay(settings, application, backoff=Backoff(first_s=0.05, max_s=0.2))


asyncio.run(main())
"""


@pytest.fixture
async def topics_ready(store_settings: Settings) -> None:
    await ensure_topics(store_settings)


def named(settings: Settings, instance: str) -> Settings:
    return settings.model_copy(update={"instance_id": instance})


# --- what each relay says and did -----------------------------------------------------------------


def lease(board: JobBoard) -> dict[str, Any] | None:
    """The relay job's lease as `/health` shows it."""
    for job in board.jobs():
        entry = job.to_json()
        if entry["name"] == JOB_NAME:
            lease: dict[str, Any] | None = entry.get("lease")
            return lease
    return None


def holding(board: JobBoard) -> Callable[[], Any]:
    async def holds() -> bool:
        found = lease(board)
        return found is not None and found["holding"]

    return holds


def standing_by_for(board: JobBoard, holder: str) -> Callable[[], Any]:
    async def stands_by() -> bool:
        found = lease(board)
        return found is not None and not found["holding"] and found["holder"] == holder

    return stands_by


def pages_published(board: JobBoard) -> float:
    """Pages the relays of `board` published (their "publish" stage's observations)."""
    return sum(
        sample.value
        for family in board.stages.collect()
        for sample in family.samples
        if sample.name == "okr_stage_duration_seconds_count"
        and sample.labels == {"job": RELAY, "stage": "publish"}
    )


def relay_on(
    board: JobBoard, settings: Settings, application: OkrApplication
) -> contextlib.AbstractAsyncContextManager[list[asyncio.Task[None]]]:
    return running(
        run_relay(settings, application, backoff=FAST), context=context_reporting_to(board)
    )


# --- writing and checking -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def writing(application: OkrApplication) -> AsyncIterator[Callable[[], Any]]:
    """Objectives written one after another for the block; yields "written since", a condition
    that holds once a few more were written (so a relay dies in the middle of a stream)."""
    stop = asyncio.Event()
    written = 0

    async def keep_writing() -> None:
        nonlocal written
        while not stop.is_set():
            await asyncio.to_thread(write_history, application, 1)
            written += 1

    def more_written(count: int = 3) -> Callable[[], Any]:
        target = written + count

        async def reached() -> bool:
            return written >= target

        return reached

    task = asyncio.create_task(keep_writing())
    try:
        yield more_written
    finally:
        stop.set()
        await task


async def everything_published(application: OkrApplication, settings: Settings) -> None:
    """The relay's position reaches the last stored event, and `okr.events` has every one."""
    last = application.last_notification_id()

    async def reached() -> bool:
        return await asyncio.to_thread(relay_position, application) >= last

    await eventually(reached, f"the relay position reaches {last}")
    assert_complete_and_ordered(stored_keys(application), await read_events(settings))


async def takes_over(board: JobBoard, since: float) -> float:
    """Seconds from `since` until the relay of `board` holds the lock."""
    await eventually(holding(board), "the standby takes over", deadline_s=TAKEOVER_S * 3)
    return time.monotonic() - since


# --- two relays in one process, each with its own lock --------------------------------------------


@pytest.mark.usefixtures("topics_ready")
async def test_one_of_two_relays_publishes_and_the_other_takes_over_when_it_stops(
    store_settings: Settings, open_application: Callable[..., OkrApplication]
) -> None:
    first, second = open_application(), open_application()
    first_board, second_board = JobBoard(), JobBoard()

    async with relay_on(first_board, named(store_settings, "relay-a"), first) as (holder,):
        await eventually(holding(first_board), "relay-a holds the lock")
        async with relay_on(second_board, named(store_settings, "relay-b"), second):
            await eventually(standing_by_for(second_board, "relay-a"), "relay-b stands by")
            for _ in range(3):
                await asyncio.to_thread(write_history, second, 2)
            await everything_published(second, store_settings)
            assert pages_published(first_board) > 0
            assert pages_published(second_board) == 0, "the standby published nothing"

            async with writing(second) as more_written:
                await eventually(more_written(), "writes go on")
                holder.cancel()
                stopped = time.monotonic()
                took = await takes_over(second_board, stopped)
                await eventually(more_written(), "writes go on after the takeover")
            await everything_published(second, store_settings)

    assert took < TAKEOVER_S
    assert pages_published(second_board) > 0


async def test_a_holder_whose_connection_is_cut_stops_and_the_lock_is_held_again(
    settings: Settings, postgres_database: str
) -> None:
    store = settings.model_copy(
        update={"event_store_url": postgres_database, "read_store_url": postgres_database}
    )
    await ensure_topics(store)
    first, second = OkrApplication(store), OkrApplication(store)
    first_board, second_board = JobBoard(), JobBoard()

    def relay_job(board: JobBoard) -> Any:
        [job] = [job for job in board.jobs() if job.name == JOB_NAME]
        return job

    try:
        async with relay_on(first_board, named(store, "relay-a"), first):
            await eventually(holding(first_board), "relay-a holds the lock")
            async with relay_on(second_board, named(store, "relay-b"), second):
                await eventually(standing_by_for(second_board, "relay-a"), "relay-b stands by")
                async with writing(second) as more_written:
                    await eventually(more_written(), "writes go on")
                    cut = await asyncio.to_thread(
                        execute,
                        store,
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND application_name = ?",
                        "relay-a",
                    )
                    assert cut == [(True,)]
                    cut_at = time.monotonic()

                    async def lost() -> bool:
                        return bool(relay_job(first_board).failures_total)

                    await eventually(lost, "relay-a notices the cut", deadline_s=TAKEOVER_S)
                    assert "RelayLockLostError" in (relay_job(first_board).last_error or "")

                    async def held_again() -> bool:
                        leases = [lease(first_board), lease(second_board)]
                        holders = [found for found in leases if found and found["holding"]]
                        return len(holders) == 1 and all(
                            found is not None and found["holder"] == holders[0]["instance"]
                            for found in leases
                        )

                    await eventually(held_again, "one relay holds the lock again")
                    assert time.monotonic() - cut_at < TAKEOVER_S
                    await eventually(more_written(), "writes go on after the cut")
                await everything_published(second, store)
    finally:
        first.close()
        second.close()


# --- a relay process killed -----------------------------------------------------------------------


@contextlib.contextmanager
def relay_process(settings: Settings, instance: str, log: Path) -> Any:
    """`run_relay` in a process of its own, as `okr serve` runs it; killed on the way out."""
    env = writer_environment(settings) | {"OKR_INSTANCE_ID": instance}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", RELAY_PROCESS],
            cwd=REPOSITORY,
            env=env,
            stdout=output,
            stderr=output,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.mark.usefixtures("topics_ready")
async def test_when_the_holding_process_is_killed_another_takes_over_and_nothing_is_missing(
    store_settings: Settings, open_application: Callable[..., OkrApplication], tmp_path: Path
) -> None:
    application = open_application()
    board = JobBoard()
    for _ in range(2):
        await asyncio.to_thread(write_history, application, 1)

    with relay_process(store_settings, "relay-process", tmp_path / "relay.log") as process:
        await everything_published(application, store_settings)  # the process holds the lock
        async with relay_on(board, named(store_settings, "relay-here"), application):
            await eventually(standing_by_for(board, "relay-process"), "this relay stands by")
            for _ in range(2):
                await asyncio.to_thread(write_history, application, 1)
            await everything_published(application, store_settings)
            assert pages_published(board) == 0, "the standby published nothing"

            async with writing(application) as more_written:
                await eventually(more_written(), "writes go on")
                os.kill(process.pid, signal.SIGKILL)
                killed = time.monotonic()
                took = await takes_over(board, killed)
                await eventually(more_written(), "writes go on after the takeover")
            await everything_published(application, store_settings)

    assert process.returncode == -signal.SIGKILL
    assert took < TAKEOVER_S
    assert pages_published(board) > 0


# --- /health --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("topics_ready")
async def test_health_says_which_instance_holds_the_relay(store_settings: Settings) -> None:
    first, second = named(store_settings, "web-1:101"), named(store_settings, "web-2:202")

    async def relay_entry(client: Any) -> dict[str, Any]:
        body = (await client.get("/health", headers=READER)).json()
        [entry] = [job for job in body["jobs"] if job["name"] == JOB_NAME]
        relay: dict[str, Any] = entry
        return relay

    def lease_says(client: Any, key: str, value: Any) -> Callable[[], Any]:
        async def says() -> bool:
            return (await relay_entry(client)).get("lease", {}).get(key) == value

        return says

    async with contextlib.AsyncExitStack() as first_instance:
        _, first_client = await first_instance.enter_async_context(
            serving(first, background=[partial(run_relay, first)])
        )
        await eventually(lease_says(first_client, "holding", True), "web-1 holds the relay")
        async with serving(second, background=[partial(run_relay, second)]) as (_, client):
            await eventually(lease_says(client, "holder", "web-1:101"), "web-2 names web-1")
            holder = await relay_entry(first_client)
            standby = await relay_entry(client)
            metrics = (await client.get("/metrics", headers=READER)).text

            await first_instance.aclose()  # web-1 stops: its relay lets go of the lock
            await eventually(lease_says(client, "holding", True), "web-2 takes over")
            taken = (await relay_entry(client))["lease"]

    assert holder["state"] == standby["state"] == "running"
    assert {key: holder["lease"][key] for key in ("instance", "holder", "holding")} == {
        "instance": "web-1:101",
        "holder": "web-1:101",
        "holding": True,
    }
    assert {key: standby["lease"][key] for key in ("instance", "holder", "holding")} == {
        "instance": "web-2:202",
        "holder": "web-1:101",
        "holding": False,
    }
    assert 'okr_job_lease_held{job="okr.events relay"} 0.0' in metrics
    assert (taken["instance"], taken["holder"]) == ("web-2:202", "web-2:202")


# --- the SQLite lock itself -----------------------------------------------------------------------


async def test_two_descriptors_of_one_process_exclude_each_other(tmp_path: Path) -> None:
    """`flock` belongs to an open file description: two relays of one process (or of two) see
    each other's lock, and closing the holder's descriptor frees it."""
    path = tmp_path / "events.sqlite-relay.lock"
    first, second = FileRelayLock(path, "first"), FileRelayLock(path, "second")
    try:
        assert await first.try_acquire()
        assert not await second.try_acquire()
        assert await second.holder() == "first"
        assert path.stat().st_mode & 0o777 == 0o600
        await first.release()
        assert await second.try_acquire()
        assert await first.holder() == "second"
        assert not await first.try_acquire()
    finally:
        await first.release()
        await second.release()
