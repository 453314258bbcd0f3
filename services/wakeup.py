"""Wake asyncio waiters when the application stored something, from whatever thread stored it.

Followers of the notification log (the outbox relay, the scorer's bindings follower) would
otherwise only notice a write at their next poll. Saves run in worker threads
(`asyncio.to_thread`), so the signal crosses into each waiter's event loop with
`call_soon_threadsafe`. It is only a hint: writes by other processes are still found by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator


class Wakeup:
    """A thread-safe "something was saved" bell that any number of asyncio tasks listen to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for loop, event in listeners:
            # The loop may be closing while a worker thread still saves.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    @contextlib.contextmanager
    def listen(self) -> Iterator[asyncio.Event]:
        """An event set at every save while the block runs; clear it before each look at the log,
        so a save between the look and the wait is never missed."""
        listener = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._listeners.add(listener)
        try:
            yield listener[1]
        finally:
            with self._lock:
                self._listeners.discard(listener)


async def wait_for_wakeup(event: asyncio.Event, timeout_s: float) -> None:
    """Until the event is set or `timeout_s` passed (the poll that catches other processes).

    `asyncio.timeout`, not `asyncio.wait_for`: on Python 3.11, `wait_for` returns normally when
    the task is cancelled in the same loop step as the event is set, so a follower woken by a
    save at shutdown would swallow its cancellation and keep running (a hung stop).
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
