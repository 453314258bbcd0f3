"""The SQLite stores are nobody else's business: what the service creates for them (their
directory, the databases, their -wal and -shm, the event store's doorbell) is its owner's only,
whatever the umask (the usual 022 made them 644 in a 755 `var/`)."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from events import commands as wire
from projections.sqlite import SQLiteReadStore
from services.commands.application import OkrApplication
from services.settings import Settings
from services.stores import probe_store
from tests import seed


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


async def test_the_stores_directories_are_700_and_their_files_600(
    tmp_path: Path, usual_umask: None
) -> None:
    var = tmp_path / "deployment" / "var"
    settings = Settings(
        event_store_url=f"sqlite:///{var / 'events.sqlite'}",
        read_store_url=f"sqlite:///{var / 'stores' / 'read.sqlite'}",
    )
    application = OkrApplication(settings)
    read_store = SQLiteReadStore(var / "stores" / "read.sqlite")
    try:
        application.handle(
            wire.Command(
                command_id=str(uuid4()),
                actor="alice@example.com",
                body=wire.CreateObjective(
                    title="Private",
                    owner="alice@example.com",
                    team="growth",
                    period_start=seed.QUARTER_START,
                    period_end=seed.QUARTER_END,
                    key_results=[seed.NPS.as_definition()],
                ),
            )
        )
        with application.saved.listen():  # a follower: the doorbell's directory and socket
            await asyncio.sleep(0)
            made = [tmp_path / "deployment", *(tmp_path / "deployment").rglob("*")]
            modes = {str(path.relative_to(tmp_path)): oct(mode(path)) for path in made}
    finally:
        read_store.dialect.close()
        application.close()

    directories = ["deployment", "deployment/var", "deployment/var/stores"]
    directories.append("deployment/var/events.sqlite-doorbell")
    assert {name: modes[name] for name in directories} == dict.fromkeys(directories, "0o700")
    files = [
        f"deployment/var/{name}{suffix}"
        for name in ("events.sqlite", "stores/read.sqlite")
        for suffix in ("", "-wal", "-shm")
    ]
    assert {name: modes[name] for name in files} == dict.fromkeys(files, "0o600")


def test_health_probing_a_store_not_made_yet_makes_it_private_too(
    tmp_path: Path, usual_umask: None
) -> None:
    path = tmp_path / "var" / "events.sqlite"
    assert probe_store(f"sqlite:///{path}") is None
    assert oct(mode(path.parent)) == "0o700"
    assert oct(mode(path)) == "0o600"


def test_an_existing_directory_keeps_the_mode_its_owner_gave_it(
    tmp_path: Path, usual_umask: None
) -> None:
    var = tmp_path / "var"
    var.mkdir(mode=0o750)
    application = OkrApplication(
        Settings(
            event_store_url=f"sqlite:///{var / 'events.sqlite'}",
            read_store_url=f"sqlite:///{var / 'read.sqlite'}",
        )
    )
    application.close()
    assert oct(mode(var)) == "0o750"
    assert oct(mode(var / "events.sqlite")) == "0o600"
