"""`services.kafka.consumer`'s commits and closing, without a broker: one commit in flight,
carrying the latest offsets of the partitions still assigned, and a close that cannot hang."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.kafka import consumer as block
from services.kafka.consumer import KafkaCommits, close_within, offsets_after

A, B, C = (TopicPartition("t", partition) for partition in range(3))


class HeldCommits:
    """What `KafkaCommits` touches of a consumer; each commit waits until released."""

    def __init__(self, assigned: set[TopicPartition]) -> None:
        self.assigned = assigned
        self.commits: list[dict[TopicPartition, int]] = []
        self.release = asyncio.Event()

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))
        await self.release.wait()


def commits_of(kafka: HeldCommits) -> KafkaCommits:
    return KafkaCommits(cast(AIOKafkaConsumer, kafka), "test", stage_job=None)


async def test_one_commit_in_flight_then_the_latest_offsets_of_what_came_meanwhile() -> None:
    kafka = HeldCommits({A, B})
    commits = commits_of(kafka)
    commits.follow({A: 1}, 1)
    await asyncio.sleep(0)  # the first commit is in flight
    commits.follow({A: 2, B: 5}, 2)
    commits.follow({A: 3}, 1)
    assert kafka.commits == [{A: 1}]
    kafka.release.set()
    await commits.flush()
    assert kafka.commits == [{A: 1}, {A: 3, B: 5}]


async def test_partitions_revoked_meanwhile_are_not_committed() -> None:
    kafka = HeldCommits({A})
    kafka.release.set()
    commits = commits_of(kafka)
    commits.follow({A: 4, C: 9}, 2)
    commits.follow({C: 10}, 1)
    await commits.flush()
    assert kafka.commits == [{A: 4}]


async def test_stopping_waits_for_the_commit_in_flight_but_not_forever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(block, "COMMIT_STOP_WAIT_S", 0.05)
    kafka = HeldCommits({A})
    commits = commits_of(kafka)
    commits.follow({A: 1}, 1)
    await commits.stop()  # the commit never returns: stop gives up
    assert kafka.commits == [{A: 1}]
    kafka.release.set()
    await commits.flush()


async def test_a_client_that_will_not_close_is_left_behind_after_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(block, "CLOSE_TIMEOUT_S", 0.05)

    async def hangs() -> None:
        await asyncio.Event().wait()

    async def fails() -> None:
        raise RuntimeError("broken while closing")

    await close_within(hangs(), "hanging client")
    await close_within(fails(), "failing client")  # logged, not raised


def test_offsets_after_a_batch_are_one_past_each_partitions_last_record() -> None:
    class Record:
        def __init__(self, offset: int) -> None:
            self.offset = offset

    fetched: Any = {A: [Record(3), Record(4)], B: [], C: [Record(0)]}
    assert offsets_after(fetched) == {A: 5, C: 1}
