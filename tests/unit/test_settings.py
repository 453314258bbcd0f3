"""Settings: one place, `OKR_` prefix, and a start-up failure that names the bad variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from services.settings import Settings, SettingsError, load_settings


def test_defaults_run_on_sqlite_and_local_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OKR_"):
            monkeypatch.delenv(name)
    settings = load_settings()
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.event_store_url.startswith("sqlite:///")
    assert settings.read_store_url.startswith("sqlite:///")
    assert settings.kafka_client_options() == {"bootstrap_servers": ["127.0.0.1:9092"]}


def test_every_invalid_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OKR_HTTP_PORT", "eighty")
    monkeypatch.setenv("OKR_EVENT_STORE_URL", "mysql://db/okr")
    monkeypatch.setenv("OKR_KAFKA_BOOTSTRAP_SERVERS", "localhost")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    for name in ("OKR_HTTP_PORT", "OKR_EVENT_STORE_URL", "OKR_KAFKA_BOOTSTRAP_SERVERS"):
        assert name in message


def test_the_cli_refuses_to_start_with_an_invalid_value() -> None:
    env = {**os.environ, "OKR_TOPIC_PARTITIONS": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "OKR_TOPIC_PARTITIONS" in result.stderr


def test_sasl_over_tls_reaches_the_kafka_client_options() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="okr",
        kafka_sasl_password="s3cret",
    )
    options = settings.kafka_client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "okr"
    assert options["sasl_plain_password"] == "s3cret"
    assert options["ssl_context"] is not None


def test_topic_prefix_applies_to_every_topic() -> None:
    assert Settings(topic_prefix="staging.").topic("okr.events") == "staging.okr.events"


def test_the_readme_documents_every_setting() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in Settings.model_fields:
        if name == "kafka_home":
            assert "`KAFKA_HOME`" in readme
            continue
        assert f"`OKR_{name.upper()}`" in readme, f"README lacks OKR_{name.upper()}"


def test_a_cluster_s_brokers_reach_every_client_as_a_list() -> None:
    """FastStream takes a string as ONE address: "a:1,b:2" must reach it (and aiokafka) split."""
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:9092, 127.0.0.1:9094,127.0.0.1:9096")
    assert settings.kafka_client_options()["bootstrap_servers"] == [
        "127.0.0.1:9092",
        "127.0.0.1:9094",
        "127.0.0.1:9096",
    ]
    assert settings.kafka_bootstrap_list() == settings.kafka_client_options()["bootstrap_servers"]
