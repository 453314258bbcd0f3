"""Real services for the tests: Kafka and PostgreSQL, found or started once per session.

Kafka: `OKR_TEST_KAFKA` if set; else a testcontainers Kafka when a Docker engine answers; else the
project's local broker (`okr kafka start`) on a test port. PostgreSQL: `OKR_TEST_POSTGRES_URL`.
Under `CI=true` a missing service fails the run; elsewhere the tests that need it are skipped.
Every test gets its own topic prefix and its own databases, so nothing leaks between tests;
`store_settings` runs a test once per storage backend (SQLite files, then PostgreSQL).
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from services.commands.application import OkrApplication
from services.settings import Settings
from services.stores import postgres_location
from tests.audit_support import Ledger, write_ledger
from tests.auth_support import INLINE_API_KEYS, KAFKA_PRINCIPAL

IN_CI = os.environ.get("CI", "").lower() == "true"
TEST_KAFKA_PORT = 29092

SERVICE_FIXTURES = {"kafka_bootstrap": "kafka", "postgres_url": "postgres"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses a real service carries that service's marker, for `-m` selection."""
    for item in items:
        for fixture, marker in SERVICE_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(getattr(pytest.mark, marker))


def unavailable(what: str) -> None:
    """Fail under CI, where a missing broker or database is a broken set-up; skip elsewhere."""
    if IN_CI:
        pytest.fail(f"CI=true but {what}", pytrace=False)
    pytest.skip(what)


def docker_engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """bootstrap_servers of a real Apache Kafka broker."""
    configured = os.environ.get("OKR_TEST_KAFKA")
    if configured:
        yield configured
        delete_test_topics(configured)
        return
    if docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from services.devtools import local_kafka

    kafka = local_kafka.LocalKafka.from_settings(
        Settings(
            local_kafka_port=TEST_KAFKA_PORT,
            local_kafka_controller_port=TEST_KAFKA_PORT + 1,
            local_kafka_data_dir=Path("var/test-kafka"),
        )
    )
    try:
        _, started = local_kafka.start(kafka)
    except local_kafka.LocalKafkaError as error:
        unavailable(f"no Kafka broker: set OKR_TEST_KAFKA or fix the local broker ({error})")
        return
    yield kafka.bootstrap_servers
    if started:
        local_kafka.stop(kafka)
    else:
        delete_test_topics(kafka.bootstrap_servers)


TEST_TOPIC = re.compile(r"^t[0-9a-f]{10}\.")
"""Topics made under a `topic_prefix`: thousands per run, which a long-lived broker would keep."""


def delete_test_topics(bootstrap_servers: str) -> None:
    """Leave a shared development broker as the run found it (a fresh one is thrown away)."""

    async def delete() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
        await admin.start()
        try:
            doomed = [name for name in await admin.list_topics() if TEST_TOPIC.match(name)]
            for first in range(0, len(doomed), 500):
                await admin.delete_topics(doomed[first : first + 500])
        finally:
            await admin.close()

    try:
        asyncio.run(delete())
    except Exception as error:  # cleanup only: the run's verdict stands
        warnings.warn(f"test topics not deleted: {error}", stacklevel=1)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of a real PostgreSQL server's maintenance database."""
    url = os.environ.get("OKR_TEST_POSTGRES_URL")
    if not url:
        unavailable("no PostgreSQL: set OKR_TEST_POSTGRES_URL (scripts/postgres.sh start)")
    assert url is not None
    return url


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = f"okr_test_{uuid.uuid4().hex[:12]}"
    admin = postgres_location(postgres_url)
    with psycopg.connect(admin.conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = postgres_url.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(admin.conninfo, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def topic_prefix() -> str:
    """A prefix no other test uses, so each test has its own topics."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Settings:
    """Settings of one isolated service instance: own topics, own SQLite files, own (empty)
    API keys file; the keys of tests/auth_support.py are valid, and its Kafka principal may send
    commands."""
    return Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        topic_partitions=3,
        event_store_url=f"sqlite:///{tmp_path / 'events.sqlite'}",
        read_store_url=f"sqlite:///{tmp_path / 'read.sqlite'}",
        api_keys=INLINE_API_KEYS,
        api_keys_file=tmp_path / "api-keys.json",
        kafka_command_principals=KAFKA_PRINCIPAL,
        audit_signing_key_file=tmp_path / "audit-signing.key",
    )


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def store_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """The test's settings, run once with both stores in SQLite files, once in fresh PostgreSQL.

    Both stores move together, as a deployment sets them; a test that asks for this runs on each
    backend, and its PostgreSQL run carries the `postgres` marker.
    """
    if request.param == "sqlite":
        return settings
    database: str = request.getfixturevalue("postgres_database")
    return settings.model_copy(update={"event_store_url": database, "read_store_url": database})


@pytest.fixture
def open_application(store_settings: Settings) -> Iterator[Callable[..., OkrApplication]]:
    """Opens applications (one per simulated process), on the test's store unless told; closes."""
    opened: list[OkrApplication] = []

    def open_one(settings: Settings = store_settings) -> OkrApplication:
        application = OkrApplication(settings)
        opened.append(application)
        return application

    yield open_one
    for application in opened:
        application.close()


@pytest.fixture
def ledger(store_settings: Settings) -> Iterator[Ledger]:
    """Two objectives with a known history (tests/audit_support.py), on the test's store."""
    written = write_ledger(store_settings)
    yield written
    written.application.close()
