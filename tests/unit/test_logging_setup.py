"""`services.operations.logging_setup`: aiokafka's retries kept out of the log, anything else said
once."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    GroupCoordinatorNotAvailableError,
    KafkaConnectionError,
    NotLeaderForPartitionError,
)

from services.operations.logging_setup import KafkaClientNoise, configure_logging


def record(
    name: str, level: int, msg: str, *args: object, exc: BaseException | None = None
) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    "retried",
    [
        record("aiokafka.cluster", logging.ERROR, "Topic %s not found in cluster metadata", "t"),
        record(
            "aiokafka.consumer.group_coordinator",
            logging.ERROR,
            "Group Coordinator Request failed: %s",
            GroupCoordinatorNotAvailableError(),
        ),
        record(
            "aiokafka.consumer.fetcher",
            logging.ERROR,
            "Failed fetch offsets from %s: %s",
            1,
            NotLeaderForPartitionError(),
        ),
        record(
            "aiokafka",
            logging.ERROR,
            "Unable connect to node with id %s: %s",
            1,
            ConnectionRefusedError(111, "Connect call failed"),
        ),
        record(
            "aiokafka.producer.sender",
            logging.WARNING,
            "Got error produce response: %s",
            KafkaConnectionError(),
        ),
    ],
    ids=["topic-not-found", "coordinator", "not-leader", "refused", "produce"],
)
def test_what_aiokafka_retries_itself_is_dropped(retried: logging.LogRecord) -> None:
    noise = KafkaClientNoise()
    assert noise.filter(retried) is False
    assert noise.dropped == 1


def test_anything_else_of_aiokafka_is_said_once_per_window_with_what_was_held_back() -> None:
    clock = Clock()
    noise = KafkaClientNoise(repeat_after_s=600, clock=clock)

    def refused() -> logging.LogRecord:
        return record(
            "aiokafka.consumer.group_coordinator",
            logging.ERROR,
            "OffsetCommit failed for group %s - %s",
            "g",
            GroupAuthorizationFailedError(),
        )

    assert noise.filter(refused()) is True
    clock.now = 10
    assert [noise.filter(refused()) for _ in range(500)] == [False] * 500
    clock.now = 700
    again = refused()
    assert noise.filter(again) is True
    assert "[500 more like this in the last 700s]" in again.getMessage()


def test_records_of_other_loggers_pass_untouched() -> None:
    noise = KafkaClientNoise()
    ours = record(
        "services.relay.publisher", logging.ERROR, "okr.events relay: %s", OSError("down")
    )
    assert noise.filter(ours) is True
    assert noise.filter(record("aiokafkaesque", logging.ERROR, "x %s", OSError())) is True


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    kafka_level = logging.getLogger("aiokafka").level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiokafka").setLevel(kafka_level)


def test_the_process_log_shows_ours_and_hides_aiokafkas_steps_and_retries(
    restored_logging: None,
) -> None:
    stream = io.StringIO()
    configure_logging(stream=stream)

    logging.getLogger("services.relay.publisher").info("relay started")
    logging.getLogger("aiokafka.consumer.group_coordinator").info("(Re-)joining group %s", "g")
    logging.getLogger("aiokafka.consumer.group_coordinator").error(
        "Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError()
    )

    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert "INFO services.relay.publisher: relay started" in lines[0]
