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


def test_services_are_kafka_postgres_and_the_service_built_from_the_repo() -> None:
    services = compose()["services"]
    assert set(services) == {"kafka", "postgres", "okr", "scorer"}
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["okr"]["build"] == "."
    assert (ROOT / "Dockerfile").exists()


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
    host, port = environment["OKR_KAFKA_BOOTSTRAP_SERVERS"].split(":")
    assert host == "kafka"
    assert (
        f"PLAINTEXT://kafka:{port}"
        in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    )
    database = urlsplit(environment["OKR_EVENT_STORE_URL"])
    assert database.hostname == "postgres" and database.port == 5432
    postgres_env = services["postgres"]["environment"]
    assert database.username == postgres_env["POSTGRES_USER"]
    assert database.password == postgres_env["POSTGRES_PASSWORD"]
    assert database.path == f"/{postgres_env['POSTGRES_DB']}"
    assert f"{environment['OKR_HTTP_PORT']}:8000" in services["okr"]["ports"]


def test_the_scorer_runs_once_in_its_own_process_on_the_same_stores_and_broker() -> None:
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
