"""`services.relay.wakeup`: the in-process bell, and the SQLite doorbell that carries it to other
processes (each `SocketDoorbell` here stands for one process: they share nothing but the
directory)."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from pathlib import Path

import pytest

from services.relay.wakeup import SocketDoorbell, Wakeup, wait_for_wakeup

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="Unix sockets")

WOKEN_WITHIN_S = 5.0


def sockets_in(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".sock"))


async def woken(event: asyncio.Event) -> bool:
    try:
        async with asyncio.timeout(WOKEN_WITHIN_S):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def test_a_save_in_one_process_wakes_the_listeners_of_another(tmp_path: Path) -> None:
    directory = tmp_path / "events.sqlite-doorbell"
    writer, reader = Wakeup(SocketDoorbell(directory)), Wakeup(SocketDoorbell(directory))
    try:
        with reader.listen() as saved:
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700
            assert len(sockets_in(directory)) == 1
            saved.clear()
            await asyncio.to_thread(writer.notify)  # a save, from a worker thread
            assert await woken(saved)
        assert sockets_in(directory) == [], "the listener's socket goes with it"
    finally:
        writer.close()
        reader.close()


async def test_listeners_of_one_loop_share_one_socket_and_a_save_wakes_every_one(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "doorbell"
    writer, reader = Wakeup(SocketDoorbell(directory)), Wakeup(SocketDoorbell(directory))
    try:
        with reader.listen() as first, reader.listen() as second:
            assert len(sockets_in(directory)) == 1
            first.clear()
            second.clear()
            writer.notify()
            assert await woken(first)
            assert await woken(second)
        assert sockets_in(directory) == []
    finally:
        writer.close()
        reader.close()


async def test_a_process_wakes_its_own_listeners_without_ringing_its_own_socket(
    tmp_path: Path,
) -> None:
    wakeup = Wakeup(SocketDoorbell(tmp_path / "doorbell"))
    try:
        with wakeup.listen() as saved:
            saved.clear()
            wakeup.notify()
            assert await woken(saved)
            saved.clear()
            await wait_for_wakeup(saved, 0.2)  # no datagram of its own arrives afterwards
            assert not saved.is_set()
    finally:
        wakeup.close()


def test_a_ring_removes_the_socket_of_a_process_that_died(tmp_path: Path) -> None:
    directory = tmp_path / "doorbell"
    directory.mkdir(mode=0o700)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(directory / "4242-deadbeef.sock"))
    dead.close()  # killed: the file stays, nobody reads it

    doorbell = SocketDoorbell(directory)
    try:
        doorbell.ring()
    finally:
        doorbell.close()

    assert sockets_in(directory) == []


def test_ringing_with_no_listener_ever_is_harmless(tmp_path: Path) -> None:
    doorbell = SocketDoorbell(tmp_path / "never-made")
    doorbell.ring()
    doorbell.close()
    assert not (tmp_path / "never-made").exists()


async def test_a_directory_deeper_than_a_socket_path_allows_still_rings(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "events.sqlite-doorbell"
    deep.parent.mkdir(parents=True)
    assert len(str(deep)) > 110  # beyond sun_path's 108 bytes
    writer, reader = Wakeup(SocketDoorbell(deep)), Wakeup(SocketDoorbell(deep))
    try:
        with reader.listen() as saved:
            saved.clear()
            writer.notify()
            assert await woken(saved)
    finally:
        writer.close()
        reader.close()
