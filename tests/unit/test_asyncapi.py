"""The AsyncAPI document: in sync with docs/asyncapi.json, every topic there with its contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from events import topics
from events.okr import PAYLOADS
from services.cli.main import app as cli
from services.http.app import create_app
from services.kafka.asyncapi import asyncapi_document, asyncapi_json
from services.settings import Settings
from tests.auth_support import INLINE_API_KEYS, auth_headers

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"
REGENERATE = "regenerate it: okr asyncapi --output docs/asyncapi.json"

CONTRACTS = {
    (topics.COMMANDS, "receive"): "Command",
    (topics.COMMAND_RESULTS, "send"): "CommandResult",
    (topics.EVENTS, "send"): "OkrEventEnvelope",
    (topics.EVENTS, "receive"): "OkrEventEnvelope",
    (topics.KPI_EVENTS, "receive"): "KpiEvent",
    (topics.DEAD_LETTERS, "send"): "DeadLetter",
    (topics.AUDIT_CHECKPOINTS, "send"): "SignedCheckpoint",
}
"""(logical topic, what the service does on it) -> the model of its messages."""


def resolve(document: dict[str, Any], reference: dict[str, str]) -> Any:
    node: Any = document
    for part in reference["$ref"].removeprefix("#/").split("/"):
        node = node[part.replace("%20", " ")]
    return node


def payload_models(document: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(address, action) -> the schema name of the payload of each operation's messages."""
    found = {}
    for operation in document["operations"].values():
        channel = resolve(document, operation["channel"])
        for message_ref in operation["messages"]:
            message = resolve(document, resolve(document, message_ref))
            name = message["payload"]["$ref"].rsplit("/", 1)[-1]
            found[(channel["address"], operation["action"])] = name
    return found


def test_the_committed_document_is_the_generated_one() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == asyncapi_json(), REGENERATE


def test_every_topic_is_documented_with_its_contract() -> None:
    document = asyncapi_document()
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == set(topics.ALL_TOPICS)
    assert payload_models(document) == CONTRACTS
    schemas = document["components"]["schemas"]
    assert set(CONTRACTS.values()) <= set(schemas)


def test_every_event_payload_model_is_there_by_its_type_name() -> None:
    schemas = asyncapi_document()["components"]["schemas"]
    for event_type, model in PAYLOADS.items():
        assert schemas[event_type]["title"] == model.__name__
        assert set(schemas[event_type].get("properties", {})) == set(model.model_fields)


def test_a_deployment_document_names_its_own_topics_and_brokers() -> None:
    document = asyncapi_document("prod.", "kafka-1:9092,kafka-2:9092")
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {f"prod.{topic}" for topic in topics.ALL_TOPICS}
    hosts = {server["host"] for server in document["servers"].values()}
    assert hosts == {"kafka-1:9092", "kafka-2:9092"}


def test_the_cli_writes_the_contract(tmp_path: Path) -> None:
    output = tmp_path / "asyncapi.json"
    result = CliRunner().invoke(cli, ["asyncapi", "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert output.read_text(encoding="utf-8") == asyncapi_json()
    printed = CliRunner().invoke(cli, ["asyncapi"])
    assert printed.exit_code == 0, printed.output
    assert printed.output == asyncapi_json()


async def test_http_serves_the_deployment_document(tmp_path: Path) -> None:
    settings = Settings(
        topic_prefix="staging.",
        event_store_url=f"sqlite:///{tmp_path / 'events.sqlite'}",
        read_store_url=f"sqlite:///{tmp_path / 'read.sqlite'}",
        api_keys=INLINE_API_KEYS,
        api_keys_file=tmp_path / "api-keys.json",
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://okr", headers=auth_headers("reader")
    ) as client:
        response = await client.get("/asyncapi.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == asyncapi_document("staging.", settings.kafka_bootstrap_servers)
