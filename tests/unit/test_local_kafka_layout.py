"""The local Kafka's layout, without starting a JVM: a 3-node cluster's ports, directories,
quorum and replication settings, and the topics the service creates on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.devtools import local_kafka
from services.devtools.local_kafka import LocalKafka, LocalKafkaError
from services.kafka.admin import topic_specs
from services.settings import Settings, SettingsError, load_settings


def cluster(
    tmp_path: Path, brokers: int = 3, port: int = 21000, controller: int = 21010
) -> LocalKafka:
    return LocalKafka(
        version="4.1.1",
        port=port,
        controller_port=controller,
        data_dir=tmp_path / "kafka",
        cache_dir=tmp_path / "cache",
        heap="384m",
        brokers=brokers,
    )


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#")


def test_each_node_has_its_ports_and_directory(tmp_path: Path) -> None:
    kafka = cluster(tmp_path)
    assert [(n.node_id, n.port, n.controller_port) for n in kafka.nodes] == [
        (1, 21000, 21010),
        (2, 21001, 21011),
        (3, 21002, 21012),
    ]
    assert [n.data_dir.name for n in kafka.nodes] == ["node-1", "node-2", "node-3"]
    assert kafka.bootstrap_servers == "127.0.0.1:21000,127.0.0.1:21001,127.0.0.1:21002"
    single = cluster(tmp_path, brokers=1)
    assert single.nodes[0].data_dir == single.data_dir, "a single broker keeps its old layout"


def test_controller_ports_follow_the_client_ports_when_the_ranges_overlap(
    tmp_path: Path,
) -> None:
    kafka = cluster(tmp_path, port=9092, controller=9093)
    assert [n.port for n in kafka.nodes] == [9092, 9093, 9094]
    assert [n.controller_port for n in kafka.nodes] == [9095, 9096, 9097]
    assert cluster(tmp_path, brokers=1, port=9092, controller=9093).nodes[0].controller_port == 9093


def test_every_node_is_a_voter_and_internal_topics_have_three_replicas(tmp_path: Path) -> None:
    kafka = cluster(tmp_path)
    node = kafka.node(2)
    config = properties(local_kafka._server_properties(kafka, node))
    assert config["node.id"] == "2"
    assert config["process.roles"] == "broker,controller"
    assert config["controller.quorum.voters"] == (
        "1@127.0.0.1:21010,2@127.0.0.1:21011,3@127.0.0.1:21012"
    )
    assert config["listeners"] == "PLAINTEXT://127.0.0.1:21001,CONTROLLER://127.0.0.1:21011"
    assert config["log.dirs"] == str(tmp_path / "kafka" / "node-2" / "logs")
    for name in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "share.coordinator.state.topic.replication.factor",
    ):
        assert config[name] == "3", name
    for name in (
        "min.insync.replicas",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.min.isr",
    ):
        assert config[name] == "2", name
    alone = properties(local_kafka._server_properties(cluster(tmp_path, 1), kafka.nodes[0]))
    assert alone["offsets.topic.replication.factor"] == "1"
    assert alone["min.insync.replicas"] == "1"


def test_a_data_dir_holds_one_layout(tmp_path: Path) -> None:
    kafka = cluster(tmp_path)
    cluster_id = local_kafka._claim_data_dir(kafka)
    assert local_kafka._claim_data_dir(kafka) == cluster_id, "every node joins the same cluster"
    assert local_kafka.recorded_brokers(kafka.data_dir) == 3
    with pytest.raises(LocalKafkaError, match="holds a 3-node cluster"):
        local_kafka._claim_data_dir(cluster(tmp_path, brokers=1))
    with pytest.raises(LocalKafkaError, match="no node 4"):
        kafka.node(4)

    single = tmp_path / "single"
    (single / "kafka" / "logs").mkdir(parents=True)
    (single / "kafka" / "logs" / "meta.properties").write_text("node.id=1\n")
    with pytest.raises(LocalKafkaError, match="holds a single broker"):
        local_kafka._claim_data_dir(cluster(single))


def test_settings_choose_the_node_count_and_heap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OKR_LOCAL_KAFKA_HEAP", raising=False)
    settings = Settings(local_kafka_data_dir=tmp_path / "kafka")
    assert LocalKafka.from_settings(settings).heap == "1g"
    three = LocalKafka.from_settings(settings, brokers=3)
    assert (three.brokers, three.heap) == (3, "384m")
    local_kafka._claim_data_dir(three)
    assert LocalKafka.from_settings(settings).brokers == 3, "as many as the data dir holds"
    sized = Settings(local_kafka_data_dir=tmp_path / "kafka", local_kafka_heap="512m")
    assert LocalKafka.from_settings(sized).heap == "512m"


def test_topics_carry_their_min_insync_replicas() -> None:
    replicated = Settings(topic_replication_factor=3, topic_min_insync_replicas=2)
    for spec in topic_specs(replicated):
        assert spec.replication_factor == 3
        assert spec.topic_configs["min.insync.replicas"] == "2"
    assert {spec.topic_configs["min.insync.replicas"] for spec in topic_specs(Settings())} == {"1"}


def test_min_insync_replicas_above_the_replication_factor_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OKR_TOPIC_REPLICATION_FACTOR", "2")
    monkeypatch.setenv("OKR_TOPIC_MIN_INSYNC_REPLICAS", "3")
    with pytest.raises(SettingsError, match="OKR_TOPIC_MIN_INSYNC_REPLICAS"):
        load_settings()
