"""docker-compose.yml cannot run here (no Docker engine), so it is checked against the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from services.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


KAFKA_NODES = ("kafka-1", "kafka-2", "kafka-3")


def test_services_are_a_kafka_cluster_postgres_and_the_service_built_from_the_repo() -> None:
    services = compose()["services"]
    assert set(services) == {*KAFKA_NODES, "postgres", "okr", "scorer"}
    for node in KAFKA_NODES:
        assert services[node]["image"].startswith("apache/kafka:4.")
    assert services["okr"]["build"] == "."
    assert (ROOT / "Dockerfile").exists()


def test_the_fleet_runs_two_of_each_process_on_a_replicated_cluster() -> None:
    services = compose()["services"]
    assert services["okr"]["deploy"]["replicas"] == 2
    assert services["scorer"]["deploy"]["replicas"] == 2
    settings = Settings(
        **{k.removeprefix(ENV_PREFIX).lower(): v for k, v in services["okr"]["environment"].items()}
    )
    assert settings.topic_replication_factor == 3
    assert settings.topic_min_insync_replicas == 2
    node_ids = {services[node]["environment"]["KAFKA_NODE_ID"] for node in KAFKA_NODES}
    assert node_ids == {"1", "2", "3"}
    voters = services["kafka-1"]["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert voters == "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"


def test_every_service_variable_is_a_setting_and_its_value_is_valid() -> None:
    environment: dict[str, str] = compose()["services"]["okr"]["environment"]
    fields = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    unknown = set(environment) - fields
    assert not unknown, f"variables the service does not read: {unknown}"
    overrides = {
        name.removeprefix(ENV_PREFIX).lower(): value for name, value in environment.items()
    }
    settings = Settings(**overrides)
    assert settings.event_store_url.startswith("postgresql://")


def test_addresses_point_at_the_compose_services_and_their_ports() -> None:
    services = compose()["services"]
    environment = services["okr"]["environment"]
    servers = environment["OKR_KAFKA_BOOTSTRAP_SERVERS"].split(",")
    assert [server.split(":")[0] for server in servers] == list(KAFKA_NODES)
    for server in servers:
        host, port = server.split(":")
        advertised = services[host]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        assert f"PLAINTEXT://{host}:{port}" in advertised
    database = urlsplit(environment["OKR_EVENT_STORE_URL"])
    assert database.hostname == "postgres" and database.port == 5432
    postgres_env = services["postgres"]["environment"]
    assert database.username == postgres_env["POSTGRES_USER"]
    assert database.password == postgres_env["POSTGRES_PASSWORD"]
    assert database.path == f"/{postgres_env['POSTGRES_DB']}"
    assert "8000-8009:8000" in services["okr"]["ports"]  # one host port per instance


def test_the_scorer_runs_in_its_own_processes_on_the_same_stores_and_cluster() -> None:
    services = compose()["services"]
    okr, scorer = services["okr"], services["scorer"]
    assert okr["command"] == ["okr", "serve"] and scorer["command"] == ["okr", "scorer"]
    assert scorer["build"] == "."
    serve_settings = Settings(
        **{k.removeprefix(ENV_PREFIX).lower(): v for k, v in okr["environment"].items()}
    )
    scorer_settings = Settings(
        **{k.removeprefix(ENV_PREFIX).lower(): v for k, v in scorer["environment"].items()}
    )
    assert not serve_settings.serve_runs_scorer  # not scored twice in one deployment's serve
    for name in ("kafka_bootstrap_servers", "event_store_url", "topic_prefix", "topic_partitions"):
        assert getattr(scorer_settings, name) == getattr(serve_settings, name), name
