"""One follower of the event store's notification log, for each job that reads the log in order.

The outbox relay (`services.relay.publisher`) and the scorer's bindings follower
(`services.scoring.bindings`) do the same around their own work: read the notifications stored
after a recorded position, a page at a time; hand the page over; move the position to its end;
once caught up, sleep until a save rings (`services.relay.wakeup`) or `SAFETY_POLL_S` passed;
after a failure, back off and resume from the recorded position (`keep_running`, which also keeps
the job's entry on the board). That loop is written once, here. A job brings what it needs of
each notification (`decode`, run in the read's worker thread) and what it does with a page (a
`Handle`, which also records the position: with its effects in one transaction, as the bindings
follower does, or after them, as the relay does after Kafka acknowledged the page).

A job that may pass over a stored event (the bindings follower; never the relay, whose promise
of every event in order forbids it) also gets poison isolation: after a page fails for a reason
no retry cures, its events are handled one at a time, and the one that fails alone is recorded
as done, set aside on `okr.dlq` (origin `okr-event-store`, its notification id as the offset)
and followed by the next. docs/decisions/0022-notification-log-follower.md says why this and
not eventsourcing's own `Follower`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Generic, NoReturn, TypeVar
from weakref import WeakKeyDictionary

from eventsourcing.persistence import IntegrityError, Notification, Tracking

from projections.backoff import Backoff, keep_running
from projections.failures import SetAsideStreak, describe, is_transient
from projections.job_health import current_stages
from projections.stage_timings import StageTimer
from services.kafka.dead_letters import DeadLetterPublisher, StoredEventRecord
from services.relay.wakeup import SAFETY_POLL_S, wait_for_wakeup

if TYPE_CHECKING:
    from eventsourcing.persistence import TrackingRecorder

    from services.commands.application import OkrApplication

Item = TypeVar("Item")

Entry = tuple[Notification, Item]
"""A notification of the page, and what the job decoded of it."""
Handle = Callable[[Sequence[Entry[Item]], StageTimer], Awaitable[None]]
"""What a job does with a page: process it and record the position at its last notification,
or raise. The timer is the page's, which has timed its "read" already."""
Opening = Callable[[Callable[[], None]], AbstractAsyncContextManager[Handle[Item]]]
"""What one attempt holds while it follows (the relay: its lock and its producer), given the
attempt's `succeeded`; it yields the attempt's `Handle`."""


# --- position: the last notification id a job is done with, in the event store --------------------


_TRACKING_RECORDERS: WeakKeyDictionary[OkrApplication, TrackingRecorder] = WeakKeyDictionary()
_TRACKING_RECORDERS_LOCK = threading.Lock()


def tracking_recorder(application: OkrApplication) -> TrackingRecorder:
    """The application's tracking recorder, built once.

    Building one creates (or migrates) the tracking table; two threads doing that at once would
    both insert the table's migration row, and one would fail.
    """
    with _TRACKING_RECORDERS_LOCK:
        recorder = _TRACKING_RECORDERS.get(application)
        if recorder is None:
            recorder = application.factory.tracking_recorder()
            _TRACKING_RECORDERS[application] = recorder
        return recorder


class LogPosition:
    """Where a job is in the log, recorded in the event store's own database (its row `name` of
    eventsourcing's tracking table): it survives restarts and is backed up with the events.

    Nothing is read until `reload` (blocking), so a job can be built while its store is away.
    """

    def __init__(self, application: OkrApplication, name: str) -> None:
        self.application = application
        self.name = name
        self.last = 0
        """The last notification id done, as this process last read or recorded it."""

    @property
    def recorder(self) -> TrackingRecorder:
        return tracking_recorder(self.application)

    def reload(self) -> int:
        """Forget what we believed and read the recorded position (at start, after a failure)."""
        self.last = self.recorder.max_tracking_id(self.name) or 0
        return self.last

    def tracking(self, notification_id: int) -> Tracking:
        """The record to write with a job's effects, in their transaction."""
        return Tracking(self.name, notification_id)

    def moved_to(self, notification_id: int) -> None:
        """The job recorded `notification_id` (or found it recorded by another process)."""
        self.last = max(self.last, notification_id)

    def advance(self, notification_id: int) -> None:
        """Record that everything up to `notification_id` is done (its effects are elsewhere)."""
        if notification_id <= self.last:
            return
        try:
            self.recorder.insert_tracking(self.tracking(notification_id))
        except IntegrityError:
            # The tracking row only moves forward: another process on this store got further.
            if self.reload() < notification_id:
                raise
            return
        self.last = notification_id


# --- following ------------------------------------------------------------------------------------


