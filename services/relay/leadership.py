"""One relay publishes at a time, however many processes share the event store.

Every `okr serve` runs the relay job, but only the holder of the store's relay lock publishes;
the others stand by and try again every `RETRY_S`, so one of them takes over about a second
after the holder is gone. Whatever holds the lock lets go of it when its process dies:

- PostgreSQL: a session advisory lock (`pg_try_advisory_lock`) on a connection of its own, kept
  open while the relay publishes. The server releases it when the session ends: at once for a
  killed process (its socket closes), within ~11 s for a vanished host (TCP keepalives, set on
  both ends). The key is derived from the events table's schema and name, so two stores in one
  database have a relay each. The connection's `application_name` is the holder's instance id,
  which the others read back through `pg_locks` and `pg_stat_activity`.
- SQLite (one machine): an exclusive `flock` on `<database>-relay.lock` next to the file,
  released by the kernel when the descriptor is closed, by the process's death too. The holder
  writes its instance id in the file. A lock belongs to an open file description, so two relays
  of one process exclude each other as two processes do.
- An in-memory SQLite store has one process: its relay always holds.

A holder whose lock is lost (its connection dropped, the server restarted) stops publishing at
once: the attempt ends with `RelayLockLostError`, and the job stands by until it holds the lock
again. Two relays may overlap for that moment; consumers dedupe (ADR 4), so the price is a
duplicate, never a missing event. The job's entry on the board says who holds the lock
(`projections.job_health.Lease`), which `/health` shows. docs/decisions/0023-one-relay-at-a-time.md
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import psycopg
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.rows import TupleRow

from domain.errors import OkrError
from projections.job_health import current_job
from services.stores import postgres_location

if TYPE_CHECKING:
    from services.commands.application import OkrApplication
    from services.settings import Settings

log = logging.getLogger(__name__)

RETRY_S = 1.0
"""How often a relay that stands by tries to take the lock."""
KEEPALIVES = {"keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
"""TCP keepalives of the lock's connection, on both ends: the holder notices a vanished server,
and the server a vanished holder (whose lock it then releases), within ~11 s; the server's
default is 2 hours."""
APPLICATION_NAME_BYTES = 63
"""PostgreSQL keeps this much of `application_name`: a longer instance id is cut."""

HOLDER_SQL = """
SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint = %s AND l.objid::bigint = %s
"""
"""Who holds a bigint advisory lock: pg_locks splits its key into classid (high 32 bits) and
objid (low 32 bits), objsubid 1."""


class RelayLockLostError(OkrError, ConnectionError):
    """The connection or file that held the relay lock is gone: another relay may publish now."""


class RelayLock(Protocol):
    """The store's relay lock, as one relay sees it."""

    async def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; True when this relay holds it now."""

    async def holder(self) -> str | None:
        """The instance that holds it (when this relay does not), as it says; None if unknown."""

    async def lost(self) -> None:
        """Return once the held lock is lost; never while it is held."""

    async def release(self) -> None:
        """Let go of the lock, and of the connection or descriptor that holds it."""


def lock_key(name: str) -> int:
    """A signed 64-bit advisory lock key for `name`, the same in every process."""
    digest = hashlib.sha256(f"okr relay {name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresRelayLock:
    """A session advisory lock on a connection of its own (module docstring)."""

    def __init__(self, conninfo: str, key: int, instance: str) -> None:
        self.conninfo = conninfo
        self.key = key
        self.instance = instance
        self._connection: psycopg.AsyncConnection[TupleRow] | None = None

    async def _connected(self) -> psycopg.AsyncConnection[TupleRow]:
        if self._connection is None or self._connection.closed:
            name = self.instance.encode()[:APPLICATION_NAME_BYTES].decode(errors="ignore")
            server = " ".join(f"-c tcp_{key}={value}" for key, value in KEEPALIVES.items())
            conninfo = psycopg.conninfo.make_conninfo(
                self.conninfo,
                application_name=name,
                options=server,
                connect_timeout=5,
                keepalives=1,
                **KEEPALIVES,
            )
            self._connection = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        return self._connection

    async def try_acquire(self) -> bool:
        connection = await self._connected()
        cursor = await connection.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
        row = await cursor.fetchone()
        return bool(row and row[0])

    async def holder(self) -> str | None:
        connection = await self._connected()
        high, low = (self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF
        cursor = await connection.execute(HOLDER_SQL, (high, low))
        row = await cursor.fetchone()
        return str(row[0]) if row and row[0] else None

    async def lost(self) -> None:
        """Wait for the idle connection's socket to turn readable, and read what came: only the
        end of the connection (or a message before it) comes on a session that sends nothing."""
        connection = self._connection
        if connection is None or connection.closed:
            return
        pgconn = connection.pgconn
        readable = asyncio.Event()
        loop = asyncio.get_running_loop()
        fd = pgconn.socket
        loop.add_reader(fd, readable.set)
        try:
            while pgconn.status == psycopg.pq.ConnStatus.OK:
                await readable.wait()
                readable.clear()
                try:
                    pgconn.consume_input()
                except psycopg.OperationalError:
                    return
        finally:
            loop.remove_reader(fd)

    async def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await connection.close()


class FileRelayLock:
    """An exclusive `flock` on a file next to the SQLite database (module docstring)."""

    def __init__(self, path: Path, instance: str) -> None:
        self.path = path
        self.instance = instance
        self._fd: int | None = None
        self._holding = False

    def _opened(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    async def try_acquire(self) -> bool:
        fd = self._opened()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._holding = True
        os.ftruncate(fd, 0)
        os.pwrite(fd, self.instance.encode(), 0)
        return True

    async def holder(self) -> str | None:
        text = os.pread(self._opened(), 1024, 0).decode(errors="replace").strip()
        return text or None

    async def lost(self) -> None:
        await asyncio.get_running_loop().create_future()  # an open descriptor keeps its lock

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if self._holding:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        self._holding = False
        os.close(fd)


class OwnRelayLock:
    """The lock of a store only this process can open (in-memory SQLite): always held."""

    def __init__(self, instance: str) -> None:
        self.instance = instance

    async def try_acquire(self) -> bool:
        return True

    async def holder(self) -> str | None:
        return self.instance

    async def lost(self) -> None:
        await asyncio.get_running_loop().create_future()

    async def release(self) -> None:
        pass


def relay_lock(settings: Settings, application: OkrApplication) -> RelayLock:
    """The relay lock of the application's event store, for this instance."""
    recorder = application.recorder
    instance = settings.instance
    if isinstance(recorder, PostgresApplicationRecorder):
        table = f"{recorder.datastore.schema}.{recorder.events_table_name}"
        conninfo = postgres_location(settings.event_store_url).conninfo
        return PostgresRelayLock(conninfo, lock_key(table), instance)
    if isinstance(recorder, SQLiteApplicationRecorder):
        pool = recorder.datastore.pool
        if not pool.is_sqlite_memory_mode:
            return FileRelayLock(Path(f"{pool.db_name}-relay.lock"), instance)
    return OwnRelayLock(instance)


