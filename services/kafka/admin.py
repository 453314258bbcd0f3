"""Cluster-level Kafka chores: is the broker there, and do our topics exist.

Topics are created by the service itself at start-up (idempotently) so that a fresh cluster needs
no manual step, and the retention of `okr.events` is set where the topic is born.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from events import topics

if TYPE_CHECKING:
    from services.settings import Settings

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36
FOREVER = {"retention.ms": "-1", "retention.bytes": "-1"}


def _admin(settings: Settings, timeout_s: float) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        **settings.kafka_client_options(),
        request_timeout_ms=int(timeout_s * 1000),
        client_id="okr-ledger-admin",
    )


class HeldClients:
    """An admin client and an offsets reader kept open from one health round to the next.

    Opening clients anew every round costs a bootstrap and a read of every topic's metadata each
    time: most of an idle service's CPU. Held ones are started on first use and closed after a
    failure (the next round starts fresh ones) and when the monitor stops.
    """

    def __init__(self, settings: Settings, timeout_s: float) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._admin: AIOKafkaAdminClient | None = None
        self._reader: AIOKafkaConsumer | None = None
        self._starting = asyncio.Lock()
        """Probes of one round run at once: only one of them starts a missing client."""

    async def admin(self) -> AIOKafkaAdminClient:
        async with self._starting:
            return await self._start_admin()

    async def _start_admin(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = _admin(self.settings, self.timeout_s)
            try:
                await admin.start()
            except BaseException:
                await admin.close()
                raise
            self._admin = admin
        return self._admin

    async def reader(self) -> AIOKafkaConsumer:
        """A consumer with no group: it reads offsets and metadata, never joins or commits."""
        async with self._starting:
            return await self._start_reader()

    async def _start_reader(self) -> AIOKafkaConsumer:
        if self._reader is None:
            reader = AIOKafkaConsumer(
                **self.settings.kafka_client_options(),
                request_timeout_ms=int(self.timeout_s * 1000),
                group_id=None,
                enable_auto_commit=False,
            )
            try:
                await reader.start()
            except BaseException:
                await reader.stop()
                raise
            self._reader = reader
        return self._reader

    async def close(self) -> None:
        admin, reader, self._admin, self._reader = self._admin, self._reader, None, None
        if admin is not None:
            await admin.close()
        if reader is not None:
            await reader.stop()


async def probe_kafka(
    settings: Settings, timeout_s: float = 3.0, held: HeldClients | None = None
) -> str | None:
    """None when a broker answers a metadata request in time, else why not."""
    clients = held or HeldClients(settings, timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            await (await clients.admin()).describe_cluster()
    except (KafkaError, OSError, TimeoutError) as error:
        await clients.close()
        return f"{type(error).__name__}: {error}".rstrip(": ")
    finally:
        if held is None:
            await clients.close()
    return None


def topic_specs(settings: Settings) -> list[NewTopic]:
    """The topics the service owns, with their partition counts, replication and retention.

    `min.insync.replicas` is set on every topic, not left to the broker's default: with the
    producers' acks=all, it is how many copies an acknowledged write has at least."""
    specs = []
    for name in topics.ALL_TOPICS:
        configs: dict[str, Any] = dict(FOREVER) if name in topics.RETAINED_FOREVER else {}
        configs["min.insync.replicas"] = str(settings.topic_min_insync_replicas)
        specs.append(
            NewTopic(
                name=settings.topic(name),
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication_factor,
                topic_configs=configs,
            )
        )
    return specs


async def ensure_topics(settings: Settings, timeout_s: float = 15.0) -> list[str]:
    """Create whichever of our topics are missing; returns the names it created."""
    admin = _admin(settings, timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [spec for spec in topic_specs(settings) if spec.name not in existing]
            if not missing:
                return []
            response = await admin.create_topics(missing, timeout_ms=int(timeout_s * 1000))
    finally:
        await admin.close()
    created = []
    for name, code, *rest in response.topic_errors:
        if code not in (0, TOPIC_ALREADY_EXISTS):
            message = rest[0] if rest else ""
            raise KafkaError(f"cannot create topic {name}: error {code} {message}")
        if code == 0:
            created.append(name)
    log.info("created topics %s", created)
    return created
