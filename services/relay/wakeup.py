"""Wake the event store's followers when something was stored, by this process or another.

Followers of the notification log (the outbox relay, the scorer's bindings follower) would
otherwise only notice a write at their next poll, and polling often enough for low latency costs
CPU all day long for nothing (the relay's 10 ms poll kept an idle `okr serve` at ~8 % of a core).
So a follower waits on a `Wakeup`, rung:

- by this process's saves (`OkrApplication._notify`). Saves run in worker threads
  (`asyncio.to_thread`), so the signal crosses into each waiter's event loop with
  `call_soon_threadsafe`;
- by other processes' saves, through the store's `Doorbell`:
  - PostgreSQL: eventsourcing's recorder already sends `NOTIFY <events table>` in every insert's
    transaction (delivered at commit); one connection per process `LISTEN`s
    (`PostgresDoorbell`);
  - SQLite has no notifications, so each listening process binds a Unix datagram socket in a
    directory next to the database (`events.sqlite-doorbell/`, mode 700), and a writer sends one
    byte to every socket there after its commit (`SocketDoorbell`).

Waiting costs nothing (a blocked socket read), and a ring is a few system calls per listening
process. A ring is a hint, never the only way: a follower still looks at the log every
`SAFETY_POLL_S` (a writer killed between its commit and its ring, a store written by a tool).
docs/decisions/0016-store-wake-up.md says why this and not inotify or a faster poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import sys
import threading
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from psycopg.pq.abc import PGconn

log = logging.getLogger(__name__)

SAFETY_POLL_S = 1.0
"""How often an idle follower looks at the log anyway, whatever rang."""

SOCKET_SUFFIX = ".sock"
MAX_SOCKET_PATH = 100
"""A Unix socket's path must fit in 108 bytes; longer ones go through /proc/self/fd (Linux)."""

RECONNECT_S = (0.5, 30.0)
"""First and longest pause before a lost LISTEN connection is opened again."""


class Doorbell(Protocol):
    """How the store's writers reach the followers of other processes."""

    def ring(self) -> None:
        """After a commit: wake every other process that listens (never raises)."""

    def listen(self, loop: asyncio.AbstractEventLoop, woken: Callable[[], None]) -> Closer:
        """Call `woken` in `loop` whenever another process rings; the result stops listening."""

    def close(self) -> None:
        """Release what ringing holds (after the last listener stopped)."""


Closer = Callable[[], None]


