"""Which failures are retried, which set a record aside, and how a job reports either.

The production-stopping defect was a permanent Kafka error (a message too large) taken for an
outage: retried forever, it stalled every partition. The table is pinned here, with the job loop
that logs an outage once when it starts and once when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable

import psycopg
import pytest
from aiokafka import errors as kafka
from eventsourcing.persistence import IntegrityError, OperationalError

from projections.backoff import Backoff, keep_running
from projections.failures import SetAsideStreak, SystemicFailureError, is_transient
from projections.job_health import JobBoard, context_reporting_to

TRANSIENT = [
    kafka.KafkaConnectionError(),
    kafka.NodeNotReadyError(),
    kafka.RequestTimedOutError(),
    kafka.KafkaTimeoutError(),
    kafka.GroupCoordinatorNotAvailableError(),
    kafka.NotLeaderForPartitionError(),
    kafka.CommitFailedError(),
    OperationalError("database is locked"),
    IntegrityError("lost a race"),
    sqlite3.OperationalError("database is locked"),
    psycopg.OperationalError("server closed the connection"),
    ConnectionRefusedError(),
    TimeoutError(),
]
PERMANENT = [
    kafka.MessageSizeTooLargeError(),
    kafka.RecordTooLargeError(),
    kafka.TopicAuthorizationFailedError(),
    kafka.InvalidTopicError(),
    kafka.UnknownError(),
    ValueError("invalid"),
    ArithmeticError("overflow"),
    KeyError("bug"),
    psycopg.DataError("invalid byte sequence"),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_outages_are_transient(error: Exception) -> None:
    assert is_transient(error)


@pytest.mark.parametrize("error", PERMANENT, ids=lambda e: type(e).__name__)
def test_what_no_retry_cures_is_permanent(error: Exception) -> None:
    assert not is_transient(error)


def test_record_after_record_failing_alone_is_the_consumers_fault() -> None:
    streak = SetAsideStreak(limit=3)
    for _ in range(3):
        streak.setting_aside(ValueError("bad"))
    with pytest.raises(SystemicFailureError):
        streak.setting_aside(ValueError("bad"))
    with pytest.raises(SystemicFailureError):  # still: nothing was processed since
        streak.setting_aside(ValueError("bad"))
    streak.processed()
    streak.setting_aside(ValueError("bad"))


async def run_job(
    board: JobBoard, failures: list[Exception], done: asyncio.Event
) -> asyncio.Task[None]:
    """A job that fails with each of `failures` in turn, then works and waits."""
    pending = list(failures)

    async def attempt(succeeded: Callable[[], None]) -> None:
        if pending:
            raise pending.pop(0)
        succeeded()
        done.set()
        await asyncio.Event().wait()

    job = keep_running(
        "relay",
        attempt,
        backoff=Backoff(first_s=0.001, max_s=0.001),
        resuming="reconnecting",
        log=logging.getLogger("tests.job"),
    )
    return asyncio.create_task(job, context=context_reporting_to(board))


async def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    board, done = JobBoard(), asyncio.Event()
    with caplog.at_level(logging.DEBUG, logger="tests.job"):
        task = await run_job(board, [kafka.KafkaConnectionError("away")] * 50, done)
        await asyncio.wait_for(done.wait(), 10)
        [entry] = board.jobs()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert len(said) == 2, said
    assert "KafkaConnectionError: away" in said[0]
    assert "working again" in said[1] and "49 attempt(s) retried" in said[1]
    assert entry.state == "running" and entry.failures_total == 50
    assert board.jobs() == []  # a stopped job leaves the board


async def test_a_job_that_keeps_failing_is_retrying_since_its_first_failure() -> None:
    board, done = JobBoard(), asyncio.Event()
    task = await run_job(board, [ValueError("a bug")] * 10_000, done)
    await asyncio.sleep(0.2)
    [entry] = board.jobs()
    report = entry.to_json()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert report["state"] == "retrying"
    assert report["last_error"] == "ValueError: a bug"
    assert report["failures"] > 1
    assert board.retrying() == []  # gone with the job