class RelayLease:
    """Holds the relay lock for one attempt of the relay job, and says who holds it on the
    job's entry (`Lease`) and, when that changes, in the log."""

    def __init__(self, lock: RelayLock, instance: str, retry_s: float = RETRY_S) -> None:
        self.lock = lock
        self.instance = instance
        self.retry_s = retry_s
        self._said: str | None = None

    @contextlib.asynccontextmanager
    async def held(self, succeeded: Callable[[], None]) -> AsyncIterator[None]:
        """Wait until this relay holds the lock (each answered try is the job working: standing
        by is its job too), then run the block until the lock is lost: the block is then
        cancelled and `RelayLockLostError` raised instead. The lock is let go of on the way out,
        however the block ends, so that another instance may publish while this one retries."""
        try:
            while not await self.lock.try_acquire():
                self._report(await self.lock.holder(), holding=False)
                succeeded()
                await asyncio.sleep(self.retry_s)
            self._report(self.instance, holding=True)
            async with _interrupted_by(self.lock.lost()):
                yield
        finally:
            await self.lock.release()
            self._report(None, holding=False)

    def _report(self, holder: str | None, *, holding: bool) -> None:
        job = current_job()
        if job is not None:
            job.leased(holder, holding, self.instance)
        if holder is not None and holder != self._said:
            self._said = holder
            if holding:
                log.info("relay: this instance (%s) holds the relay lock and publishes", holder)
            else:
                log.info("relay: %s holds the relay lock; %s stands by", holder, self.instance)


@contextlib.asynccontextmanager
async def _interrupted_by(lost: Awaitable[None]) -> AsyncIterator[None]:
    """Run the block until `lost` completes, then cancel it and raise `RelayLockLostError`
    (as `asyncio.timeout` turns its own cancellation into `TimeoutError`)."""
    task = asyncio.current_task()
    assert task is not None
    watcher = asyncio.ensure_future(lost)
    inside, interrupted = True, False

    def interrupt(done: asyncio.Future[None]) -> None:
        nonlocal interrupted
        if done.cancelled():
            return
        done.exception()  # retrieved: that the lock is gone matters, not how it went
        if inside:  # a callback scheduled as the block ended must not cancel what comes next
            interrupted = True
            task.cancel()

    watcher.add_done_callback(interrupt)
    try:
        yield
    except asyncio.CancelledError:
        if interrupted and task.uncancel() == 0:
            raise RelayLockLostError("the relay lock's connection was lost") from None
        raise
    finally:
        inside = False
        watcher.cancel()
        await asyncio.wait([watcher])  # its socket unwatched before the connection closes
