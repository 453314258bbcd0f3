"""How the command consumer answers a fetched batch, without a broker: each partition in offset
order, each offset committed after its answer, a revoked partition left to its new holder, and
a stop that lets the answer in progress finish and commits it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import pytest
from aiokafka import TopicPartition

from services.commands.consumer import CommandConsumer, answer_batch
from services.kafka.consumer import Consumer

A, B = TopicPartition("okr.commands", 0), TopicPartition("okr.commands", 1)


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int


def records(tp: TopicPartition, *offsets: int) -> list[Record]:
    return [Record(tp.topic, tp.partition, offset) for offset in offsets]


class Held:
    """What `answer_batch` uses of the consumer: the assignment, and the commits handed over."""

    def __init__(self, *assigned: TopicPartition) -> None:
        self.assignment = set(assigned)
        self.commits: list[dict[TopicPartition, int]] = []

    def assigned(self) -> set[TopicPartition]:
        return set(self.assignment)

    def commit(self, offsets: Mapping[TopicPartition, int], messages: int) -> None:
        self.commits.append(dict(offsets))


class Answers:
    """Answers records in the order asked; `on_answer` may act as if Kafka did something."""

    def __init__(self) -> None:
        self.answered: list[tuple[int, int]] = []
        self.on_answer: Any = None
        self.hold: asyncio.Event | None = None

    async def process_until_done(self, record: Record) -> None:
        if self.hold is not None:
            await self.hold.wait()
        self.answered.append((record.partition, record.offset))
        if self.on_answer is not None:
            self.on_answer(record)


def run(answers: Answers, held: Held, fetched: dict[TopicPartition, list[Record]]) -> Any:
    return answer_batch(cast(CommandConsumer, answers), cast(Consumer, held), cast(Any, fetched))


async def test_each_partition_in_offset_order_each_offset_committed_after_its_answer() -> None:
    answers, held = Answers(), Held(A, B)
    committed_when_answered: list[int] = []
    answers.on_answer = lambda record: committed_when_answered.append(len(held.commits))
    await run(answers, held, {A: records(A, 4, 5), B: records(B, 0)})

    assert answers.answered == [(0, 4), (0, 5), (1, 0)]
    assert held.commits == [{A: 5}, {A: 6}, {B: 1}]
    assert committed_when_answered == [0, 1, 2], "never before the answer"


async def test_a_partition_revoked_during_the_batch_is_left_to_its_new_holder() -> None:
    answers, held = Answers(), Held(A, B)
    answers.on_answer = lambda record: held.assignment.discard(A)
    await run(answers, held, {A: records(A, 0, 1, 2), B: records(B, 7)})

    assert answers.answered == [(0, 0), (1, 7)]
    assert held.commits == [{A: 1}, {B: 8}]


async def test_a_stop_lets_the_answer_in_progress_finish_and_commits_it() -> None:
    answers, held = Answers(), Held(A)
    answers.hold = asyncio.Event()
    answering = asyncio.create_task(run(answers, held, {A: records(A, 0, 1)}))
    await asyncio.sleep(0.01)
    answering.cancel()
    await asyncio.sleep(0.01)
    answers.hold.set()
    with pytest.raises(asyncio.CancelledError):
        await answering

    assert answers.answered == [(0, 0)], "the next record is not started"
    assert held.commits == [{A: 1}]
