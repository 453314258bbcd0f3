"""The live feed: committed batches fan out to every open stream; the server stopping ends them."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass

from services.web.live import MAX_IDS, QUEUE_SIZE, LiveFeed


@dataclass(frozen=True)
class Report:
    objective_ids: frozenset[uuid.UUID]


async def next_event(stream: object) -> tuple[str, dict[str, object]]:
    while True:
        text = await asyncio.wait_for(stream.__anext__(), 2)  # type: ignore[attr-defined]
        if text.startswith("event: "):
            name, data = text.strip().split("\n")
            return name.removeprefix("event: "), json.loads(data.removeprefix("data: "))


async def test_every_stream_hears_what_a_batch_changed() -> None:
    feed = LiveFeed()
    first, second = feed.stream(), feed.stream()
    assert await next_event(first) == ("hello", {"live": True})
    assert await next_event(second) == ("hello", {"live": True})
    changed = uuid.uuid4()
    feed.projected(Report(frozenset({changed})))
    feed.projected(Report(frozenset()))  # a batch of duplicates changes nothing: no notice
    assert await next_event(first) == ("changed", {"objectives": [str(changed)]})
    assert await next_event(second) == ("changed", {"objectives": [str(changed)]})
    await first.aclose()
    await second.aclose()
    assert feed.subscribers == 0


async def test_a_huge_batch_or_a_slow_page_redraws_everything() -> None:
    feed = LiveFeed()
    stream = feed.stream()
    await next_event(stream)
    feed.projected(Report(frozenset(uuid.uuid4() for _ in range(MAX_IDS + 1))))
    assert await next_event(stream) == ("changed", {"objectives": ["*"]})
    for _ in range(QUEUE_SIZE + 5):
        feed.projected(Report(frozenset({uuid.uuid4()})))
    assert await next_event(stream) == ("changed", {"objectives": ["*"]})
    await stream.aclose()


async def test_closing_the_feed_ends_every_stream() -> None:
    feed = LiveFeed()
    stream = feed.stream()
    await next_event(stream)
    feed.close()
    assert await next_event(stream) == ("bye", {"live": False})
    remaining = [text async for text in stream]
    assert remaining == []
    late = feed.stream()
    await next_event(late)
    assert await next_event(late) == ("bye", {"live": False})
    await late.aclose()


async def test_keep_alive_while_nothing_changes() -> None:
    feed = LiveFeed()
    stream = feed.stream(keep_alive_s=0.05)
    await next_event(stream)
    assert await asyncio.wait_for(stream.__anext__(), 2) == ": keep-alive\n\n"
    await stream.aclose()