class Wakeup:
    """A thread-safe "something was saved" bell that any number of asyncio tasks listen to.

    With a `doorbell`, saves by other processes ring it too, and this process's saves ring
    theirs. The doorbell listens while at least one task of a loop does.
    """

    def __init__(self, doorbell: Doorbell | None = None) -> None:
        self.doorbell = doorbell
        self._lock = threading.Lock()
        self._listeners: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._remote: dict[asyncio.AbstractEventLoop, tuple[int, Closer]] = {}

    def notify(self) -> None:
        """This process committed something: wake its listeners and every other process's."""
        self.wake()
        if self.doorbell is not None:
            self.doorbell.ring()

    def wake(self) -> None:
        """Wake this process's listeners (another process rang, or this one saved)."""
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
        loop = asyncio.get_running_loop()
        listener = (loop, asyncio.Event())
        with self._lock:
            self._listeners.add(listener)
            self._listen_remotely(loop)
        try:
            yield listener[1]
        finally:
            with self._lock:
                self._listeners.discard(listener)
                self._stop_listening_remotely(loop)

    def close(self) -> None:
        if self.doorbell is not None:
            self.doorbell.close()

    def _listen_remotely(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.doorbell is None:
            return
        count, closer = self._remote.get(loop, (0, _nothing))
        if not count:
            closer = self.doorbell.listen(loop, self.wake)
        self._remote[loop] = (count + 1, closer)

    def _stop_listening_remotely(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop not in self._remote:
            return
        count, closer = self._remote.pop(loop)
        if count > 1:
            self._remote[loop] = (count - 1, closer)
        else:
            closer()


def _nothing() -> None:
    pass


async def wait_for_wakeup(event: asyncio.Event, timeout_s: float) -> None:
    """Until the event is set or `timeout_s` passed (the safety poll).

    `asyncio.timeout`, not `asyncio.wait_for`: on Python 3.11, `wait_for` returns normally when
    the task is cancelled in the same loop step as the event is set, so a follower woken by a
    save at shutdown would swallow its cancellation and keep running (a hung stop).
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()


# --- SQLite: a Unix datagram socket per listening process, in a directory by the database -------


class SocketDoorbell:
    """Listeners bind `<pid>-<random>.sock` in `directory`; a ring sends each other one a byte.

    A socket left by a process that died is removed by the next ring that finds nobody behind
    it. The directory is made mode 700: only the store's owner can ring or listen.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._own: set[str] = set()
        self._lock = threading.Lock()
        self._sender: socket.socket | None = None
        self._directory_fd: int | None = None
        self._unavailable_said = False

    def ring(self) -> None:
        try:
            names = os.listdir(self.directory)
        except OSError:
            return  # no directory: nobody ever listened
        sender = None
        for name in names:
            if not name.endswith(SOCKET_SUFFIX) or name in self._own:
                continue
            try:
                sender = sender or self._sending_socket()
                sender.sendto(b"\x01", self._address(name))
            except BlockingIOError:
                pass  # its queue is full: a ring is pending there already
            except ConnectionRefusedError:
                # Nobody reads it: its process died without removing it.
                with contextlib.suppress(OSError):
                    (self.directory / name).unlink()
            except OSError as error:  # gone meanwhile, or unreachable: the safety poll covers it
                log.debug("doorbell %s not rung: %s", name, error)

    def listen(self, loop: asyncio.AbstractEventLoop, woken: Callable[[], None]) -> Closer:
        name = f"{os.getpid()}-{secrets.token_hex(4)}{SOCKET_SUFFIX}"
        try:
            self.directory.mkdir(mode=0o700, exist_ok=True)
            receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                receiver.setblocking(False)
                receiver.bind(self._address(name))
            except BaseException:
                receiver.close()
                raise
        except OSError as error:
            self._say_unavailable(error)
            return _nothing
        self._own.add(name)

        def drain() -> None:
            with contextlib.suppress(OSError):
                while receiver.recv(64):
                    pass
            woken()

        loop.add_reader(receiver.fileno(), drain)

        def close() -> None:
            with contextlib.suppress(Exception):
                loop.remove_reader(receiver.fileno())
            receiver.close()
            with contextlib.suppress(OSError):
                (self.directory / name).unlink()
            self._own.discard(name)

        return close

    def close(self) -> None:
        with self._lock:
            if self._sender is not None:
                self._sender.close()
                self._sender = None
            if self._directory_fd is not None:
                os.close(self._directory_fd)
                self._directory_fd = None

    def _sending_socket(self) -> socket.socket:
        with self._lock:
            if self._sender is None:
                sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sender.setblocking(False)
                self._sender = sender
            return self._sender

    def _address(self, name: str) -> str:
        path = str(self.directory / name)
        if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
            return path
        if not sys.platform.startswith("linux"):
            raise OSError(f"socket path too long: {path}")
        with self._lock:
            if self._directory_fd is None:
                self._directory_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            return f"/proc/self/fd/{self._directory_fd}/{name}"

    def _say_unavailable(self, error: OSError) -> None:
        if not self._unavailable_said:
            self._unavailable_said = True
            log.warning(
                "no doorbell in %s (%s): other processes' writes are seen within %.0fs",
                self.directory,
                error,
                SAFETY_POLL_S,
            )


# --- PostgreSQL: LISTEN to the NOTIFY that every insert of eventsourcing's recorder sends ---------


class PostgresDoorbell:
    """One connection per listening loop, `LISTEN`ing on the events table's channel.

    Ringing is the recorder's own `NOTIFY` (eventsourcing's `PostgresApplicationRecorder` sends
    it in every insert's transaction, delivered when it commits), so `ring` does nothing.
    A notification from one of `own_backends` (the server processes of this process's own
    connections, which the recorder notes as it inserts) is this process's own save, whose
    listeners were woken already: waking them again made the relay look twice per write.
    A lost connection is opened again, with backoff; meanwhile the safety poll finds writes.
    """

    def __init__(
        self, conninfo: str, channel: str, own_backends: Collection[int] = frozenset()
    ) -> None:
        self.conninfo = conninfo
        self.channel = channel
        self.own_backends = own_backends

    def ring(self) -> None:
        pass

    def listen(self, loop: asyncio.AbstractEventLoop, woken: Callable[[], None]) -> Closer:
        task = loop.create_task(self._listen(woken), name=f"LISTEN {self.channel}")

        def close() -> None:
            task.cancel()

        return close

    def close(self) -> None:
        pass

    async def _listen(self, woken: Callable[[], None]) -> None:
        import psycopg
        from psycopg import sql

        failures = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True
                ) as connection:
                    await connection.execute(
                        sql.SQL("LISTEN {}").format(sql.Identifier(self.channel))
                    )
                    if failures:
                        log.info("listening to %s again", self.channel)
                    failures = 0
                    woken()  # whatever was committed while nobody listened
                    await self._relay_notifications(connection.pgconn, woken)
            except (psycopg.Error, OSError) as error:
                failures += 1
                if failures == 1:
                    log.warning(
                        "LISTEN %s lost (%s); other processes' writes are seen within %.0fs "
                        "until it is back",
                        self.channel,
                        error,
                        SAFETY_POLL_S,
                    )
                woken()
                first, longest = RECONNECT_S
                await asyncio.sleep(min(longest, first * 2 ** (failures - 1)))

    async def _relay_notifications(self, pgconn: PGconn, woken: Callable[[], None]) -> None:
        """Wake for each batch of notifications that are not this process's own, until the
        connection fails. Read with libpq's own calls when the socket turns readable: psycopg's
        `notifies()` wakes every 100 ms to look (`waiting.wait_async`), ~0.4 % of a core."""
        readable = asyncio.Event()
        loop = asyncio.get_running_loop()
        socket_fd = pgconn.socket
        loop.add_reader(socket_fd, readable.set)
        try:
            while True:
                await readable.wait()
                readable.clear()
                pgconn.consume_input()  # raises when the connection is lost
                theirs = False
                while (notification := pgconn.notifies()) is not None:
                    theirs = theirs or notification.be_pid not in self.own_backends
                if theirs:
                    woken()
        finally:
            loop.remove_reader(socket_fd)