class NotificationFollower(Generic[Item]):
    """Follows the log for one job, from its position; see the module docstring.

    `stage_job`: the `job` label of the page's `okr_stage_*` timings (`projections.stage_timings`;
    "read" here, the rest by the handle), or None to time nothing.
    """

    def __init__(
        self,
        application: OkrApplication,
        position: LogPosition,
        decode: Callable[[Notification], Item],
        *,
        name: str,
        page_size: int,
        topics: Sequence[str] = (),
        stage_job: str | None = None,
        log: logging.Logger,
    ) -> None:
        self.application = application
        self.position = position
        self.decode = decode
        self.name = name
        self.page_size = page_size
        self.topics = list(topics)
        self.stage_job = stage_job
        self.log = log
        self._alone = 0
        """Notifications still to handle one at a time, after a page failed for good."""
        self._streak = SetAsideStreak()

    def read(self, limit: int | None = None) -> list[Entry[Item]]:
        """Blocking: the next notifications after the position (at most `limit`, else a page)."""
        notifications = self.application.recorder.select_notifications(
            start=self.position.last,
            limit=limit or self.page_size,
            topics=self.topics,
            inclusive_of_start=False,
        )
        return [(n, self.decode(n)) for n in notifications]

    async def catch_up(
        self,
        handle: Handle[Item],
        *,
        page_size: int | None = None,
        limit: int | None = None,
        progressed: Callable[[], None] | None = None,
        dead_letters: DeadLetterPublisher | None = None,
    ) -> int:
        """Hand every page stored after the position to `handle`, at most `limit` notifications,
        calling `progressed` after each page; returns how many notifications were done.

        With `dead_letters`, a page that fails for a reason no retry cures is handled again one
        notification at a time, and the one that fails alone is set aside (module docstring).
        """
        done = 0
        while limit is None or done < limit:
            size = 1 if self._alone else page_size or self.page_size
            if limit is not None:
                size = min(size, limit - done)
            timer = current_stages().timer(self.stage_job or self.name)
            with timer.stage("read"):
                page = await asyncio.to_thread(self.read, size)
            if not page:
                self._alone = 0
                break
            try:
                await handle(page, timer)
            except Exception as error:
                if dead_letters is None or is_transient(error):
                    raise
                if not self._alone:
                    self.log.warning("%s: %s; following one at a time", self.name, describe(error))
                    self._alone = self.page_size
                    continue
                self._streak.setting_aside(error)
                await self._set_aside(page[0][0], error, dead_letters)
            else:
                self._streak.processed()
                self.position.moved_to(page[-1][0].id)
                if self.stage_job is not None:
                    timer.observe(len(page))
            self._alone = max(0, self._alone - 1)
            done += len(page)
            if progressed is not None:
                progressed()
        return done

    async def follow(
        self,
        handle: Handle[Item],
        succeeded: Callable[[], None],
        *,
        idle_poll_s: float = SAFETY_POLL_S,
        dead_letters: DeadLetterPublisher | None = None,
    ) -> NoReturn:
        """One attempt: from the recorded position, page after page; caught up, asleep until a
        save rings or `idle_poll_s` passed. Ends only by an exception."""
        await asyncio.to_thread(self.position.reload)
        with self.application.saved.listen() as saved:
            while True:
                saved.clear()
                done = await self.catch_up(handle, progressed=succeeded, dead_letters=dead_letters)
                succeeded()
                if not done:
                    await wait_for_wakeup(saved, idle_poll_s)

    async def run(
        self,
        opening: Opening[Item],
        *,
        backoff: Backoff,
        resuming: str,
        idle_poll_s: float = SAFETY_POLL_S,
        dead_letters: DeadLetterPublisher | None = None,
    ) -> NoReturn:
        """Follow until cancelled, as the job `name` on the board. Every failure is retried
        (`keep_running`): a follower that died quietly would leave the log unread forever."""

        async def attempt(succeeded: Callable[[], None]) -> None:
            async with opening(succeeded) as handle:
                await self.follow(
                    handle, succeeded, idle_poll_s=idle_poll_s, dead_letters=dead_letters
                )

        await keep_running(self.name, attempt, backoff=backoff, resuming=resuming, log=self.log)

    async def _set_aside(
        self, notification: Notification, error: Exception, dead_letters: DeadLetterPublisher
    ) -> None:
        """Record the event as done without its effects, then dead-letter it."""
        await asyncio.to_thread(self.position.advance, notification.id)
        self.log.error(
            "%s: stored event %d cannot be processed; dead-lettering it",
            self.name,
            notification.id,
            exc_info=error,
        )
        record = StoredEventRecord(
            offset=notification.id,
            key=str(notification.originator_id).encode(),
            value=notification.state,
            event_topic=notification.topic,
        )
        await dead_letters.publish(record, "processing_failed", error)
