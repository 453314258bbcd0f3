"""The dashboard's live feed: what the projector commits, pushed to open pages as server-sent
events.

The projector calls `LiveFeed.projected` after each batch it committed (`on_batch`, in the event
loop), with the objectives the batch changed; every open `/ui/events` stream gets their ids and
the page redraws what shows them. In-process and best effort: a page that misses a notice (its
queue full, a reconnect) is told to redraw everything, never left stale without knowing.

A stream never ends by itself, and uvicorn's graceful shutdown waits for open responses: the feed
watches for the signals that stop the server and closes every stream first, so `okr serve` stops
at once and the pages say the connection is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol
from uuid import UUID

log = logging.getLogger(__name__)

QUEUE_SIZE = 64
MAX_IDS = 200
"""Past this many objectives in one notice, the notice says "everything" instead."""
KEEP_ALIVE_S = 15.0
RETRY_MS = 1000
"""How soon a browser reconnects after losing the stream (EventSource's `retry`)."""
EVERYTHING = "*"


class ProjectedBatch(Protocol):
    """What the feed reads of a projector batch report (`projections.projector.BatchReport`)."""

    @property
    def objective_ids(self) -> frozenset[UUID]: ...


@dataclass(frozen=True)
class Notice:
    """One change to tell the pages: which objectives changed, or all of them ("*")."""

    objective_ids: tuple[str, ...]

    def as_event(self) -> str:
        return sse("changed", {"objectives": list(self.objective_ids)})


CLOSED = Notice(())
"""Put on a subscriber's queue when the feed closes: its stream ends."""


def sse(event: str, data: Any) -> str:
    """One server-sent event: a name and a JSON payload on one data line."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@dataclass
class LiveFeed:
    """In-process fan-out of committed changes to every open stream."""

    _queues: set[asyncio.Queue[Notice]] = field(default_factory=set)
    _closed: bool = False
    _watching_signals: bool = False
    published: int = 0

    # --- the projector's side -----------------------------------------------------------------

    def projected(self, report: ProjectedBatch) -> None:
        """`on_batch` of the projector: called after the batch's transaction committed."""
        if report.objective_ids:
            self.publish(report.objective_ids)

    def publish(self, objective_ids: frozenset[UUID] | set[UUID]) -> None:
        if len(objective_ids) > MAX_IDS:
            notice = Notice((EVERYTHING,))
        else:
            notice = Notice(tuple(sorted(str(i) for i in objective_ids)))
        self.published += 1
        for queue in list(self._queues):
            try:
                queue.put_nowait(notice)
            except asyncio.QueueFull:  # a slow page: it redraws everything once it reads again
                _replace_with_everything(queue)

    # --- the pages' side ----------------------------------------------------------------------

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    @contextlib.asynccontextmanager
    async def subscription(self) -> AsyncIterator[asyncio.Queue[Notice]]:
        self._watch_for_exit()
        queue: asyncio.Queue[Notice] = asyncio.Queue(QUEUE_SIZE)
        if self._closed:
            queue.put_nowait(CLOSED)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)

    async def stream(self, keep_alive_s: float = KEEP_ALIVE_S) -> AsyncIterator[str]:
        """The text of one `/ui/events` response, until the client leaves or the feed closes."""
        async with self.subscription() as queue:
            yield f"retry: {RETRY_MS}\n\n"
            yield sse("hello", {"live": True})
            while True:
                try:
                    notice = await asyncio.wait_for(queue.get(), keep_alive_s)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if notice is CLOSED:
                    yield sse("bye", {"live": False})
                    return
                yield notice.as_event()

    def close(self) -> None:
        """End every stream (the server is stopping); streams opened later end at once."""
        self._closed = True
        for queue in list(self._queues):
            _replace_with(queue, CLOSED)

    # --- stopping -----------------------------------------------------------------------------

    def _watch_for_exit(self) -> None:
        """Chain a handler before the server's own SIGINT/SIGTERM handler (uvicorn's), so the
        streams end when it starts its graceful shutdown instead of holding it open."""
        if self._watching_signals or threading.current_thread() is not threading.main_thread():
            return
        self._watching_signals = True
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if not callable(previous):
                continue
            signal.signal(signum, _chained(previous, lambda: loop.call_soon_threadsafe(self.close)))


def _chained(
    previous: Callable[[int, FrameType | None], Any], before: Callable[[], object]
) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        before()
        previous(signum, frame)

    return handler


def _replace_with(queue: asyncio.Queue[Notice], notice: Notice) -> None:
    while True:
        try:
            queue.get_nowait()
        except asyncio.QueueEmpty:
            break
    queue.put_nowait(notice)


def _replace_with_everything(queue: asyncio.Queue[Notice]) -> None:
    _replace_with(queue, Notice((EVERYTHING,)))
