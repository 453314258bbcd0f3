"""`okr kafka start | stop | status` as a user runs them: idempotent, one broker at most; and
the 3-node cluster, whose topics keep taking acks=all writes while one node is dead."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from events.topics import EVENTS
from services.kafka.admin import ensure_topics, topic_specs
from services.settings import Settings
from tests.kafka_support import (
    Message,
    commit_offsets,
    committed_offsets,
    end_offsets,
    eventually,
    produce,
    read_to_end,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def okr(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def brokers_using(data_dir: Path) -> list[int]:
    """Pids of Kafka processes whose command line names this data dir."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().split()[2]
        except OSError:
            continue
        if b"kafka.Kafka" in cmdline and str(data_dir).encode() in cmdline and state != "Z":
            pids.append(int(proc.name))
    return pids


def test_start_twice_leaves_one_broker_and_stop_leaves_none(tmp_path: Path) -> None:
    data_dir = tmp_path / "kafka"
    env = {
        **os.environ,
        "OKR_LOCAL_KAFKA_PORT": str(free_port()),
        "OKR_LOCAL_KAFKA_CONTROLLER_PORT": str(free_port()),
        "OKR_LOCAL_KAFKA_DATA_DIR": str(data_dir),
        "OKR_LOCAL_KAFKA_HEAP": "256m",
    }
    try:
        first = okr(env, "kafka", "start")
        assert first.returncode == 0, first.stderr
        assert "kafka started" in first.stdout
        second = okr(env, "kafka", "start")
        assert second.returncode == 0, second.stderr
        assert "already running" in second.stdout
        assert len(brokers_using(data_dir)) == 1

        status = okr(env, "kafka", "status")
        assert status.returncode == 0 and "running" in status.stdout
    finally:
        stopped = okr(env, "kafka", "stop")
    assert stopped.returncode == 0 and "kafka stopped" in stopped.stdout
    assert brokers_using(data_dir) == []
    assert okr(env, "kafka", "status").returncode == 3
    again = okr(env, "kafka", "stop")
    assert "was not running" in again.stdout


def free_port_block(count: int) -> int:
    """The first of `count` consecutive free ports, below the kernel's ephemeral range
    (docs/decisions/0002-test-services.md)."""
    for _ in range(100):
        first = random.randrange(20_000, 32_000 - count)
        try:
            for port in range(first, first + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise AssertionError(f"no {count} consecutive free ports")


def three_node_environment(data_dir: Path) -> tuple[dict[str, str], str]:
    """The environment `okr kafka` gets to run a 3-node cluster on six free ports under
    `data_dir` (the cluster's own heap size), and the cluster's bootstrap list."""
    port = free_port_block(6)
    env = {
        **os.environ,
        "OKR_LOCAL_KAFKA_PORT": str(port),
        "OKR_LOCAL_KAFKA_CONTROLLER_PORT": str(port + 3),
        "OKR_LOCAL_KAFKA_DATA_DIR": str(data_dir),
    }
    env.pop("OKR_LOCAL_KAFKA_HEAP", None)
    return env, ",".join(f"127.0.0.1:{port + node}" for node in range(3))


def events_of_30_objectives(label: str) -> list[Message]:
    """One message for each of 30 keys: enough to land on each of 3 partitions."""
    return [(f"objective-{n}".encode(), f"{label}-{n}".encode(), []) for n in range(30)]


Replicas = dict[tuple[str, int], tuple[list[int], list[int]]]


async def replicas_and_isr(settings: Settings, names: list[str]) -> Replicas:
    """(replicas, in-sync replicas) of every partition of these topics."""
    admin = AIOKafkaAdminClient(**settings.kafka_client_options())
    await admin.start()
    try:
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    return {
        (topic["topic"], partition["partition"]): (partition["replicas"], partition["isr"])
        for topic in described
        for partition in topic["partitions"]
    }


async def min_insync_replicas(settings: Settings, names: list[str]) -> dict[str, str]:
    admin = AIOKafkaAdminClient(**settings.kafka_client_options())
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
    finally:
        await admin.close()
    return {
        resource[3]: dict((entry[0], entry[1]) for entry in resource[4])["min.insync.replicas"]
        for response in responses
        for resource in response.resources
    }


async def test_a_three_node_cluster_takes_acks_all_writes_with_one_node_killed(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "cluster"
    env, bootstrap = three_node_environment(data_dir)

    async def kafka(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(okr, env, "kafka", *args)

    try:
        started = await kafka("start", "--brokers", "3")
        assert started.returncode == 0, started.stderr
        assert started.stdout.splitlines()[-1] == (f"kafka started: 3 nodes, bootstrap {bootstrap}")
        assert len(brokers_using(data_dir)) == 3

        settings = Settings(
            kafka_bootstrap_servers=bootstrap,
            topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
            topic_partitions=3,
            topic_replication_factor=3,
            topic_min_insync_replicas=2,
        )
        names = [spec.name for spec in topic_specs(settings)]
        assert sorted(await ensure_topics(settings)) == sorted(names)

        async def placed_on_every_node() -> bool:
            """Each node learns of new topics from the controller a moment after they exist."""
            placement = await replicas_and_isr(settings, names)
            return len(placement) == 3 * len(names) and all(
                len(replicas) == len(isr) == 3 for replicas, isr in placement.values()
            )

        await eventually(placed_on_every_node, "3 in-sync replicas of every partition")
        assert set((await min_insync_replicas(settings, names)).values()) == {"2"}

        group = settings.consumer_group("cluster-test")
        before = events_of_30_objectives("before")
        written = await produce(settings, EVENTS, before)
        assert {metadata.partition for metadata in written} == {0, 1, 2}
        # The group's first commit creates __consumer_offsets, on all three nodes.
        await commit_offsets(settings, group, EVENTS, await end_offsets(settings, EVENTS))
        offsets_topic = await replicas_and_isr(settings, ["__consumer_offsets"])
        assert all(len(replicas) == 3 for replicas, _ in offsets_topic.values())
        assert await min_insync_replicas(settings, ["__consumer_offsets"]) == {
            "__consumer_offsets": "2"
        }

        killed = await kafka("stop", "--node", "2", "--kill")
        assert killed.stdout.strip() == "node 2 killed"
        assert len(brokers_using(data_dir)) == 2
        assert (await kafka("status")).returncode == 4, "a cluster with a node down"

        after = events_of_30_objectives("after")
        await produce(settings, EVENTS, after)
        records = await read_to_end(settings, EVENTS)
        assert len(records) == 60
        assert {record.value for record in records} == {value for _, value, _ in before + after}
        ends = await end_offsets(settings, EVENTS)
        await commit_offsets(settings, group, EVENTS, ends)
        assert await committed_offsets(settings, group, EVENTS) == ends

        async def node_2_out_of_sync() -> bool:
            placement = await replicas_and_isr(settings, names)
            return all(sorted(isr) == [1, 3] for _, isr in placement.values())

        await eventually(node_2_out_of_sync, "every partition's in-sync replicas are 1 and 3")

        restarted = await kafka("start", "--node", "2")
        assert restarted.returncode == 0, restarted.stderr
        assert (await kafka("status")).returncode == 0

        async def node_2_in_sync() -> bool:
            placement = await replicas_and_isr(settings, names)
            return all(len(isr) == 3 for _, isr in placement.values())

        await eventually(node_2_in_sync, "node 2 is back in every partition's in-sync replicas")
    finally:
        stopped = await kafka("stop")
    assert stopped.stdout.startswith("kafka stopped"), stopped.stderr
    assert brokers_using(data_dir) == []
